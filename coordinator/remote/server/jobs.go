package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/xid"

	"github.com/outpost-edge/outpost/internal/secretfile"
)

// Data-set jobs (docs/control-plane.md, "Data-set jobs"): a job runs one
// task over every item of a data source. The server reads the source in
// pages, gives each item an id (its key in the source and a hash of its
// content), and derives the item's call id from the task, digest and item
// id. Calls are the caches: an item whose call is pending or leased is in
// process, one whose call has a result is in the results cache, and the
// enqueue of an existing call id does nothing, so a job (or a second job
// over a source that grew) only runs new or changed items. Jobs are stored
// in the state store, so a restarted server (or another replica) resumes
// them: it reads the source again and enqueues what is missing. When every
// item has a result the job is done and a notice goes once to each
// subscriber: a signed webhook POST (retried with backoff) and the job's
// event stream (Server-Sent Events).

// JobSpec is what an operator asks for (POST /api/v1/jobs).
type JobSpec struct {
	ID     string   `json:"id,omitempty"` // default: a new one
	Task   string   `json:"task"`
	Digest string   `json:"digest,omitempty"`
	Nodes  []string `json:"nodes"` // items are spread over these by their id
	Effect string   `json:"effect,omitempty"`
	// Source: "dir:PATH" (each regular file under PATH on the server is an
	// item, its key the relative path), "jsonl:PATH" or a JSONL file at an
	// http(s):// URL (each non-empty line is an item, its key the line
	// number), or "pgtable:URLFILE:TABLE:KEY" (each row of a PostgreSQL
	// table, paged by its key column; readTable).
	Source string `json:"source"`
	// Webhook, when set, receives the completion notice: a POST of the
	// job's status, signed with Options.WebhookSecretFile's secret.
	Webhook string `json:"webhook,omitempty"`
}

// Job is a job and its progress.
type Job struct {
	JobSpec
	State    string    `json:"state"` // running, done, failed (Error says why)
	Error    string    `json:"error,omitempty"`
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	Items    int       `json:"items"`  // read from the source so far
	Cached   int       `json:"cached"` // had a call already when enqueued (in process or done)
	Done     int       `json:"done"`   // items with a result
	Failed   int       `json:"failed"` // of those, results other than ok
	Listed   bool      `json:"listed"` // the whole source has been read
	// Notice is the webhook's delivery state: "" (none due), "pending",
	// "sending" (claimed by a replica until NoticeClaim), "delivered", or
	// "failed: reason" after the last retry.
	Notice      string    `json:"notice,omitempty"`
	NoticeClaim time.Time `json:"notice_claim,omitzero"`
	// Rate is results per second since the job started in this process;
	// ETA the time left at that rate (GET /api/v1/jobs/{id} only).
	Rate float64       `json:"rate,omitempty"`
	ETA  time.Duration `json:"eta_ns,omitempty"`
}

// jobPage is how many items a job reads, enqueues and checks at a time.
const jobPage = 500

// item is one item of a source.
type item struct {
	key  string
	data []byte
}

// errSource marks a source that cannot be read: the job fails.
var errSource = errors.New("source")

// errPage marks an error of the page callback inside a directory walk.
var errPage = errors.New("enqueue items")

// readSource calls page with the source's items, jobPage at a time; an
// error of the source itself wraps errSource.
func readSource(ctx context.Context, src string, page func([]item) error) error {
	var items []item
	add := func(it item) error {
		items = append(items, it)
		if len(items) < jobPage {
			return nil
		}
		err := page(items)
		items = nil
		if err != nil {
			return fmt.Errorf("%w: %w", errPage, err)
		}
		return nil
	}
	switch {
	case strings.HasPrefix(src, "dir:"):
		root := strings.TrimPrefix(src, "dir:")
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			return add(item{key: filepath.ToSlash(rel), data: b})
		})
		if err != nil && !errors.Is(err, errPage) {
			return fmt.Errorf("%w %s: %w", errSource, src, err)
		}
		if err != nil {
			return err
		}
	case strings.HasPrefix(src, "pgtable:"):
		if err := readTable(ctx, strings.TrimPrefix(src, "pgtable:"), add); err != nil {
			if errors.Is(err, errPage) {
				return err
			}
			return fmt.Errorf("%w %s: %w", errSource, src, err)
		}
	case strings.HasPrefix(src, "jsonl:"), strings.HasPrefix(src, "http://"), strings.HasPrefix(src, "https://"):
		rc, err := openJSONL(ctx, src)
		if err != nil {
			return fmt.Errorf("%w %s: %w", errSource, src, err)
		}
		defer rc.Close()
		var addErr error
		if err := ReadJSONLines(rc, func(line int, b []byte) error {
			addErr = add(item{key: fmt.Sprint(line), data: b})
			return addErr
		}); err != nil {
			if addErr != nil {
				return addErr
			}
			return fmt.Errorf("%w %s%w", errSource, src, err)
		}
	default:
		return fmt.Errorf("%w %q: want dir:PATH, jsonl:PATH, pgtable:URLFILE:TABLE:KEY or an http(s):// URL of a JSONL file", errSource, src)
	}
	if len(items) > 0 {
		return page(items)
	}
	return nil
}

