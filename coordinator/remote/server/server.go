// Package server is the reference cloud control plane of the cloud link
// (docs/cloud-link.md): per-node queues with priorities, leases and
// redelivery, one live poller per node, a results store where the first
// result wins and replays are checked by hash, and an API to enqueue
// calls, watch results and list nodes. State lives in badger; leases are
// measured on the monotonic clock and reset to a full lease on restart.
// cmd/outpost-cloud serves it; tests run it in process.
package server

import (
	"compress/gzip"
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/format"
)

// Options configure a Server.
type Options struct {
	Dir string // badger directory
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
}

// Call is a call as the server stores and shows it.
type Call struct {
	ID       string `json:"id"`
	Node     string `json:"node"`
	Task     string `json:"task"`
	Input    []byte `json:"input,omitempty"`
	Queue    string `json:"queue,omitempty"`
	Priority int    `json:"priority,omitempty"`
	Effect   string `json:"effect,omitempty"`
	Key      string `json:"idempotency_key,omitempty"`
	TTLMS    int64  `json:"ttl_ms,omitempty"`
	LeaseMS  int64  `json:"lease_ms,omitempty"`
	MaxRunMS int64  `json:"max_run_ms,omitempty"`
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

	// In memory only.
	seq        uint64    // delivery seq while delivered or leased
	acked      bool      // the node acknowledged the delivery
	leaseUntil time.Time // monotonic
	startBy    time.Time // monotonic; zero: none
	index      int       // in the node's pending heap
}

// Final reports whether the call will not change any more.
func (c *Call) Final() bool {
	return c.State == "done" || c.State == "cancelled" || c.State == "expired"
}

type node struct {
	id       string
	pending  pendingHeap
	held     map[string]*Call // delivered or leased
	nextSeq  uint64
	boot     string
	inflight int
	lastEnd  time.Time
	lastSeen time.Time
	wake     chan struct{}
	cancels  []string
}

// Server is the control plane.
type Server struct {
	opts     Options
	log      *slog.Logger
	db       *badger.DB
	objs     *objects
	operator *operatorToken // nil: operator API open

	// msgMu orders the writers of device messages (messages.go).
	msgMu sync.Mutex

	// Lock order: persistMu before mu.
	persistMu sync.Mutex
	mu        sync.Mutex
	calls     map[string]*Call
	nodes     map[string]*node
	order     uint64
	changed   chan struct{} // closed and replaced when any call changes state
}

// stateFormat is the format of the control plane's state (calls under
// "call/"), objectsFormat that of its object directory
// (docs/architecture.md, "Format versions").
var (
	stateFormat   = format.New("outpost-cloud state", 1)
	objectsFormat = format.New("outpost-cloud objects", 1)
)

// Open loads the state at opts.Dir.
func Open(opts Options) (*Server, error) {
	if opts.Lease <= 0 {
		opts.Lease = 30 * time.Second
	}
	if opts.LiveWindow <= 0 {
		opts.LiveWindow = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ObjectDir == "" {
		opts.ObjectDir = filepath.Join(opts.Dir, "objects")
	}
	if opts.MaxObject <= 0 {
		opts.MaxObject = DefaultMaxObject
	}
	objs, err := openObjects(opts.ObjectDir, opts.MaxObject, opts.Log)
	if err != nil {
		return nil, err
	}
	var operator *operatorToken
	if opts.OperatorTokenFile != "" {
		operator = &operatorToken{path: opts.OperatorTokenFile}
		if _, err := operator.load(); err != nil {
			return nil, err
		}
	}
	bo := badger.DefaultOptions(opts.Dir).WithLogger(nil).WithSyncWrites(true).
		WithMemTableSize(8 << 20).WithNumMemtables(2).WithBlockCacheSize(16 << 20).WithValueLogFileSize(64 << 20).
		WithBaseTableSize(4 << 20).WithValueThreshold(1 << 20).WithNumCompactors(2)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open server state %s: %w", opts.Dir, err)
	}
	if err := stateFormat.OpenBadger(db, []byte("format/server"), nil, opts.Log); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open server state %s: %w", opts.Dir, err)
	}
	s := &Server{opts: opts, log: opts.Log, db: db, objs: objs, operator: operator, calls: map[string]*Call{}, nodes: map[string]*node{}, changed: make(chan struct{})}
	now := time.Now()
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte("call/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			c := new(Call)
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, c) }); err != nil {
				return fmt.Errorf("decode %s: %w", it.Item().Key(), err)
			}
			s.calls[c.ID] = c
			s.order = max(s.order, c.Order)
			n := s.node(c.Node)
			if c.TTLMS > 0 && !c.Final() {
				c.startBy = now.Add(time.Duration(c.TTLMS) * time.Millisecond)
			}
			switch c.State {
			case "pending":
				heap.Push(&n.pending, c)
			case "leased":
				c.acked, c.leaseUntil = true, now.Add(s.lease(c))
				n.held[c.ID] = c
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("load server state: %w", err)
	}
	return s, nil
}

