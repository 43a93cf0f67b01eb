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

	"github.com/outpost-edge/outpost/internal/confval"
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
// them: it reads the source again and enqueues what is missing. One server
// drives a job at a time: it holds the job's lease in the store
// (leaseJob), renews it while it runs, and another replica takes the job
// over once a dead holder's lease lapses. An item whose result failed with
// a status the job's retry policy names runs again, after a backoff, as a
// new call (the item's call id and ".N" for its Nth attempt), until it
// succeeds or runs out of attempts. When every item is settled the job is
// done and a notice goes once to each subscriber: a signed webhook POST
// (retried with backoff) and the job's event stream (Server-Sent Events).

// JobSpec is what an operator asks for (POST /api/v1/jobs).
type JobSpec struct {
	ID     string   `json:"id,omitempty"` // default: a new one
	Task   string   `json:"task"`
	Digest string   `json:"digest,omitempty"`
	Nodes  []string `json:"nodes"` // items are spread over these by their id
	// Selector, instead of Nodes, picks the nodes by label (selector.go):
	// the nodes it matches when the job is created become Nodes.
	Selector string `json:"selector,omitempty"`
	Effect   string `json:"effect,omitempty"`
	// Source: "dir:PATH" (each regular file under PATH on the server is an
	// item, its key the relative path), "jsonl:PATH" or a JSONL file at an
	// http(s):// URL (each non-empty line is an item, its key the line
	// number), or "pgtable:URLFILE:TABLE:KEY" (each row of a PostgreSQL
	// table, paged by its key column; readTable).
	Source string `json:"source"`
	// Webhook, when set, receives the completion notice: a POST of the
	// job's status, signed with Options.WebhookSecretFile's secret.
	Webhook string `json:"webhook,omitempty"`
	// Retry runs items whose result failed again (nil: never).
	Retry *RetryPolicy `json:"retry,omitempty"`
	// Labels label every call of the job, retries too (the node's
	// placement rules see them as call.labels); not part of an item's
	// call id: the same items with other labels are the same work.
	Labels map[string]string `json:"labels,omitempty"`
}

// RetryPolicy says which failed items run again, how often and when.
type RetryPolicy struct {
	// MaxAttempts bounds an item's runs, the first included (1: no retry).
	MaxAttempts int `json:"max_attempts"`
	// BackoffMS is the wait after a failed result before the second
	// attempt; it doubles for each later one, up to MaxBackoffMS.
	BackoffMS    int64 `json:"backoff_ms,omitempty"`
	MaxBackoffMS int64 `json:"max_backoff_ms,omitempty"`
	// On lists the result statuses retried (default DefaultRetryOn);
	// "cancelled" names a call an operator cancelled.
	On []string `json:"on,omitempty"`
}

// DefaultRetryOn are the statuses a retry policy retries unless it names
// others: the transient ones (a task that failed, trapped or broke the ABI
// fails again on the same input).
var DefaultRetryOn = []string{"timeout", "rejected", "interrupted", "expired", "canceled", "fetch_failed"}

// Defaults and bounds of a retry policy.
const (
	defaultRetryBackoff    = 10 * time.Second
	defaultRetryMaxBackoff = 10 * time.Minute
	maxRetryAttempts       = 100
)

// check fills in defaults and says what is wrong.
func (p *RetryPolicy) check() error {
	switch {
	case p.MaxAttempts < 1 || p.MaxAttempts > maxRetryAttempts:
		return fmt.Errorf("retry: max_attempts must be 1 to %d", maxRetryAttempts)
	case p.BackoffMS < 0 || p.MaxBackoffMS < 0:
		return errors.New("retry: a backoff must not be negative")
	}
	if p.BackoffMS == 0 {
		p.BackoffMS = defaultRetryBackoff.Milliseconds()
	}
	if p.MaxBackoffMS == 0 {
		p.MaxBackoffMS = max(defaultRetryMaxBackoff.Milliseconds(), p.BackoffMS)
	}
	if len(p.On) == 0 {
		p.On = DefaultRetryOn
	}
	return nil
}

// retries reports whether a call that ended in state with result r runs
// again after its attempt-th attempt.
func (p *RetryPolicy) retries(attempt int, c *Call) bool {
	if p == nil || attempt >= p.MaxAttempts {
		return false
	}
	return slices.Contains(p.On, outcome(c))
}

