package server

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// sqlExec runs statements on the database at url.
func sqlExec(t *testing.T, url, sql string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatal(err)
	}
}

// webhook records the job notices it receives and checks their signature.
type webhook struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	got    []Job
	fail   atomic.Int32 // answer 500 to this many first
	hs     *httptest.Server
}

func newWebhook(t *testing.T, secret []byte) *webhook {
	wh := &webhook{t: t, secret: secret}
	wh.hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, wh.secret)
		mac.Write(b)
		if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); r.Header.Get("Outpost-Signature") != want {
			t.Errorf("webhook signature %q, want %q", r.Header.Get("Outpost-Signature"), want)
		}
		if wh.fail.Add(-1) >= 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var j Job
		if err := json.Unmarshal(b, &j); err != nil || r.Header.Get("Outpost-Job") != j.ID {
			t.Errorf("webhook body %s: %v", b, err)
		}
		wh.mu.Lock()
		wh.got = append(wh.got, j)
		wh.mu.Unlock()
	}))
	t.Cleanup(wh.hs.Close)
	return wh
}

func (wh *webhook) notices() []Job {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	return append([]Job(nil), wh.got...)
}

// waitJob follows the job's event stream until its done event, and says
// how many progress events came before.
func waitJob(t *testing.T, hs *httptest.Server, id string) (Job, int) {
	t.Helper()
	return waitJobAt(t, hs.URL, id)
}

// waitJobAt is waitJob on the server at base.
func waitJobAt(t *testing.T, base, id string) (Job, int) {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/jobs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events: %s %s", resp.Status, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	event := ""
	progress := 0
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			var j Job
			if err := json.Unmarshal([]byte(d), &j); err != nil {
				t.Fatal(err)
			}
			if event == "done" {
				return j, progress
			}
			progress++
		}
	}
	t.Fatalf("event stream of %s ended without done: %v", id, sc.Err())
	return Job{}, 0
}

func createJob(t *testing.T, hs *httptest.Server, spec JobSpec) int {
	t.Helper()
	b, _ := json.Marshal(spec)
	resp, err := http.Post(hs.URL+"/api/v1/jobs", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Logf("create job: %s %s", resp.Status, body)
	}
	return resp.StatusCode
}

// Data-set jobs on each engine: a directory source over two nodes; the
// server restarted mid-job resumes it; every item gets one result, the
// webhook notice (failing twice first) arrives once, signed, and the event
// stream ends with done; a second job over the grown source runs only the
// new and the changed items. The same for a PostgreSQL table paged by key;
// a JSONL file at a URL; a source that cannot be read fails its job.
func TestJobs(t *testing.T) { forEngines(t, testJobs) }