// Close closes the state store.
func (s *Server) Close() error { return s.db.Close() }

func (s *Server) lease(c *Call) time.Duration {
	if c.LeaseMS > 0 {
		return time.Duration(c.LeaseMS) * time.Millisecond
	}
	return s.opts.Lease
}

func (s *Server) node(id string) *node {
	n := s.nodes[id]
	if n == nil {
		n = &node{id: id, held: map[string]*Call{}, wake: make(chan struct{})}
		s.nodes[id] = n
	}
	return n
}

func (s *Server) notifyLocked(n *node) {
	close(s.changed)
	s.changed = make(chan struct{})
	if n != nil {
		close(n.wake)
		n.wake = make(chan struct{})
	}
}

func (s *Server) persist(cs ...*Call) error {
	if len(cs) == 0 {
		return nil
	}
	// persistMu orders writers so that the last write of a call carries its
	// latest state; mu is held only to take the snapshots.
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	s.mu.Lock()
	vals := make([][]byte, len(cs))
	for i, c := range cs {
		b, err := json.Marshal(c)
		if err != nil {
			s.mu.Unlock()
			return err
		}
		vals[i] = b
	}
	s.mu.Unlock()
	for i, c := range cs {
		if err := wb.Set([]byte("call/"+c.ID), vals[i]); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("persist calls: %w", err)
	}
	return s.db.Sync()
}