// backoff is the wait before attempt (2 or more).
func (p *RetryPolicy) backoff(attempt int) time.Duration {
	d := time.Duration(p.BackoffMS) * time.Millisecond
	for i := 2; i < attempt && d < time.Duration(p.MaxBackoffMS)*time.Millisecond; i++ {
		d *= 2
	}
	return min(d, time.Duration(p.MaxBackoffMS)*time.Millisecond)
}

// outcome is a final call's result status, or its state without one
// ("cancelled").
func outcome(c *Call) string {
	if c.Result != nil {
		return c.Result.Status
	}
	return c.State
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
	Done     int       `json:"done"`   // items settled: ok, or failed for good
	Failed   int       `json:"failed"` // of those, the ones whose last result is not ok
	// Retried counts the retries enqueued (an item's second and later
	// attempts); GaveUp the items that failed with a status the policy
	// retries and ran out of attempts (they count in Failed too).
	Retried int  `json:"retried"`
	GaveUp  int  `json:"gave_up"`
	Listed  bool `json:"listed"` // the whole source has been read
	// Driver is the server (replica) that drives the job, by its id.
	Driver string `json:"driver,omitempty"`
	// Notice is the webhook's delivery state: "" (none due), "pending",
	// "sending" (claimed by a replica until NoticeClaim), "delivered", or
	// "failed: reason" after the last retry.
	Notice      string    `json:"notice,omitempty"`
	NoticeClaim time.Time `json:"notice_claim,omitzero"`
	// Rate is items settled per second since the driver took the job;
	// ETA the time left at that rate.
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

// itemCall is the call of id (an item's attempt) with input, on the node
// id picks.
func (spec *JobSpec) itemCall(id string, input []byte) Call {
	return Call{ID: id, Node: itemNode(spec, id), Task: spec.Task, Digest: spec.Digest, Effect: spec.Effect, Labels: spec.Labels, Input: input}
}

// attemptID is the call id of an item's attempt-th run: its call id, and
// ".N" from the second on.
func attemptID(base string, attempt int) string {
	if attempt <= 1 {
		return base
	}
	return fmt.Sprintf("%s.%d", base, attempt)
}

// jobs runs the jobs of a Server.
type jobs struct {
	s      *Server
	secret []byte // webhook signing secret; nil: unsigned
	hc     *http.Client
	holder string        // this server's id in job leases
	lease  time.Duration // Options.JobLease

	ctx  context.Context // ends at stop
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	running map[string]bool // a driver was started
	driving map[string]bool // and holds the job's lease
}

func newJobs(s *Server, secret []byte) *jobs {
	ctx, stop := context.WithCancel(context.Background())
	return &jobs{s: s, secret: secret, hc: &http.Client{Timeout: 30 * time.Second}, holder: s.id, lease: s.opts.JobLease,
		ctx: ctx, stop: stop, running: map[string]bool{}, driving: map[string]bool{}}
}

// createJob checks and stores a job, and starts it.
func (s *Server) createJob(ctx context.Context, spec JobSpec) (Job, error) {
	switch {
	case spec.Task == "" || len(spec.Nodes) == 0 && spec.Selector == "" || spec.Source == "":
		return Job{}, errors.New("task, nodes (or a selector) and source are required")
	case len(spec.Nodes) > 0 && spec.Selector != "":
		return Job{}, errors.New("nodes and selector exclude each other")
	case spec.Effect != "" && spec.Effect != "idempotent" && spec.Effect != "at_most_once":
		return Job{}, errors.New("effect must be idempotent or at_most_once")
	case spec.Digest != "" && !s.objs.has(ctx, spec.Digest):
		return Job{}, fmt.Errorf("digest %q: no such object", spec.Digest)
	case spec.Webhook != "" && !strings.HasPrefix(spec.Webhook, "http://") && !strings.HasPrefix(spec.Webhook, "https://"):
		return Job{}, errors.New("webhook must be an http(s):// URL")
	}
	if err := confval.CheckLabels(spec.Labels); err != nil {
		return Job{}, err
	}
	if spec.Retry != nil {
		if err := spec.Retry.check(); err != nil {
			return Job{}, err
		}
	}
	if spec.Selector != "" {
		sel, err := ParseSelector(spec.Selector)
		if err != nil {
			return Job{}, err
		}
		nodes, err := s.selectNodes(ctx, sel)
		if err != nil {
			return Job{}, err
		}
		for _, n := range nodes {
			spec.Nodes = append(spec.Nodes, n.ID)
		}
		if len(spec.Nodes) == 0 {
			return Job{}, fmt.Errorf("selector %q matches no node (see outpost-cloud node ls)", spec.Selector)
		}
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

// loop looks for unfinished jobs (created on another replica, or whose
// driver died) every half lease or half ReplicaTimeout, whichever is
// shorter, and starts a driver for each that this server does not run
// yet; the driver runs only if it gets the job's lease.
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
		case <-time.After(min(js.lease, js.s.opts.ReplicaTimeout) / 2):
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
		js.drive(id)
		js.mu.Lock()
		delete(js.running, id)
		js.mu.Unlock()
	}()
}

// close stops the drivers, which give up their leases, and waits for them.
func (js *jobs) close() {
	js.stop()
	js.wg.Wait()
}

// drive runs the job while this server holds its lease: taken first (or
// nothing happens), renewed every third of it; the run stops when a
// renewal fails or finds the lease taken (another replica drives the job
// now), and the lease is given up when the run ends.
func (js *jobs) drive(id string) {
	log := js.s.log.With("job", id)
	held, err := js.s.st.leaseJob(js.ctx, id, js.holder, js.lease, false)
	if err != nil && js.ctx.Err() == nil {
		log.Warn("job: lease", "err", err)
	}
	if !held {
		return
	}
	js.setDriving(id, true)
	ctx, cancel := context.WithCancel(js.ctx)
	defer cancel()
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(js.lease / 3):
			}
			held, err := js.s.st.leaseJob(ctx, id, js.holder, js.lease, false)
			switch {
			case ctx.Err() != nil:
				return
			case err == nil && held:
				last = time.Now()
				continue
			case err == nil:
				log.Warn("job: lease taken by another server: stopping")
				cancel()
				return
			case time.Since(last) > js.lease:
				log.Warn("job: lease not renewed: stopping", "err", err)
				cancel()
				return
			}
		}
	}()
	js.run(ctx, id)
	cancel()
	<-renewed
	js.setDriving(id, false)
	rctx, rcancel := context.WithTimeout(context.Background(), pgTimeout)
	defer rcancel()
	if _, err := js.s.st.leaseJob(rctx, id, js.holder, 0, true); err != nil {
		log.Warn("job: release lease", "err", err)
	}
}

