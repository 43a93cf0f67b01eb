package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// Cloud runs on the control plane's pool: a missing module is named and
// uploaded (checked against its digest), a run in progress answers 202, a
// submission while every worker is busy is refused without being recorded
// as started (so it is not taken for an interrupted run later), and a done
// run is answered again from its record.
func TestCloudRuns(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, RunWorkers: 1})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); _ = s.Close() })
	module, err := os.ReadFile(wasmtest.WAT(t, "../../../cmd/outpost/testdata/spin.wat", ""))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(module)
	digest := remote.DigestPrefix + hex.EncodeToString(sum[:])

	do := func(method, path string, body []byte) (int, remote.RunResponse, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+"/edge/v1/nodes/n1/"+path, bytes.NewReader(body))
		req.Header.Set(remote.HeaderProtocol, remote.Protocol)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var rr remote.RunResponse
		_ = json.Unmarshal(b, &rr)
		return resp.StatusCode, rr, resp.Header
	}
	submit := func(run, input string, waitMS int64) (int, remote.RunResponse, http.Header) {
		t.Helper()
		b, _ := json.Marshal(remote.RunRequest{Task: "spin", Digest: digest, Input: []byte(input), Effect: "at_most_once", WaitMS: waitMS})
		return do(http.MethodPost, "runs/"+run, b)
	}

	if code, rr, _ := submit("a.1", "2 first", 0); code != http.StatusNotFound || rr.Missing != digest {
		t.Fatalf("submit without the module: %d %+v, want 404 naming %s", code, rr, digest)
	}
	if code, _, _ := do(http.MethodPut, "objects/"+digest, []byte("not the module")); code != http.StatusBadRequest {
		t.Fatalf("upload of other bytes: %d, want 400", code)
	}
	if code, _, _ := do(http.MethodPut, "objects/"+digest, module); code != http.StatusCreated {
		t.Fatalf("upload: %d, want 201", code)
	}
	if code, rr, _ := submit("a.1", "2 first", 0); code != http.StatusAccepted || rr.State != "running" {
		t.Fatalf("submit: %d %+v, want 202 running", code, rr)
	}
	code, _, h := submit("b.1", "0 second", 0)
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") != "1" {
		t.Fatalf("submit while the worker is busy: %d, want 503 with Retry-After", code)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "runs", "*.started")); len(m) != 1 {
		t.Fatalf("started records %v, want only the run that began", m)
	}
	for _, tc := range []struct{ run, input string }{{"a.1", "2 first"}, {"b.1", "0 second"}, {"a.1", "2 first"}} {
		code, rr, _ := submit(tc.run, tc.input, 20_000)
		if code != http.StatusOK || rr.State != "done" || rr.Status != "ok" || string(rr.Output) != tc.input {
			t.Fatalf("run %s: %d %+v, want ok %q", tc.run, code, rr, tc.input)
		}
	}
	// The pool's advert on a poll answer.
	b, _ := json.Marshal(remote.PollRequest{BootID: "b1"})
	if _, _, h := do(http.MethodPost, "poll", b); h.Get(remote.HeaderRuns) != "0/1" {
		t.Errorf("poll answer's %s = %q, want 0/1", remote.HeaderRuns, h.Get(remote.HeaderRuns))
	}
}

// Without --run-workers the control plane runs nothing itself: 503, and
// every poll answer says 0/0.
func TestCloudRunsOff(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); _ = s.Close() })
	b, _ := json.Marshal(remote.RunRequest{Task: "t", Digest: remote.DigestPrefix + hex.EncodeToString(make([]byte, 32))})
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/edge/v1/nodes/n1/runs/x.1", bytes.NewReader(b))
	req.Header.Set(remote.HeaderProtocol, remote.Protocol)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("submit: %d, want 503", resp.StatusCode)
	}
}

// No state passes between runs, of one node or of two: every run gets a
// fresh instance (here a reactor counting its calls in a global).
func TestCloudRunsFresh(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), RunWorkers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	f, err := os.Open(wasmtest.WAT(t, "testdata/count.wat", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := s.PutObject(f)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct{ node, want string }{{"n1", "1"}, {"n1", "1"}, {"n2", "1"}, {"n1", "1"}} {
		ru, err := s.runs.submit(tc.node, "r."+strconv.Itoa(i), &remote.RunRequest{Task: "count", Digest: info.Digest, Effect: "idempotent"})
		if err != nil {
			t.Fatal(err)
		}
		<-ru.done
		if ru.resp.Status != "ok" || string(ru.resp.Output) != tc.want {
			t.Errorf("call %d of %s: %+v, want %s", i, tc.node, ru.resp, tc.want)
		}
	}
}

// The runs' instances share one memory budget (serve --run-memory): a run
// whose instance would pass it ends memory, as on a node.
func TestCloudRunsMemoryBudget(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), RunWorkers: 1, RunMemory: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	f, err := os.Open(wasmtest.WAT(t, "testdata/count.wat", "")) // one 64 KiB page
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := s.PutObject(f)
	if err != nil {
		t.Fatal(err)
	}
	ru, err := s.runs.submit("n1", "r.1", &remote.RunRequest{Task: "count", Digest: info.Digest})
	if err != nil {
		t.Fatal(err)
	}
	<-ru.done
	if ru.resp.Status != "memory" || !strings.Contains(ru.resp.Error, "memory budget") {
		t.Errorf("run over the budget: %+v, want memory", ru.resp)
	}
}