// Handler returns the HTTP API: /edge/v1 for nodes, /api/v1 for operators
// (behind the operator token when Options.OperatorTokenFile is set).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /edge/v1/nodes/{node}/poll", s.edge(s.handlePoll))
	mux.HandleFunc("PUT /edge/v1/nodes/{node}/calls/{call}/attempts/{n}/result", s.edge(s.handleResult))
	mux.HandleFunc("POST /edge/v1/nodes/{node}/results:batch", s.edge(s.handleBatch))
	mux.HandleFunc("GET /edge/v1/nodes/{node}/calls", s.edge(s.handleNodeCalls))
	mux.HandleFunc("POST /api/v1/calls", s.handleEnqueue)
	mux.HandleFunc("POST /api/v1/calls:status", s.handleStatus)
	mux.HandleFunc("GET /api/v1/calls", s.handleList)
	mux.HandleFunc("GET /api/v1/calls/{id}", s.handleGet)
	mux.HandleFunc("DELETE /api/v1/calls/{id}", s.handleCancel)
	mux.HandleFunc("GET /api/v1/nodes", s.handleNodes)
	s.objectRoutes(mux)
	s.messageRoutes(mux) // messages.go
	return s.operatorAuth(mux)
}

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

	s.mu.Lock()
	n := s.node(r.PathValue("node"))
	now := time.Now()
	if n.boot != "" && n.boot != req.BootID && (n.inflight > 0 || now.Sub(n.lastEnd) < s.opts.LiveWindow) {
		s.mu.Unlock()
		w.Header().Set("Retry-After", strconv.Itoa(int(s.opts.LiveWindow/time.Second)+1))
		httpError(w, http.StatusConflict, "another poller (boot "+n.boot+") serves node "+n.id)
		return
	}
	if req.AckThrough > n.nextSeq {
		s.mu.Unlock()
		httpError(w, http.StatusGone, fmt.Sprintf("ack_through %d is past the last seq %d: the session is gone, reconcile", req.AckThrough, n.nextSeq))
		return
	}
	n.boot, n.lastSeen = req.BootID, time.Now()
	n.inflight++
	var resp remote.PollResponse
	var dirty []*Call
	// Leases that ran out first: a renewal arriving after its lease expired
	// (a node paused or cut off longer than the lease) does not revive it;
	// the node hears the call is lost and gets it again as a new attempt.
	dirty = append(dirty, s.expireLocked(n, now)...)
	// Acks, lost deliveries, renewals.
	for _, c := range n.held {
		switch {
		case c.seq <= req.AckThrough:
			c.acked = true
		case !c.acked:
			// Delivered in an earlier response the node never acknowledged:
			// the response was lost. Hand it out again.
			delete(n.held, c.ID)
			c.State = "pending"
			heap.Push(&n.pending, c)
		}
	}
	for _, id := range req.Renew {
		c := n.held[id]
		if c == nil {
			if c := s.calls[id]; c != nil && c.State == "cancelled" {
				resp.Cancel = append(resp.Cancel, id)
			} else if c == nil || c.State != "done" {
				resp.Lost = append(resp.Lost, id)
			}
			continue
		}
		c.leaseUntil = now.Add(s.lease(c))
	}
	resp.Cancel = append(resp.Cancel, n.cancels...)
	n.cancels = nil
	s.mu.Unlock()
	if err := s.persist(dirty...); err != nil {
		s.log.Error("persist", "err", err)
	}

	for {
		s.mu.Lock()
		calls, taken := s.takeLocked(n, req.Capacity-len(n.heldUnacked()), time.Now())
		wake := n.wake
		if len(calls) > 0 || len(resp.Cancel) > 0 || len(resp.Lost) > 0 || !time.Now().Before(deadline) {
			resp.Calls = calls
			s.mu.Unlock()
			if err := s.persist(taken...); err != nil {
				s.log.Error("persist", "err", err)
			}
			s.endPoll(n, false)
			if len(resp.Calls) == 0 && len(resp.Cancel) == 0 && len(resp.Lost) == 0 {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			writeJSON(w, r, http.StatusOK, resp)
			return
		}
		s.mu.Unlock()
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-wake:
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			// The poller went away (a killed daemon): it is not live any more.
			s.endPoll(n, true)
			return
		}
		t.Stop()
	}
}

func (n *node) heldUnacked() []*Call {
	var out []*Call
	for _, c := range n.held {
		if !c.acked {
			out = append(out, c)
		}
	}
	return out
}

func (s *Server) endPoll(n *node, gone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n.inflight--
	n.lastEnd = time.Now()
	if gone && n.inflight == 0 {
		n.lastEnd = time.Time{}
	}
}

// expireLocked requeues calls whose lease ran out and expires pending calls
// past their ttl.
func (s *Server) expireLocked(n *node, now time.Time) []*Call {
	var dirty []*Call
	for id, c := range n.held {
		if c.acked && now.After(c.leaseUntil) {
			delete(n.held, id)
			c.State, c.acked = "pending", false
			c.Attempt++
			heap.Push(&n.pending, c)
			dirty = append(dirty, c)
			s.log.Info("lease expired: redelivering", "node", n.id, "call", id, "attempt", c.Attempt)
		}
	}
	return dirty
}

