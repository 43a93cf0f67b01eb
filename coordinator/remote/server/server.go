// Package server is the reference cloud control plane of the cloud link
// (docs/cloud-link.md): per-node queues with priorities, leases and
// redelivery, one live poller per node, a results store where the first
// result wins and replays are checked by hash, and an API to enqueue
// calls, watch results and list nodes. State lives in a store with two
// engines (store.go): badger, embedded, for one process (leases measured on
// its monotonic clock and reset to a full lease on restart), and
// PostgreSQL, shared by several replicas (leases measured on the
// database's clock). cmd/outpost-cloud serves it; tests run it in process.
package server

import (
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/format"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

// Options configure a Server.
type Options struct {
	Dir string // badger directory, and the default ObjectDir's parent
	// Store selects the engine: a postgres:// (or postgresql://) URL puts
	// the queues in that PostgreSQL database, shared by every replica that
	// names it; empty means badger at Dir.
	Store string
	// ReplicaTimeout (PostgreSQL): a replica that has not marked itself
	// alive for this long no longer holds its nodes' polls (5s).
	ReplicaTimeout time.Duration
	// Tokens maps a bearer token to the node it authenticates. Empty: no
	// authentication (loopback development only).
	Tokens map[string]string
	// OperatorTokenFile holds the bearer token of the operator API
	// (/api/v1: enqueue, results, nodes, cancel); it is re-read when it
	// changes. Empty: the operator API is open (loopback development only).
	OperatorTokenFile string
	// Lease is the default lease of a delivered call (30s).
	Lease time.Duration
	// LiveWindow: a poller that ended a poll less than this ago is still
	// live for its node (5s).
	LiveWindow time.Duration
	Log        *slog.Logger
	// ObjectDir holds code objects (objects.go; default Dir/objects) and
	// MaxObject bounds one (DefaultMaxObject).
	ObjectDir string
	MaxObject int64
	// JobLease is how long a server holds the right to drive a data-set
	// job without renewing it (15s; jobs.go); on PostgreSQL a replica that
	// stopped its heartbeats loses its jobs after ReplicaTimeout already.
	JobLease time.Duration
	// WebhookSecretFile holds the secret that signs data-set jobs'
	// completion webhooks (jobs.go); empty: unsigned.
	WebhookSecretFile string
	// RunWorkers is how many calls the control plane runs itself at once
	// for nodes whose placement chose the cloud (runs.go); 0: none.
	RunWorkers int
	// RunDir holds the records of those runs (default Dir/runs).
	RunDir string
	// RunMemory bounds the linear memory of those runs' instances
	// together (runtime.Options.MemoryBudget); 0: no bound.
	RunMemory uint64
}

// Call is a call as the server stores and shows it.
type Call struct {
	ID       string `json:"id"`
	Node     string `json:"node"`
	Task     string `json:"task"`
	Input    []byte `json:"input,omitempty"`
	Queue    string `json:"queue,omitempty"`
	Priority int    `json:"priority,omitempty"`
	// Labels are handed to the node with the call (its placement rules
	// see them as call.labels).
	Labels   map[string]string `json:"labels,omitempty"`
	Effect   string            `json:"effect,omitempty"`
	Key      string            `json:"idempotency_key,omitempty"`
	TTLMS    int64             `json:"ttl_ms,omitempty"`
	LeaseMS  int64             `json:"lease_ms,omitempty"`
	MaxRunMS int64             `json:"max_run_ms,omitempty"`
	// Digest ("sha256:HEX") names a stored object the task runs; a node
	// without the task fetches it (objects.go).
	Digest string `json:"digest,omitempty"`

	State      string         `json:"state"` // pending, leased, done, cancelled, expired
	Attempt    int            `json:"attempt"`
	Deliveries int            `json:"deliveries"` // times handed to the node
	Order      uint64         `json:"order"`
	Enqueued   time.Time      `json:"enqueued"`
	Result     *remote.Result `json:"result,omitempty"`
	ResultAt   time.Time      `json:"result_at,omitzero"`
	Replays    int            `json:"replays"`   // later results with the same hash
	Conflicts  int            `json:"conflicts"` // later results with another hash

	// In memory only (badger engine).
	seq        uint64    // delivery seq while delivered or leased
	acked      bool      // the node acknowledged the delivery
	leaseUntil time.Time // monotonic
	startBy    time.Time // monotonic; zero: none
	index      int       // in its queue's pending heap
}

// Final reports whether the call will not change any more.
func (c *Call) Final() bool {
	return c.State == "done" || c.State == "cancelled" || c.State == "expired"
}

// Server is the control plane.
type Server struct {
	id       string // this server among the replicas (store.replicaID): job leases, the Outpost-Replica header
	opts     Options
	log      *slog.Logger
	st       store
	objs     *objects
	operator *operatorToken // nil: operator API open
	jobs     *jobs
	runs     *cloudRuns
}

// stateFormat is the format of the control plane's badger state (calls
// under "call/"), objectsFormat that of its object directory
// (docs/architecture.md, "Format versions"); the PostgreSQL schema has its
// own versions (postgres.go, migrations).
var (
	stateFormat   = format.New("outpost-cloud state", 1)
	objectsFormat = format.New("outpost-cloud objects", 1)
)

// Open opens the state: PostgreSQL when opts.Store is a postgres:// URL,
// else badger at opts.Dir.
func Open(opts Options) (*Server, error) {
	opts.Lease = cmp.Or(opts.Lease, 30*time.Second)
	opts.LiveWindow = cmp.Or(opts.LiveWindow, 5*time.Second)
	opts.ReplicaTimeout = cmp.Or(opts.ReplicaTimeout, 5*time.Second)
	opts.JobLease = cmp.Or(opts.JobLease, 15*time.Second)
	opts.MaxObject = cmp.Or(opts.MaxObject, DefaultMaxObject)
	opts.ObjectDir = cmp.Or(opts.ObjectDir, filepath.Join(opts.Dir, "objects"))
	opts.RunDir = cmp.Or(opts.RunDir, filepath.Join(opts.Dir, "runs"))
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	var err error
	var operator *operatorToken
	if opts.OperatorTokenFile != "" {
		operator = &operatorToken{path: opts.OperatorTokenFile}
		if _, err := operator.load(); err != nil {
			return nil, err
		}
	}
	var secret []byte
	if opts.WebhookSecretFile != "" {
		if secret, err = secretfile.ReadToken(opts.WebhookSecretFile); err != nil {
			return nil, fmt.Errorf("webhook secret: %w", err)
		}
	}
	var st store
	if IsPostgres(opts.Store) {
		st, err = openPostgres(context.Background(), opts)
	} else {
		st, err = openBadger(opts.Dir, opts)
	}
	if err != nil {
		return nil, err
	}
	db, _ := st.(objectDB)
	objs, err := openObjects(opts.ObjectDir, opts.MaxObject, db, opts.Log)
	if err == nil {
		err = objs.importLocal(context.Background(), opts.Log)
	}
	var runs *cloudRuns
	if err == nil {
		runs, err = openRuns(opts.RunDir, opts.RunWorkers, opts.RunMemory, objs, opts.Log)
	}
	if err != nil {
		_ = st.close()
		return nil, err
	}
	s := &Server{id: st.replicaID(), opts: opts, log: opts.Log, st: st, objs: objs, operator: operator, runs: runs}
	s.jobs = newJobs(s, secret)
	s.jobs.wg.Add(1)
	go s.jobs.loop()
	return s, nil
}

// IsPostgres reports whether store names a PostgreSQL database
// (Options.Store).
func IsPostgres(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}

// Close stops the job runners and the cloud runs (unrecorded: a restart
// answers them by their effect) and closes the state store.
func (s *Server) Close() error {
	s.jobs.close()
	s.runs.close()
	return s.st.close()
}

// Handler returns the HTTP API: /edge/v1 for nodes, /api/v1 for operators
// (behind the operator token when Options.OperatorTokenFile is set).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /edge/v1/nodes/{node}/poll", s.edge(s.handlePoll))
	mux.HandleFunc("PUT /edge/v1/nodes/{node}/calls/{call}/attempts/{n}/result", s.edge(s.handleResult))
	mux.HandleFunc("POST /edge/v1/nodes/{node}/results:batch", s.edge(s.handleBatch))
	mux.HandleFunc("GET /edge/v1/nodes/{node}/calls", s.edge(s.handleNodeCalls))
	mux.HandleFunc("POST /edge/v1/nodes/{node}/runs/{run}", s.edge(s.handleRun))
	mux.HandleFunc("PUT /edge/v1/nodes/{node}/objects/{digest}", s.edge(s.handleObjectUpload))
	mux.HandleFunc("POST /api/v1/calls", s.handleEnqueue)
	mux.HandleFunc("POST /api/v1/calls:status", s.handleStatus)
	mux.HandleFunc("GET /api/v1/calls", s.handleList)
	mux.HandleFunc("GET /api/v1/calls/{id}", s.handleGet)
	mux.HandleFunc("DELETE /api/v1/calls/{id}", s.handleCancel)
	s.jobRoutes(mux)
	s.nodeRoutes(mux) // nodes.go
	s.objectRoutes(mux)
	s.messageRoutes(mux) // messages.go
	auth := s.operatorAuth(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Outpost-Replica", s.id)
		auth.ServeHTTP(w, r)
	})
}