// readTable reads a PostgreSQL table paged by its key column: spec is
// URLFILE:TABLE:KEY, URLFILE a secret file on the server holding the
// database's postgres:// URL. Each row is an item, its key the key
// column's value as text, its data the row as JSON; pages of jobPage rows
// are read in key order after the last key seen (no offset scans, and rows
// added behind the cursor while it reads are picked up).
func readTable(ctx context.Context, spec string, add func(item) error) error {
	parts := strings.Split(spec, ":")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return errors.New("want pgtable:URLFILE:TABLE:KEY")
	}
	url, err := secretfile.ReadToken(parts[0])
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, string(url))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	table, key := pgx.Identifier(strings.Split(parts[1], ".")).Sanitize(), pgx.Identifier{parts[2]}.Sanitize()
	first := true
	var last any
	for {
		where, args := "", []any{}
		if !first {
			where, args = fmt.Sprintf(`WHERE t.%s > $1`, key), []any{last}
		}
		q := fmt.Sprintf(`SELECT t.%[2]s, t.%[2]s::text, row_to_json(t)::text FROM %[1]s t %[3]s ORDER BY t.%[2]s LIMIT %[4]d`, table, key, where, jobPage)
		rows, err := conn.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		n := 0
		var page []item
		for rows.Next() {
			var k string
			var data []byte
			if err := rows.Scan(&last, &k, &data); err != nil {
				rows.Close()
				return err
			}
			page = append(page, item{key: k, data: data})
			n++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, it := range page {
			if err := add(it); err != nil {
				return err
			}
		}
		if n < jobPage {
			return nil
		}
		first = false
	}
}

func openJSONL(ctx context.Context, src string) (io.ReadCloser, error) {
	if p, ok := strings.CutPrefix(src, "jsonl:"); ok {
		return os.Open(p)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", src, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET: %s", resp.Status)
	}
	return resp.Body, nil
}

// itemCallID is the call id of an item: the same task, digest, key and
// content give the same id, so an item is run once; a changed item is new.
func itemCallID(spec *JobSpec, it item) string {
	h := sha256.New()
	h.Write([]byte(spec.Task + "\x00" + spec.Digest + "\x00" + it.key + "\x00"))
	h.Write(it.data)
	return "j-" + hex.EncodeToString(h.Sum(nil))[:32]
}

// itemNode picks the node of an item among spec.Nodes, stably.
func itemNode(spec *JobSpec, callID string) string {
	b, _ := hex.DecodeString(callID[2:10])
	return spec.Nodes[int(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))%len(spec.Nodes)]
}

// jobs runs the jobs of a Server.
type jobs struct {
	s      *Server
	secret []byte // webhook signing secret; nil: unsigned
	hc     *http.Client

	ctx  context.Context // ends at stop
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	running map[string]bool
	first   map[string]progress // the first count this process made, for the rate
}

type progress struct {
	at   time.Time
	done int
}

func newJobs(s *Server, secret []byte) *jobs {
	ctx, stop := context.WithCancel(context.Background())
	return &jobs{s: s, secret: secret, hc: &http.Client{Timeout: 30 * time.Second}, ctx: ctx, stop: stop,
		running: map[string]bool{}, first: map[string]progress{}}
}

// createJob checks and stores a job, and starts it.
func (s *Server) createJob(ctx context.Context, spec JobSpec) (Job, error) {
	switch {
	case spec.Task == "" || len(spec.Nodes) == 0 || spec.Source == "":
		return Job{}, errors.New("task, nodes and source are required")
	case spec.Effect != "" && spec.Effect != "idempotent" && spec.Effect != "at_most_once":
		return Job{}, errors.New("effect must be idempotent or at_most_once")
	case spec.Digest != "" && !s.objs.has(spec.Digest):
		return Job{}, fmt.Errorf("digest %q: no such object", spec.Digest)
	case spec.Webhook != "" && !strings.HasPrefix(spec.Webhook, "http://") && !strings.HasPrefix(spec.Webhook, "https://"):
		return Job{}, errors.New("webhook must be an http(s):// URL")
	}
	if spec.ID == "" {
		spec.ID = xid.New().String()
	}
	if strings.ContainsAny(spec.ID, "/\x00") || len(spec.ID) > 128 {
		return Job{}, errors.New("id must be 1 to 128 characters without '/'")
	}
	j := Job{JobSpec: spec, State: "running", Created: time.Now()}
	created, err := s.st.createJob(ctx, j)
	if err != nil {
		return Job{}, err
	}
	if !created {
		return Job{}, fmt.Errorf("job %s: %w", spec.ID, errJobExists)
	}
	s.jobs.start(j.ID)
	return j, nil
}