// pollCallBudget is how many bytes of calls one poll response carries at
// most (the first call always goes): the rest of remote.MaxResponseBody is
// left for the lost and cancel lists.
const pollCallBudget = remote.MaxResponseBody - 1<<20

// wireSize is an upper bound on the JSON size of c in a poll response.
func wireSize(c *Call) int {
	return (len(c.Input)+2)/3*4 + 2*(len(c.ID)+len(c.Task)+len(c.Key)+len(c.Queue)+len(c.Digest)) + 512
}

// takeLocked hands out up to capacity pending calls, as many as fit in
// pollCallBudget.
func (s *Server) takeLocked(n *node, capacity int, now time.Time) ([]remote.WireCall, []*Call) {
	var out []remote.WireCall
	var taken []*Call
	size := 0
	for len(out) < capacity && n.pending.Len() > 0 {
		if len(out) > 0 && size+wireSize(n.pending[0]) > pollCallBudget {
			break // the next poll takes it
		}
		c := heap.Pop(&n.pending).(*Call)
		if c.State != "pending" {
			continue // cancelled while queued
		}
		if !c.startBy.IsZero() && now.After(c.startBy) {
			s.finishLocked(c, "expired", "start-by ttl passed while queued on the control plane")
			taken = append(taken, c)
			continue
		}
		n.nextSeq++
		c.seq, c.acked, c.leaseUntil = n.nextSeq, false, now.Add(s.lease(c))
		c.State = "leased"
		c.Deliveries++
		n.held[c.ID] = c
		wc := remote.WireCall{
			Seq: c.seq, ID: c.ID, Attempt: c.Attempt, Task: c.Task, Input: c.Input, Queue: c.Queue, Priority: c.Priority,
			Effect: c.Effect, IdempotencyKey: c.Key, LeaseMS: s.lease(c).Milliseconds(), MaxRunMS: c.MaxRunMS,
			Digest: c.Digest,
		}
		if !c.startBy.IsZero() {
			wc.StartByMS = max(c.startBy.Sub(now).Milliseconds(), 1)
		}
		out = append(out, wc)
		taken = append(taken, c)
		size += wireSize(c)
	}
	return out, taken
}

func (s *Server) finishLocked(c *Call, state, msg string) {
	c.State = state
	if c.Result == nil && state == "expired" {
		c.Result = &remote.Result{CallID: c.ID, Attempt: c.Attempt, Status: "expired", Error: msg}
		c.Result.Hash = remote.ResultHash(c.Result.Status, nil, msg)
		c.ResultAt = time.Now()
	}
	s.notifyLocked(nil)
}

// putResult applies one result and returns its HTTP status and the call to persist.
func (s *Server) putResult(nodeID string, res remote.Result) (int, *Call) {
	if res.Hash != remote.ResultHash(res.Status, res.Output, res.Error) {
		return http.StatusBadRequest, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[res.CallID]
	if c == nil || c.Node != nodeID {
		return http.StatusNotFound, nil
	}
	if c.Result != nil && c.State == "done" {
		if c.Result.Hash == res.Hash {
			c.Replays++
			return http.StatusOK, c
		}
		c.Conflicts++
		s.log.Warn("result conflict: a different result for a call that has one (first wins)", "node", nodeID, "call", c.ID, "attempt", res.Attempt)
		return http.StatusConflict, c
	}
	if c.State == "cancelled" || c.State == "expired" {
		return http.StatusGone, nil
	}
	if n := s.nodes[nodeID]; n != nil {
		delete(n.held, c.ID)
	}
	r := res
	c.Result, c.ResultAt, c.State = &r, time.Now(), "done"
	s.notifyLocked(nil)
	return http.StatusCreated, c
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
	code, c := s.putResult(r.PathValue("node"), res)
	if c != nil {
		if err := s.persist(c); err != nil {
			httpError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	if code == http.StatusBadRequest {
		httpError(w, code, "hash does not match status, output and error")
		return
	}
	w.WriteHeader(code)
}

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	var req remote.BatchRequest
	if err := readBody(r, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	var resp remote.BatchResponse
	var dirty []*Call
	for _, res := range req.Results {
		code, c := s.putResult(r.PathValue("node"), res)
		if c != nil {
			dirty = append(dirty, c)
		}
		resp.Items = append(resp.Items, remote.BatchItem{CallID: res.CallID, Attempt: res.Attempt, Status: code})
	}
	if err := s.persist(dirty...); err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, resp)
}

func (s *Server) handleNodeCalls(w http.ResponseWriter, r *http.Request) {
	want := map[string]bool{}
	for st := range strings.SplitSeq(r.URL.Query().Get("state"), ",") {
		want[st] = true
	}
	s.mu.Lock()
	var out remote.CallList
	for _, c := range s.calls {
		if c.Node == r.PathValue("node") && (len(want) == 0 || want[c.State] || want[""]) {
			out.Calls = append(out.Calls, remote.CallState{ID: c.ID, State: c.State, Attempt: c.Attempt})
		}
	}
	s.mu.Unlock()
	writeJSON(w, r, http.StatusOK, out)
}

// EnqueueRequest is the body of POST /api/v1/calls.
type EnqueueRequest struct {
	Calls []Call `json:"calls"`
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
	items, err := s.Enqueue(req.Calls)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"calls": items})
}