// ID is the server's id among replicas: the Outpost-Replica header of its
// answers, and a job's driver.
func (s *Server) ID() string { return s.id }

// edge checks the protocol version and the node's credentials: its bearer
// token, and the node named by a verified client certificate (mTLS).
func (s *Server) edge(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get(remote.HeaderProtocol); v != remote.Protocol {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("protocol %q not supported (want %s)", v, remote.Protocol))
			return
		}
		if len(s.opts.Tokens) > 0 {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			nodeID, known := s.opts.Tokens[strings.TrimSpace(tok)]
			switch {
			case !ok || !known:
				httpError(w, http.StatusUnauthorized, "missing or unknown bearer token")
				return
			case nodeID != r.PathValue("node"):
				httpError(w, http.StatusForbidden, "token is not for node "+r.PathValue("node"))
				return
			}
		}
		if id, ok := certNode(r); ok && id != r.PathValue("node") {
			httpError(w, http.StatusForbidden, "client certificate is for node "+id+", not "+r.PathValue("node"))
			return
		}
		h(w, r)
	}
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if len(b) > 1024 && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(code)
		gz := gzip.NewWriter(w)
		_, _ = gz.Write(b)
		_ = gz.Close()
		return
	}
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// readBody reads a JSON body, gzip or not, of at most
// remote.MaxRequestBody.
func readBody(r *http.Request, v any) error {
	var rd io.Reader = http.MaxBytesReader(nil, r.Body, remote.MaxRequestBody)
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(rd)
		if err != nil {
			return fmt.Errorf("gzip body: %w", err)
		}
		defer gz.Close()
		rd = gz
	}
	if err := json.NewDecoder(rd).Decode(v); err != nil {
		return fmt.Errorf("json body: %w", err)
	}
	return nil
}