var (
	errJobExists = errors.New("a job with this id exists")
	errNoJob     = errors.New("no such job")
)

// jobScan is how often a server looks for jobs it does not run: jobs
// created on another replica, or left by one that died.
const jobScan = 10 * time.Second

// loop runs every job that is not finished, now and every jobScan, until
// stop. Every replica drives every such job: enqueues and counts are
// idempotent, and the notice is claimed by one.
func (js *jobs) loop() {
	defer js.wg.Done()
	for {
		all, err := js.s.st.listJobs(js.ctx)
		if err != nil && js.ctx.Err() == nil {
			js.s.log.Warn("jobs: list", "err", err)
		}
		for _, j := range all {
			if j.State == "running" || j.Notice == "pending" || j.Notice == "sending" {
				js.start(j.ID)
			}
		}
		select {
		case <-js.ctx.Done():
			return
		case <-time.After(jobScan):
		}
	}
}

func (js *jobs) start(id string) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.running[id] || js.ctx.Err() != nil {
		return
	}
	js.running[id] = true
	js.wg.Add(1)
	go func() {
		defer js.wg.Done()
		js.run(js.ctx, id)
		js.mu.Lock()
		delete(js.running, id)
		js.mu.Unlock()
	}()
}

// close stops the runners and waits for them.
func (js *jobs) close() {
	js.stop()
	js.wg.Wait()
}