// Enqueue adds calls; an id that exists is not added again.
func (s *Server) Enqueue(in []Call) ([]EnqueueItem, error) {
	items := make([]EnqueueItem, len(in))
	var dirty []*Call
	s.mu.Lock()
	now := time.Now()
	touched := map[*node]bool{}
	for i := range in {
		c := in[i]
		switch {
		case c.ID == "" || strings.ContainsAny(c.ID, "/\x00") || len(c.ID) > 256:
			items[i] = EnqueueItem{ID: c.ID, Error: "id must be 1 to 256 characters without '/'"}
			continue
		case c.Node == "" || c.Task == "":
			items[i] = EnqueueItem{ID: c.ID, Error: "node and task are required"}
			continue
		case len(c.Input) > remote.MaxInput:
			items[i] = EnqueueItem{ID: c.ID, Error: fmt.Sprintf("input of %d bytes: the cloud link carries at most %d", len(c.Input), remote.MaxInput)}
			continue
		case c.Effect != "" && c.Effect != "idempotent" && c.Effect != "at_most_once":
			items[i] = EnqueueItem{ID: c.ID, Error: "effect must be idempotent or at_most_once"}
			continue
		case c.Digest != "" && !s.objs.has(c.Digest):
			items[i] = EnqueueItem{ID: c.ID, Error: fmt.Sprintf("digest %q: no such object (want sha256:HEX of an object put with outpost-cloud object put)", c.Digest)}
			continue
		}
		if old := s.calls[c.ID]; old != nil {
			items[i] = EnqueueItem{ID: c.ID, State: old.State}
			continue
		}
		s.order++
		nc := &Call{ID: c.ID, Node: c.Node, Task: c.Task, Input: c.Input, Queue: c.Queue, Priority: c.Priority, Effect: c.Effect,
			Key: c.Key, TTLMS: c.TTLMS, LeaseMS: c.LeaseMS, MaxRunMS: c.MaxRunMS, Digest: c.Digest,
			State: "pending", Attempt: 1, Order: s.order, Enqueued: time.Now()}
		if nc.TTLMS > 0 {
			nc.startBy = now.Add(time.Duration(nc.TTLMS) * time.Millisecond)
		}
		s.calls[nc.ID] = nc
		n := s.node(nc.Node)
		heap.Push(&n.pending, nc)
		touched[n] = true
		dirty = append(dirty, nc)
		items[i] = EnqueueItem{ID: nc.ID, Created: true, State: "pending"}
	}
	for n := range touched {
		s.notifyLocked(n)
	}
	s.mu.Unlock()
	return items, s.persist(dirty...)
}