func (s *Server) handlePoll(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(remote.HeaderRuns, s.runs.advert()) // the cloud environment's capacity, on every answer
	var req remote.PollRequest
	if err := readBody(r, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.BootID == "" {
		httpError(w, http.StatusBadRequest, "boot_id is required")
		return
	}
	wait := min(time.Duration(req.WaitMS)*time.Millisecond, 60*time.Second)
	deadline := time.Now().Add(wait)
	ctx := r.Context()
	t, resp, err := s.st.beginPoll(ctx, r.PathValue("node"), &req)
	if ref, ok := errors.AsType[*pollRefusal](err); ok {
		if ref.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(ref.retryAfter))
		}
		httpError(w, ref.code, ref.msg)
		return
	}
	if err != nil {
		s.storeError(w, "poll", err)
		return
	}
	for {
		wake := s.st.nodeWake(t.node)
		calls, err := s.st.take(ctx, t)
		if err != nil && ctx.Err() == nil {
			s.st.endPoll(t, false)
			s.storeError(w, "poll", err)
			return
		}
		if len(calls) > 0 || len(resp.Cancel) > 0 || len(resp.Lost) > 0 || !time.Now().Before(deadline) {
			resp.Calls = calls
			s.st.endPoll(t, false)
			if len(resp.Calls) == 0 && len(resp.Cancel) == 0 && len(resp.Lost) == 0 {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			writeJSON(w, r, http.StatusOK, resp)
			return
		}
		tm := time.NewTimer(time.Until(deadline))
		select {
		case <-wake:
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			// The poller went away (a killed daemon): it is not live any more.
			s.st.endPoll(t, true)
			return
		}
		tm.Stop()
	}
}