func testJobs(t *testing.T, e *engine) {
	secret := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secret, []byte("hook-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wh := newWebhook(t, []byte("hook-secret"))
	wh.fail.Store(2)
	src := t.TempDir()
	for i := range 120 {
		_ = os.MkdirAll(filepath.Join(src, fmt.Sprint("d", i%3)), 0o755)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprint("d", i%3), fmt.Sprint("f", i)), []byte(fmt.Sprint(`{"n":`, i, `}`)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts := Options{WebhookSecretFile: secret, Lease: time.Minute}
	s := e.open(opts)
	hs := httptest.NewServer(s.Handler())
	if code := createJob(t, hs, JobSpec{ID: "dir1", Task: "t", Nodes: []string{"a", "b"}, Source: "dir:" + src, Webhook: wh.hs.URL}); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	if code := createJob(t, hs, JobSpec{ID: "dir1", Task: "t", Nodes: []string{"a"}, Source: "dir:" + src}); code != http.StatusConflict {
		t.Fatalf("same id again: %d", code)
	}
	if code := createJob(t, hs, JobSpec{ID: "bad", Task: "t", Nodes: []string{"a"}, Source: "ftp://x"}); code != http.StatusCreated {
		t.Fatalf("a source is checked when read, not at create: %d", code)
	}
	// The server restarts before any node polls: the job resumes from its
	// stored record.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if j, _ := s.st.getJob(t.Context(), "dir1"); j.Listed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job never read its source")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hs.Close()
	_ = s.Close()
	_, hs = e.serve(opts)
	var reported atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range []string{"a", "b"} {
		wg.Go(func() {
			simNode(t, []*httptest.Server{hs}, n, 8, func() bool {
				select {
				case <-stop:
					return true
				default:
					return false
				}
			}, func(remote.WireCall) {}, func(n int) { reported.Add(int64(n)) })
		})
	}
	defer func() { close(stop); wg.Wait() }()
	j, progress := waitJob(t, hs, "dir1")
	if j.Items != 120 || j.Done != 120 || j.Failed != 0 || progress == 0 {
		t.Fatalf("job %+v after %d progress events", j, progress)
	}
	deadline = time.Now().Add(60 * time.Second)
	for len(wh.notices()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no notice")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := wh.notices(); len(got) != 1 || got[0].ID != "dir1" || got[0].Done != 120 || got[0].Notice != "delivered" {
		t.Fatalf("notices %+v", got)
	}
	if reported.Load() != 120 {
		t.Fatalf("%d results for 120 items", reported.Load())
	}
	// The source grows by 10 files and one file changes: a second job runs 11.
	for i := 120; i < 130; i++ {
		_ = os.WriteFile(filepath.Join(src, fmt.Sprint("new", i)), []byte(fmt.Sprint(`{"n":`, i, `}`)), 0o644)
	}
	_ = os.WriteFile(filepath.Join(src, "d0", "f0"), []byte(`{"n":"changed"}`), 0o644)
	if code := createJob(t, hs, JobSpec{ID: "dir2", Task: "t", Nodes: []string{"a", "b"}, Source: "dir:" + src}); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	j, _ = waitJob(t, hs, "dir2")
	if j.Items != 130 || j.Cached != 119 || j.Done != 130 || reported.Load() != 131 {
		t.Fatalf("second job %+v, %d results in all", j, reported.Load())
	}
	// A JSONL file at a URL: each non-empty line is an item, keyed by its
	// line number, so equal lines are still two items.
	lines := "{\"x\":1}\n\n{\"x\":2}\n{\"x\":1}\n"
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, lines) }))
	defer files.Close()
	if code := createJob(t, hs, JobSpec{ID: "url", Task: "t", Nodes: []string{"a"}, Source: files.URL}); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	if j, _ := waitJob(t, hs, "url"); j.Items != 3 || j.Done != 3 {
		t.Fatalf("jsonl job %+v", j)
	}
	// A PostgreSQL table paged by key (three pages); a second job after rows
	// were added and one changed runs only those.
	tableURL := pgtest.Shared(t).NewDatabase()
	sqlExec(t, tableURL, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 1100) g`)
	urlFile := filepath.Join(t.TempDir(), "items.url")
	if err := os.WriteFile(urlFile, []byte(tableURL), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := createJob(t, hs, JobSpec{ID: "table1", Task: "t", Nodes: []string{"a", "b"}, Source: "pgtable:" + urlFile + ":items:id"}); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	if j, _ := waitJob(t, hs, "table1"); j.State != "done" || j.Items != 1100 || j.Done != 1100 {
		t.Fatalf("table job %+v", j)
	}
	sqlExec(t, tableURL, `INSERT INTO items SELECT g, 'v' || g FROM generate_series(1101, 1105) g; UPDATE items SET v = 'changed' WHERE id = 7`)
	before := reported.Load()
	if code := createJob(t, hs, JobSpec{ID: "table2", Task: "t", Nodes: []string{"a", "b"}, Source: "pgtable:" + urlFile + ":items:id"}); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	if j, _ := waitJob(t, hs, "table2"); j.Items != 1105 || j.Cached != 1099 || reported.Load()-before != 6 {
		t.Fatalf("second table job %+v, %d new results", j, reported.Load()-before)
	}
	if j, _ := waitJob(t, hs, "bad"); j.State != "failed" || !strings.Contains(j.Error, `source "ftp://x": want dir:PATH`) {
		t.Errorf("job with a bad source %+v", j)
	}
}

// writeLines writes n JSONL items {"i":N} to path.
func writeLines(t testing.TB, path string, n int) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "{\"i\":%d}\n", i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitListed waits until the job has read its whole source.
func (s *Server) waitListed(t *testing.T, id string) (Job, error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		j, err := s.st.getJob(t.Context(), id)
		if err == nil && j.Listed {
			return j, nil
		}
		if time.Now().After(deadline) {
			return j, fmt.Errorf("job %s never read its source: %+v %v", id, j, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