// run drives one job: enqueue the source's items (again after a restart:
// nothing runs twice), then count results until every item has one, then
// deliver the notice.
func (js *jobs) run(ctx context.Context, id string) {
	log := js.s.log.With("job", id)
	for backoff := time.Second; ctx.Err() == nil; backoff = min(2*backoff, time.Minute) {
		err := js.runOnce(ctx, id)
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Warn("job: retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
}

func (js *jobs) runOnce(ctx context.Context, id string) error {
	j, err := js.s.st.getJob(ctx, id)
	if err != nil {
		return err
	}
	if j.State != "running" {
		return js.notify(ctx, j)
	}
	var ids []string
	cached, items := 0, 0
	err = readSource(ctx, j.Source, func(page []item) error {
		cs := make([]Call, len(page))
		for i, it := range page {
			cid := itemCallID(&j.JobSpec, it)
			cs[i] = Call{ID: cid, Node: itemNode(&j.JobSpec, cid), Task: j.Task, Digest: j.Digest, Effect: j.Effect, Input: it.data}
			ids = append(ids, cid)
		}
		got, err := js.s.enqueue(ctx, cs)
		if err != nil {
			return err
		}
		for _, it := range got {
			if it.Error != "" {
				return fmt.Errorf("item %s: %s", it.ID, it.Error)
			}
			if !it.Created {
				cached++
			}
		}
		items += len(page)
		return js.update(ctx, id, func(j *Job) { j.Items, j.Cached = max(j.Items, items), max(j.Cached, cached) })
	})
	if errors.Is(err, errSource) {
		js.s.log.Warn("job failed", "job", id, "err", err)
		err = js.update(ctx, id, func(j *Job) {
			j.State, j.Error, j.Finished = "failed", err.Error(), time.Now()
			if j.Webhook != "" {
				j.Notice = "pending"
			}
		})
		if err != nil {
			return err
		}
		if j, err = js.s.st.getJob(ctx, id); err != nil {
			return err
		}
		return js.notify(ctx, j)
	}
	if err != nil {
		return err
	}
	slices.Sort(ids)
	ids = slices.Compact(ids) // the same item twice in a source is one call
	if err := js.update(ctx, id, func(j *Job) { j.Items, j.Listed = len(ids), true }); err != nil {
		return err
	}
	// Count results until all are in; each pass asks only about the calls
	// that had none.
	left := ids
	done, failed := 0, 0
	for {
		ch := js.s.st.changed()
		var still []string
		for i := 0; i < len(left); i += jobPage {
			cs, err := js.s.st.get(ctx, left[i:min(i+jobPage, len(left))])
			if err != nil {
				return err
			}
			final := map[string]bool{}
			for _, c := range cs {
				if c.Final() {
					final[c.ID] = true
					done++
					if c.Result == nil || c.Result.Status != "ok" {
						failed++
					}
				}
			}
			for _, id := range left[i:min(i+jobPage, len(left))] {
				if !final[id] {
					still = append(still, id)
				}
			}
		}
		left = still
		js.mu.Lock()
		if _, ok := js.first[id]; !ok {
			js.first[id] = progress{at: time.Now(), done: done}
		}
		js.mu.Unlock()
		finished := len(left) == 0
		err := js.update(ctx, id, func(j *Job) {
			j.Done, j.Failed = done, failed
			if finished && j.State != "done" {
				j.State, j.Finished = "done", time.Now()
				if j.Webhook != "" {
					j.Notice = "pending"
				}
			}
		})
		if err != nil {
			return err
		}
		if finished {
			j, err := js.s.st.getJob(ctx, id)
			if err != nil {
				return err
			}
			js.s.log.Info("job done", "job", id, "items", j.Items, "failed", j.Failed)
			return js.notify(ctx, j)
		}
		// Wait for results, at most a few seconds (a missed wake costs that).
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-time.After(5 * time.Second):
		}
		select { // gather a burst of results into one pass
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// noticeClaim is how long a replica holds the right to send a notice.
const noticeClaim = 15 * time.Minute

// notify delivers the webhook notice of a done job: POST the job as JSON
// with Outpost-Signature: sha256=HMAC(secret, body) and Outpost-Job,
// retried with exponential backoff and full jitter (1 s to 1 min, 10
// tries) until a 2xx. One replica claims the sending (others see
// "sending" until the claim lapses); marked delivered in the store, so a
// restarted server does not send it again. A server killed between the
// POST and that mark sends it again once its claim lapses (at least once:
// the receiver dedupes by Outpost-Job).
func (js *jobs) notify(ctx context.Context, j Job) error {
	claimed, err := js.s.st.updateJob(ctx, j.ID, func(j *Job) bool {
		if j.Notice != "pending" && (j.Notice != "sending" || time.Now().Before(j.NoticeClaim)) {
			return false
		}
		j.Notice, j.NoticeClaim = "sending", time.Now().Add(noticeClaim)
		return true
	})
	if err != nil || !claimed {
		return err
	}
	j.Notice, j.NoticeClaim = "delivered", time.Time{}
	body, err := json.Marshal(j)
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, js.secret)
	mac.Write(body)
	sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	var last error
	for try, ceil := 1, time.Second; try <= 10; try, ceil = try+1, min(2*ceil, time.Minute) {
		if last = js.post(ctx, j.Webhook, j.ID, sig, body); last == nil {
			return js.update(ctx, j.ID, func(j *Job) { j.Notice, j.NoticeClaim = "delivered", time.Time{} })
		}
		js.s.log.Warn("job notice: webhook failed", "job", j.ID, "try", try, "err", last)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rand.N(ceil)):
		}
	}
	return js.update(ctx, j.ID, func(j *Job) { j.Notice, j.NoticeClaim = "failed: "+last.Error(), time.Time{} })
}

func (js *jobs) post(ctx context.Context, url, id, sig string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Outpost-Job", id)
	if js.secret != nil {
		req.Header.Set("Outpost-Signature", sig)
	}
	resp, err := js.hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// update changes a stored job.
func (js *jobs) update(ctx context.Context, id string, f func(*Job)) error {
	_, err := js.s.st.updateJob(ctx, id, func(j *Job) bool { f(j); return true })
	return err
}

// withRate adds the rate and estimated time left seen by this process.
func (js *jobs) withRate(j Job) Job {
	js.mu.Lock()
	p, ok := js.first[j.ID]
	js.mu.Unlock()
	if el := time.Since(p.at).Seconds(); ok && j.State == "running" && el > 0 && j.Done > p.done {
		j.Rate = float64(j.Done-p.done) / el
		if j.Listed {
			j.ETA = time.Duration(float64(j.Items-j.Done) / j.Rate * float64(time.Second))
		}
	}
	return j
}

// ReadJSONLines calls f with each non-blank line of r (a JSONL data set:
// one JSON value a line, up to 16 MiB), numbered from 1 and trimmed. A
// line that is not JSON is an error ":LINE: not a JSON value", to follow
// the source's name; f's error ends the read and is returned as it is.
func ReadJSONLines(r io.Reader, f func(line int, value []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if !json.Valid(b) {
			return fmt.Errorf(":%d: not a JSON value", line)
		}
		if err := f(line, bytes.Clone(b)); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf(": %w", err)
	}
	return nil
}