// storeError answers 503 for a failure of the state store, logged.
func (s *Server) storeError(w http.ResponseWriter, what string, err error) {
	s.log.Error("state store", "op", what, "err", err)
	httpError(w, http.StatusServiceUnavailable, what+": state store: "+err.Error())
}

func (s *Server) handleResult(w http.ResponseWriter, r *http.Request) {
	var res remote.Result
	if err := readBody(r, &res); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || res.CallID != r.PathValue("call") || res.Attempt != n {
		httpError(w, http.StatusBadRequest, "call id and attempt in the body must match the path")
		return
	}
	if res.Hash != remote.ResultHash(res.Status, res.Output, res.Error) {
		httpError(w, http.StatusBadRequest, "hash does not match status, output and error")
		return
	}
	codes, err := s.st.putResults(r.Context(), r.PathValue("node"), []remote.Result{res})
	if err != nil {
		s.storeError(w, "result", err)
		return
	}
	w.WriteHeader(codes[0])
}

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	var req remote.BatchRequest
	if err := readBody(r, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	resp := remote.BatchResponse{Items: make([]remote.BatchItem, len(req.Results))}
	var good []remote.Result
	var at []int
	for i, res := range req.Results {
		resp.Items[i] = remote.BatchItem{CallID: res.CallID, Attempt: res.Attempt, Status: http.StatusBadRequest}
		if res.Hash == remote.ResultHash(res.Status, res.Output, res.Error) {
			good, at = append(good, res), append(at, i)
		}
	}
	codes, err := s.st.putResults(r.Context(), r.PathValue("node"), good)
	if err != nil {
		s.storeError(w, "results", err)
		return
	}
	for j, i := range at {
		resp.Items[i].Status = codes[j]
	}
	writeJSON(w, r, http.StatusOK, resp)
}

func (s *Server) handleNodeCalls(w http.ResponseWriter, r *http.Request) {
	want := map[string]bool{}
	for st := range strings.SplitSeq(r.URL.Query().Get("state"), ",") {
		if st != "" {
			want[st] = true
		}
	}
	cs, err := s.st.nodeCalls(r.Context(), r.PathValue("node"), want)
	if err != nil {
		s.storeError(w, "calls", err)
		return
	}
	writeJSON(w, r, http.StatusOK, remote.CallList{Calls: cs})
}

// EnqueueRequest is the body of POST /api/v1/calls. With Selector, each
// call is a template without a node: it is enqueued once for every node
// the label selector matches, with the id ID@NODE (nodes.go).
type EnqueueRequest struct {
	Calls    []Call `json:"calls"`
	Selector string `json:"selector,omitempty"`
}

// EnqueueItem says what happened to one enqueued call.
type EnqueueItem struct {
	ID      string `json:"id"`
	Created bool   `json:"created"` // false: a call with this id exists (see state)
	State   string `json:"state"`
	Error   string `json:"error,omitempty"`
}

func (s *Server) handleEnqueue(w http.ResponseWriter, r *http.Request) {
	var req EnqueueRequest
	if err := readBody(r, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Selector != "" {
		sel, err := ParseSelector(req.Selector)
		if err != nil {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
		if slices.ContainsFunc(req.Calls, func(c Call) bool { return c.Node != "" }) {
			httpError(w, http.StatusBadRequest, "a call enqueued by selector names no node")
			return
		}
		if req.Calls, err = s.fanOut(r.Context(), sel, req.Calls); err != nil {
			s.storeError(w, "enqueue", err)
			return
		}
	}
	items, err := s.enqueue(r.Context(), req.Calls)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"calls": items})
}

// Enqueue adds calls; an id that exists is not added again.
func (s *Server) Enqueue(in []Call) ([]EnqueueItem, error) {
	return s.enqueue(context.Background(), in)
}

func (s *Server) enqueue(ctx context.Context, in []Call) ([]EnqueueItem, error) {
	items := make([]EnqueueItem, len(in))
	var ok []Call
	var at []int
	for i, c := range in {
		if msg := s.checkCall(ctx, &c); msg != "" {
			items[i] = EnqueueItem{ID: c.ID, Error: msg}
			continue
		}
		ok, at = append(ok, c), append(at, i)
	}
	if len(ok) == 0 {
		return items, nil
	}
	got, err := s.st.enqueue(ctx, ok)
	if err != nil {
		return nil, err
	}
	for j, i := range at {
		items[i] = got[j]
	}
	return items, nil
}