func (s *Server) snapshot(c *Call) Call {
	cp := *c
	cp.Input = nil
	return cp
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	deadline := time.Now().Add(min(wait, 5*time.Minute))
	for {
		s.mu.Lock()
		c := s.calls[r.PathValue("id")]
		ch := s.changed
		if c == nil {
			s.mu.Unlock()
			httpError(w, http.StatusNotFound, "no call "+r.PathValue("id"))
			return
		}
		if c.Final() || !time.Now().Before(deadline) {
			cp := s.snapshot(c)
			s.mu.Unlock()
			writeJSON(w, r, http.StatusOK, cp)
			return
		}
		s.mu.Unlock()
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
	out := make([]Call, 0, len(req.IDs))
	s.mu.Lock()
	for _, id := range req.IDs {
		if c := s.calls[id]; c != nil {
			out = append(out, s.snapshot(c))
		}
	}
	s.mu.Unlock()
	writeJSON(w, r, http.StatusOK, map[string]any{"calls": out})
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	nodeID, state := r.URL.Query().Get("node"), r.URL.Query().Get("state")
	s.mu.Lock()
	out := []Call{}
	for _, c := range s.calls {
		if (nodeID == "" || c.Node == nodeID) && (state == "" || c.State == state) {
			out = append(out, s.snapshot(c))
		}
	}
	s.mu.Unlock()
	writeJSON(w, r, http.StatusOK, map[string]any{"calls": out})
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	c := s.calls[r.PathValue("id")]
	if c == nil {
		s.mu.Unlock()
		httpError(w, http.StatusNotFound, "no call "+r.PathValue("id"))
		return
	}
	if c.Final() {
		s.mu.Unlock()
		httpError(w, http.StatusConflict, "call is already "+c.State)
		return
	}
	n := s.node(c.Node)
	if _, held := n.held[c.ID]; held {
		delete(n.held, c.ID)
		n.cancels = append(n.cancels, c.ID)
	}
	c.State = "cancelled"
	s.notifyLocked(n)
	s.mu.Unlock()
	if err := s.persist(c); err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// NodeInfo describes one node for operators.
type NodeInfo struct {
	ID       string    `json:"id"`
	Boot     string    `json:"boot_id"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Polling  bool      `json:"polling"`
	Pending  int       `json:"pending"`
	Held     int       `json:"held"`
}

func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := []NodeInfo{}
	for _, n := range s.nodes {
		out = append(out, NodeInfo{ID: n.id, Boot: n.boot, LastSeen: n.lastSeen, Polling: n.inflight > 0, Pending: n.pending.Len(), Held: len(n.held)})
	}
	s.mu.Unlock()
	writeJSON(w, r, http.StatusOK, map[string]any{"nodes": out})
}

// Get returns a snapshot of a call (tests and tools).
func (s *Server) Get(id string) (Call, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[id]
	if c == nil {
		return Call{}, false
	}
	return s.snapshot(c), true
}

// WaitFinal waits until every id is final or ctx ends.
func (s *Server) WaitFinal(ctx context.Context, ids ...string) error {
	for {
		s.mu.Lock()
		left := 0
		for _, id := range ids {
			if c := s.calls[id]; c == nil || !c.Final() {
				left++
			}
		}
		ch := s.changed
		s.mu.Unlock()
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

// pendingHeap orders a node's pending calls: control queue, priority, order.
type pendingHeap []*Call

func (h pendingHeap) Len() int { return len(h) }
func (h pendingHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if (a.Queue == "control") != (b.Queue == "control") {
		return a.Queue == "control"
	}
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return a.Order < b.Order
}
func (h pendingHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *pendingHeap) Push(x any)   { c := x.(*Call); c.index = len(*h); *h = append(*h, c) }
func (h *pendingHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}

var _ heap.Interface = (*pendingHeap)(nil)