func (js *jobs) setDriving(id string, on bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if on {
		js.driving[id] = true
	} else {
		delete(js.driving, id)
	}
}

// run drives one job: enqueue the source's items (again after a restart:
// nothing runs twice), then count results and retry failures until every
// item is settled, then deliver the notice.
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
	if err := js.update(ctx, id, func(j *Job) { j.Driver = js.holder }); err != nil {
		return err
	}
	ids, err := js.enqueueSource(ctx, j)
	if errors.Is(err, errSource) {
		js.s.log.Warn("job failed", "job", id, "err", err)
		return js.finish(ctx, id, func(j *Job) { j.State, j.Error = "failed", err.Error() })
	}
	if err != nil {
		return err
	}
	if err := js.update(ctx, id, func(j *Job) { j.Items, j.Listed = len(ids), true }); err != nil {
		return err
	}
	return js.settle(ctx, &j, ids)
}

// enqueueSource reads the job's source and enqueues a call for each item
// that has none; it returns the items' call ids, sorted, each once.
func (js *jobs) enqueueSource(ctx context.Context, j Job) ([]string, error) {
	var ids []string
	cached, items := 0, 0
	err := readSource(ctx, j.Source, func(page []item) error {
		cs := make([]Call, len(page))
		for i, it := range page {
			cid := itemCallID(&j.JobSpec, it)
			cs[i] = j.itemCall(cid, it.data)
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
		return js.update(ctx, j.ID, func(j *Job) { j.Items, j.Cached = max(j.Items, items), max(j.Cached, cached) })
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil // the same item twice in a source is one call
}

// settle follows the items' calls until each is settled: its last
// attempt ok, or failed with a status the policy does not retry, or with
// no attempt left. A failed item due a retry gets its next attempt once
// its backoff (from the failed result) has passed. Each pass asks only
// about the items not settled; the counts are made again on every pass,
// so a driver that takes a job over counts the same.
func (js *jobs) settle(ctx context.Context, j *Job, ids []string) error {
	attempt := make([]int, len(ids)) // the latest attempt enqueued, by item
	for i := range attempt {
		attempt[i] = 1
	}
	left := make([]int, len(ids)) // items not settled, by index
	for i := range left {
		left[i] = i
	}
	done, failed, gaveUp := 0, 0, 0
	start, startDone := time.Now(), -1
	for {
		ch := js.s.st.changed()
		now := time.Now()
		var still []int
		var due []int // items whose next attempt is due now
		wake := now.Add(5 * time.Second)
		for p := 0; p < len(left); p += jobPage {
			page := left[p:min(p+jobPage, len(left))]
			q := make([]string, len(page))
			for k, i := range page {
				q[k] = attemptID(ids[i], attempt[i])
			}
			cs, err := js.s.st.get(ctx, q)
			if err != nil {
				return err
			}
			byID := make(map[string]*Call, len(cs))
			for k := range cs {
				byID[cs[k].ID] = &cs[k]
			}
			for k, i := range page {
				c := byID[q[k]]
				switch {
				case c == nil || !c.Final():
					still = append(still, i)
				case outcome(c) == "ok":
					done++
				case j.Retry.retries(attempt[i], c):
					still = append(still, i)
					if at := c.ResultAt.Add(j.Retry.backoff(attempt[i] + 1)); at.After(now) {
						wake = minTime(wake, at)
					} else {
						due = append(due, i)
					}
				default:
					done++
					failed++
					if j.Retry != nil && slices.Contains(j.Retry.On, outcome(c)) {
						gaveUp++
					}
				}
			}
		}
		if err := js.retry(ctx, j, ids, attempt, due); err != nil {
			return err
		}
		left = still
		retried := 0
		for _, a := range attempt {
			retried += a - 1
		}
		if startDone < 0 {
			startDone = done
		}
		finished := len(left) == 0
		rate := 0.0
		if el := time.Since(start).Seconds(); el > 0 && done > startDone {
			rate = float64(done-startDone) / el
		}
		err := js.update(ctx, j.ID, func(j *Job) {
			j.Done, j.Failed, j.Retried, j.GaveUp, j.Rate, j.ETA = done, failed, retried, gaveUp, rate, 0
			if rate > 0 {
				j.ETA = time.Duration(float64(len(ids)-done) / rate * float64(time.Second))
			}
		})
		if err != nil {
			return err
		}
		if finished {
			js.s.log.Info("job done", "job", j.ID, "items", len(ids), "failed", failed, "retried", retried)
			return js.finish(ctx, j.ID, func(j *Job) { j.State, j.Rate, j.ETA = "done", 0, 0 })
		}
		if len(due) > 0 {
			continue // look at the new attempts at once
		}
		// Wait for results, or the next retry due, at most a few seconds
		// (a missed wake costs that).
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-time.After(time.Until(wake)):
		}
		select { // gather a burst of results into one pass
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// retry enqueues the next attempt of the items at due (indexes into ids),
// with the input of their last attempt, on the node the new call id picks;
// an attempt that exists (enqueued before a restart) is not added again.
func (js *jobs) retry(ctx context.Context, j *Job, ids []string, attempt []int, due []int) error {
	for p := 0; p < len(due); p += jobPage {
		page := due[p:min(p+jobPage, len(due))]
		prev := make([]string, len(page))
		for k, i := range page {
			prev[k] = attemptID(ids[i], attempt[i])
		}
		in, err := js.s.st.inputs(ctx, prev)
		if err != nil {
			return err
		}
		cs := make([]Call, len(page))
		for k, i := range page {
			cid := attemptID(ids[i], attempt[i]+1)
			cs[k] = j.itemCall(cid, in[prev[k]])
		}
		got, err := js.s.enqueue(ctx, cs)
		if err != nil {
			return err
		}
		for k, it := range got {
			if it.Error != "" {
				return fmt.Errorf("retry of item %s: %s", it.ID, it.Error)
			}
			attempt[page[k]]++
		}
	}
	return nil
}

// finish ends a job with f (state, error) and delivers its notice.
func (js *jobs) finish(ctx context.Context, id string, f func(*Job)) error {
	err := js.update(ctx, id, func(j *Job) {
		f(j)
		j.Finished = time.Now()
		if j.Webhook != "" {
			j.Notice = "pending"
		}
	})
	if err != nil {
		return err
	}
	j, err := js.s.st.getJob(ctx, id)
	if err != nil {
		return err
	}
	return js.notify(ctx, j)
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