// checkCall says what is wrong with a call to enqueue ("": nothing).
func (s *Server) checkCall(ctx context.Context, c *Call) string {
	labelsErr := confval.CheckLabels(c.Labels)
	switch {
	case c.ID == "" || strings.ContainsAny(c.ID, "/\x00") || len(c.ID) > 256:
		return "id must be 1 to 256 characters without '/'"
	case c.Node == "" || c.Task == "":
		return "node and task are required"
	case len(c.Input) > remote.MaxInput:
		return fmt.Sprintf("input of %d bytes: the cloud link carries at most %d", len(c.Input), remote.MaxInput)
	case c.Effect != "" && c.Effect != "idempotent" && c.Effect != "at_most_once":
		return "effect must be idempotent or at_most_once"
	case labelsErr != nil:
		return labelsErr.Error()
	case c.Digest != "" && !s.objs.has(ctx, c.Digest):
		return fmt.Sprintf("digest %q: no such object (want sha256:HEX of an object put with outpost-cloud object put)", c.Digest)
	}
	return ""
}

// newCall is a pending first attempt of c, the order-th enqueued.
func newCall(c Call, order uint64) *Call {
	return &Call{ID: c.ID, Node: c.Node, Task: c.Task, Input: c.Input, Queue: c.Queue, Priority: c.Priority, Labels: c.Labels, Effect: c.Effect,
		Key: c.Key, TTLMS: c.TTLMS, LeaseMS: c.LeaseMS, MaxRunMS: c.MaxRunMS, Digest: c.Digest,
		State: "pending", Attempt: 1, Order: order, Enqueued: time.Now()}
}

func snapshot(c *Call) Call {
	cp := *c
	cp.Input = nil
	return cp
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	deadline := time.Now().Add(min(wait, 5*time.Minute))
	for {
		ch := s.st.changed()
		cs, err := s.st.get(r.Context(), []string{r.PathValue("id")})
		if err != nil {
			s.storeError(w, "get", err)
			return
		}
		if len(cs) == 0 {
			httpError(w, http.StatusNotFound, "no call "+r.PathValue("id"))
			return
		}
		if cs[0].Final() || !time.Now().Before(deadline) {
			writeJSON(w, r, http.StatusOK, cs[0])
			return
		}
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-ch:
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		t.Stop()
	}
}

// StatusRequest asks for the states of many calls at once.
type StatusRequest struct {
	IDs []string `json:"ids"`
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	var req StatusRequest
	if err := readBody(r, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	out, err := s.st.get(r.Context(), req.IDs)
	if err != nil {
		s.storeError(w, "status", err)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"calls": out})
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	labels, err := confval.ParseLabels(q["label"])
	if err != nil {
		httpError(w, http.StatusBadRequest, "query parameter label: "+err.Error())
		return
	}
	out, err := s.st.list(r.Context(), callFilter{node: q.Get("node"), state: q.Get("state"), labels: labels})
	if err != nil {
		s.storeError(w, "list", err)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"calls": out})
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	err := s.st.cancel(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, errNoCall):
		httpError(w, http.StatusNotFound, "no call "+r.PathValue("id"))
	case errors.Is(err, errFinal):
		httpError(w, http.StatusConflict, err.Error())
	case err != nil:
		s.storeError(w, "cancel", err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// Get returns a snapshot of a call (tests and tools).
func (s *Server) Get(id string) (Call, bool) {
	cs, err := s.st.get(context.Background(), []string{id})
	if err != nil || len(cs) == 0 {
		return Call{}, false
	}
	return cs[0], true
}

// WaitFinal waits until every id is final or ctx ends.
func (s *Server) WaitFinal(ctx context.Context, ids ...string) error {
	for {
		ch := s.st.changed()
		cs, err := s.st.get(ctx, ids)
		if err != nil {
			return fmt.Errorf("wait for calls: %w", err)
		}
		left := len(ids) - len(cs)
		for _, c := range cs {
			if !c.Final() {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d calls not final: %w", left, len(ids), ctx.Err())
		}
	}
}
