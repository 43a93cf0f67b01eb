package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/xid"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// badgerStore is the embedded engine: one process holds every call in
// memory and writes each change through to badger (synced) before it is
// answered. Leases are measured on the process's monotonic clock and reset
// to a full lease when it restarts.
type badgerStore struct {
	db         *badger.DB
	log        *slog.Logger
	lease      time.Duration // default lease
	liveWindow time.Duration

	// Lock order: jobMu, then labelMu, then commitMu, then mu. msgMu
	// (device messages) is taken alone.
	msgMu   sync.Mutex
	jobMu   sync.Mutex
	labelMu sync.Mutex
	// commitMu guards the group commit of calls (persist): the queue of
	// writes and whether a writer is committing them.
	commitMu   sync.Mutex
	queue      []*commitReq
	committing bool
	commits    atomic.Int64 // group commits written
	mu         sync.Mutex
	calls      map[string]*Call
	byNode     map[string]*node
	order      uint64
	changedCh  chan struct{} // closed and replaced when any call changes state
	jobLeases  map[string]jobLease
	id         string // replicaID
}

// jobLease is who drives a job until when (badger: in memory, one process).
type jobLease struct {
	holder string
	until  time.Time
}

type node struct {
	id       string
	pending  queueSet
	held     map[string]*Call // delivered or leased
	nextSeq  uint64
	boot     string
	inflight int
	lastEnd  time.Time
	lastSeen time.Time
	wake     chan struct{}
	cancels  []string
	labels   map[string]string
}

var _ store = (*badgerStore)(nil)

// openBadger loads the state at dir.
func openBadger(dir string, opts Options) (*badgerStore, error) {
	bo := badger.DefaultOptions(dir).WithLogger(nil).WithSyncWrites(true).
		WithMemTableSize(8 << 20).WithNumMemtables(2).WithBlockCacheSize(16 << 20).WithValueLogFileSize(64 << 20).
		WithBaseTableSize(4 << 20).WithValueThreshold(1 << 20).WithNumCompactors(2)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open server state %s: %w", dir, err)
	}
	if err := stateFormat.OpenBadger(db, []byte("format/server"), nil, opts.Log); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open server state %s: %w", dir, err)
	}
	s := &badgerStore{db: db, log: opts.Log, lease: opts.Lease, liveWindow: opts.LiveWindow,
		calls: map[string]*Call{}, byNode: map[string]*node{}, changedCh: make(chan struct{}), jobLeases: map[string]jobLease{}, id: xid.New().String()}
	now := time.Now()
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte("call/")})
		defer func() { it.Close() }()
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
				n.pending.push(c)
			case "leased":
				c.acked, c.leaseUntil = true, now.Add(s.leaseOf(c))
				n.held[c.ID] = c
			}
		}
		it.Close()
		it = txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte(labelsPrefix)})
		for it.Rewind(); it.Valid(); it.Next() {
			n := s.node(strings.TrimPrefix(string(it.Item().Key()), labelsPrefix))
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &n.labels) }); err != nil {
				return fmt.Errorf("decode %s: %w", it.Item().Key(), err)
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

func (s *badgerStore) close() error { return s.db.Close() }

func (s *badgerStore) leaseOf(c *Call) time.Duration {
	if c.LeaseMS > 0 {
		return time.Duration(c.LeaseMS) * time.Millisecond
	}
	return s.lease
}

func (s *badgerStore) node(id string) *node {
	n := s.byNode[id]
	if n == nil {
		n = &node{id: id, held: map[string]*Call{}, wake: make(chan struct{})}
		s.byNode[id] = n
	}
	return n
}

func (s *badgerStore) notifyLocked(n *node) {
	close(s.changedCh)
	s.changedCh = make(chan struct{})
	if n != nil {
		close(n.wake)
		n.wake = make(chan struct{})
	}
}

func (s *badgerStore) nodeWake(id string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node(id).wake
}

func (s *badgerStore) replicaID() string { return s.id }

func (s *badgerStore) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changedCh
}

func (s *badgerStore) persist(cs ...*Call) error {
	if len(cs) == 0 {
		return nil
	}
	// Snapshots are taken and queued under commitMu, so the queue's order
	// is the calls' order of change and the last write of a call carries
	// its latest state.
	req := &commitReq{done: make(chan commitSignal, 1)}
	s.commitMu.Lock()
	s.mu.Lock()
	for _, c := range cs {
		b, err := json.Marshal(c)
		if err != nil {
			s.mu.Unlock()
			s.commitMu.Unlock()
			return err
		}
		req.keys, req.vals = append(req.keys, []byte("call/"+c.ID)), append(req.vals, b)
	}
	s.mu.Unlock()
	s.queue = append(s.queue, req)
	if !s.committing {
		s.committing = true
		req.done <- commitSignal{lead: true}
	}
	s.commitMu.Unlock()
	for {
		sig := <-req.done
		if !sig.lead {
			return sig.err
		}
		s.commitQueued()
	}
}

// commitReq is one persist waiting for a group commit; done says it is
// written (err) or that its writer commits the queue next (lead).
type commitReq struct {
	keys, vals [][]byte
	done       chan commitSignal
}

type commitSignal struct {
	err  error
	lead bool
}

// commitQueued is one round of the group commit: the writer leading it
// writes every queued request in one write batch and one sync, answers
// them, and hands the lead to the first request queued meanwhile (or ends
// the commit). Concurrent writers (a fleet's polls, each leasing a call)
// share syncs instead of waiting for one each, and none waits for more
// than the round before its own.
func (s *badgerStore) commitQueued() {
	s.commitMu.Lock()
	batch := s.queue
	s.queue = nil
	s.commitMu.Unlock()
	err := s.writeBatch(batch)
	s.commits.Add(1)
	for _, r := range batch {
		r.done <- commitSignal{err: err}
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if len(s.queue) == 0 {
		s.committing = false
		return
	}
	s.queue[0].done <- commitSignal{lead: true}
}

func (s *badgerStore) writeBatch(batch []*commitReq) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	// The last value of a key wins: a batch may hold a call twice.
	last := map[string][]byte{}
	var order []string
	for _, r := range batch {
		for i, k := range r.keys {
			if _, ok := last[string(k)]; !ok {
				order = append(order, string(k))
			}
			last[string(k)] = r.vals[i]
		}
	}
	for _, k := range order {
		if err := wb.Set([]byte(k), last[k]); err != nil {
			return fmt.Errorf("persist calls: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("persist calls: %w", err)
	}
	return s.db.Sync()
}

func (s *badgerStore) enqueue(_ context.Context, in []Call) ([]EnqueueItem, error) {
	items := make([]EnqueueItem, len(in))
	var dirty []*Call
	s.mu.Lock()
	now := time.Now()
	touched := map[*node]bool{}
	for i := range in {
		c := in[i]
		if old := s.calls[c.ID]; old != nil {
			items[i] = EnqueueItem{ID: c.ID, State: old.State}
			continue
		}
		s.order++
		nc := newCall(c, s.order)
		if nc.TTLMS > 0 {
			nc.startBy = now.Add(time.Duration(nc.TTLMS) * time.Millisecond)
		}
		s.calls[nc.ID] = nc
		n := s.node(nc.Node)
		n.pending.push(nc)
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

func (s *badgerStore) beginPoll(_ context.Context, id string, req *remote.PollRequest) (*pollTicket, remote.PollResponse, error) {
	var resp remote.PollResponse
	s.mu.Lock()
	n := s.node(id)
	now := time.Now()
	if n.boot != "" && n.boot != req.BootID && (n.inflight > 0 || now.Sub(n.lastEnd) < s.liveWindow) {
		s.mu.Unlock()
		return nil, resp, &pollRefusal{code: http.StatusConflict, msg: "another poller (boot " + n.boot + ") serves node " + n.id, retryAfter: int(s.liveWindow/time.Second) + 1}
	}
	if req.AckThrough > n.nextSeq {
		s.mu.Unlock()
		return nil, resp, &pollRefusal{code: http.StatusGone, msg: fmt.Sprintf("ack_through %d is past the last seq %d: the session is gone, reconcile", req.AckThrough, n.nextSeq)}
	}
	n.boot, n.lastSeen = req.BootID, now
	n.inflight++
	var dirty []*Call
	// Leases that ran out first: a renewal arriving after its lease expired
	// (a node paused or cut off longer than the lease) does not revive it;
	// the node hears the call is lost and gets it again as a new attempt.
	for cid, c := range n.held {
		if c.acked && now.After(c.leaseUntil) {
			delete(n.held, cid)
			c.State, c.acked = "pending", false
			c.Attempt++
			n.pending.push(c)
			dirty = append(dirty, c)
			s.log.Info("lease expired: redelivering", "node", n.id, "call", cid, "attempt", c.Attempt)
		}
	}
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
			n.pending.push(c)
		}
	}
	resp.Cancel = n.cancels
	n.cancels = nil
	for _, cid := range req.Renew {
		c := n.held[cid]
		if c == nil {
			if c := s.calls[cid]; c != nil && c.State == "cancelled" {
				if !slices.Contains(resp.Cancel, cid) { // listed once
					resp.Cancel = append(resp.Cancel, cid)
				}
			} else if c == nil || c.State != "done" {
				resp.Lost = append(resp.Lost, cid)
			}
			continue
		}
		c.leaseUntil = now.Add(s.leaseOf(c))
	}
	s.mu.Unlock()
	if err := s.persist(dirty...); err != nil {
		s.log.Error("persist", "err", err)
	}
	return &pollTicket{node: id, req: req, n: n}, resp, nil
}

func (s *badgerStore) take(_ context.Context, t *pollTicket) ([]remote.WireCall, error) {
	s.mu.Lock()
	n, now := t.n, time.Now()
	capacity := t.req.Capacity
	for _, c := range n.held {
		if !c.acked {
			capacity--
		}
	}
	var out []remote.WireCall
	var taken []*Call
	size := 0
	n.pending.drain(advertisedBy(t.req), now, func(c *Call) verdict {
		switch {
		case len(out) >= capacity:
			return stop
		case c.State != "pending":
			return drop // cancelled while queued
		case !c.startBy.IsZero() && now.After(c.startBy):
			c.State, c.Result, c.ResultAt = "expired", expiredResult(c), time.Now()
			s.notifyLocked(nil)
			taken = append(taken, c)
			return drop
		case len(out) > 0 && size+wireSize(c) > pollCallBudget:
			return stop // the next poll takes it
		}
		n.nextSeq++
		c.seq, c.acked, c.leaseUntil = n.nextSeq, false, now.Add(s.leaseOf(c))
		c.State = "leased"
		c.Deliveries++
		n.held[c.ID] = c
		var startBy int64
		if !c.startBy.IsZero() {
			startBy = max(c.startBy.Sub(now).Milliseconds(), 1)
		}
		out = append(out, wireCall(c, c.seq, s.leaseOf(c), startBy))
		taken = append(taken, c)
		size += wireSize(c)
		return deliver
	})
	s.mu.Unlock()
	return out, s.persist(taken...)
}

func (s *badgerStore) endPoll(t *pollTicket, gone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := t.n
	n.inflight--
	n.lastEnd = time.Now()
	if gone && n.inflight == 0 {
		n.lastEnd = time.Time{}
	}
}

func (s *badgerStore) putResults(_ context.Context, nodeID string, rs []remote.Result) ([]int, error) {
	codes := make([]int, len(rs))
	var dirty []*Call
	s.mu.Lock()
	for i, res := range rs {
		code, c := s.putResultLocked(nodeID, res)
		codes[i] = code
		if c != nil {
			dirty = append(dirty, c)
		}
	}
	s.mu.Unlock()
	return codes, s.persist(dirty...)
}

// putResultLocked applies one result and returns its HTTP status and the
// call to persist.
func (s *badgerStore) putResultLocked(nodeID string, res remote.Result) (int, *Call) {
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
	if n := s.byNode[nodeID]; n != nil {
		delete(n.held, c.ID)
	}
	r := res
	c.Result, c.ResultAt, c.State = &r, time.Now(), "done"
	s.notifyLocked(nil)
	return http.StatusCreated, c
}

func (s *badgerStore) nodeCalls(_ context.Context, nodeID string, want map[string]bool) ([]remote.CallState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []remote.CallState
	for _, c := range s.calls {
		if c.Node == nodeID && (len(want) == 0 || want[c.State]) {
			out = append(out, remote.CallState{ID: c.ID, State: c.State, Attempt: c.Attempt})
		}
	}
	return out, nil
}

func (s *badgerStore) get(_ context.Context, ids []string) ([]Call, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, 0, len(ids))
	for _, id := range ids {
		if c := s.calls[id]; c != nil {
			out = append(out, snapshot(c))
		}
	}
	return out, nil
}

func (s *badgerStore) inputs(_ context.Context, ids []string) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]byte, len(ids))
	for _, id := range ids {
		if c := s.calls[id]; c != nil {
			out[id] = c.Input
		}
	}
	return out, nil
}

func (s *badgerStore) list(_ context.Context, f callFilter) ([]Call, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Call{}
	for _, c := range s.calls {
		if f.match(c) {
			out = append(out, snapshot(c))
		}
	}
	return out, nil
}

func (s *badgerStore) cancel(_ context.Context, id string) error {
	s.mu.Lock()
	c := s.calls[id]
	if c == nil {
		s.mu.Unlock()
		return errNoCall
	}
	if c.Final() {
		s.mu.Unlock()
		return fmt.Errorf("call is already %s: %w", c.State, errFinal)
	}
	n := s.node(c.Node)
	if _, held := n.held[c.ID]; held {
		delete(n.held, c.ID)
		n.cancels = append(n.cancels, c.ID)
	}
	c.State = "cancelled"
	s.notifyLocked(n)
	s.mu.Unlock()
	return s.persist(c)
}

func (s *badgerStore) nodes(context.Context) ([]NodeInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []NodeInfo{}
	now := time.Now()
	for _, n := range s.byNode {
		out = append(out, NodeInfo{ID: n.id, Boot: n.boot, LastSeen: n.lastSeen, Polling: n.inflight > 0, Pending: n.pending.Len(), Held: len(n.held),
			Labels: maps.Clone(n.labels), Online: n.inflight > 0 || !n.lastSeen.IsZero() && now.Sub(n.lastSeen) < onlineWindow})
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// labelsPrefix keys a node's labels (JSON) in badger.
const labelsPrefix = "labels/"

func (s *badgerStore) setLabels(_ context.Context, id string, set map[string]string, remove []string) (map[string]string, error) {
	// labelMu orders the writes of labels.
	s.labelMu.Lock()
	defer s.labelMu.Unlock()
	s.mu.Lock()
	n := s.node(id)
	labels := maps.Clone(n.labels)
	s.mu.Unlock()
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, set)
	for _, k := range remove {
		delete(labels, k)
	}
	b, err := json.Marshal(labels)
	if err != nil {
		return nil, err
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(labelsPrefix+id), b) }); err != nil {
		return nil, fmt.Errorf("store labels of %s: %w", id, err)
	}
	s.mu.Lock()
	n.labels = labels
	s.mu.Unlock()
	return maps.Clone(labels), nil
}

func (s *badgerStore) leaseJob(_ context.Context, job, holder string, ttl time.Duration, release bool) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, now := s.jobLeases[job], time.Now()
	switch {
	case release:
		if l.holder == holder {
			delete(s.jobLeases, job)
		}
		return false, nil
	case l.holder != "" && l.holder != holder && now.Before(l.until):
		return false, nil
	}
	s.jobLeases[job] = jobLease{holder: holder, until: now.Add(ttl)}
	return true, nil
}

func (s *badgerStore) createJob(_ context.Context, j Job) (bool, error) {
	s.jobMu.Lock()
	defer s.jobMu.Unlock()
	key := []byte("job/" + j.ID)
	created := false
	err := s.db.Update(func(txn *badger.Txn) error {
		if _, err := txn.Get(key); err == nil {
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		created = true
		return txn.Set(key, b)
	})
	if err != nil {
		return false, fmt.Errorf("store job: %w", err)
	}
	s.changedJob()
	return created, nil
}

func (s *badgerStore) getJob(_ context.Context, id string) (Job, error) {
	var j Job
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte("job/" + id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return errNoJob
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return json.Unmarshal(v, &j) })
	})
	return j, err
}

func (s *badgerStore) listJobs(context.Context) ([]Job, error) {
	out := []Job{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte("job/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var j Job
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &j) }); err != nil {
				return fmt.Errorf("decode %s: %w", it.Item().Key(), err)
			}
			out = append(out, j)
		}
		return nil
	})
	return out, err
}

func (s *badgerStore) updateJob(ctx context.Context, id string, f func(*Job) bool) (bool, error) {
	// jobMu serializes read-modify-write of jobs; badger's own conflict
	// detection would otherwise fail one of two writers.
	s.jobMu.Lock()
	defer s.jobMu.Unlock()
	j, err := s.getJob(ctx, id)
	if err != nil || !f(&j) {
		return false, err
	}
	b, err := json.Marshal(j)
	if err != nil {
		return false, err
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("job/"+id), b) }); err != nil {
		return false, fmt.Errorf("store job: %w", err)
	}
	s.changedJob()
	return true, nil
}

// changedJob wakes those who follow jobs (their event streams).
func (s *badgerStore) changedJob() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notifyLocked(nil)
}

// Device messages: keys msg/{node}/{seq} (seq big-endian, so a node's
// messages iterate in order), msgid/{node}/{id} (empty, with the TTL
// messageIDTTL) and msgseq/{node} (the last seq given). msgMu orders
// their writers, so no transaction conflicts on msgseq.

// messageChunk bounds the bytes of messages written in one badger
// transaction (a batch is written in several).
const messageChunk = 512 << 10

func msgPrefix(node string) []byte { return []byte("msg/" + node + "/") }

func msgKey(node string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(msgPrefix(node), seq)
}

func (s *badgerStore) storeMessages(_ context.Context, node string, msgs []remote.Message) (remote.MessagesResponse, error) {
	s.msgMu.Lock()
	defer s.msgMu.Unlock()
	var resp remote.MessagesResponse
	seen := map[string]bool{}
	for len(msgs) > 0 {
		n, size := 0, 0
		for n < len(msgs) && (n == 0 || size+len(msgs[n].Payload) <= messageChunk) {
			size += len(msgs[n].Payload)
			n++
		}
		var chunk remote.MessagesResponse
		err := s.db.Update(func(txn *badger.Txn) error {
			chunk = remote.MessagesResponse{}
			seqKey := []byte("msgseq/" + node)
			var seq uint64
			if item, err := txn.Get(seqKey); err == nil {
				if err := item.Value(func(v []byte) error { seq = binary.BigEndian.Uint64(v); return nil }); err != nil {
					return err
				}
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			now := time.Now().UTC()
			for _, m := range msgs[:n] {
				idKey := []byte("msgid/" + node + "/" + m.ID)
				if _, err := txn.Get(idKey); err == nil || seen[m.ID] {
					chunk.Duplicates++
					continue
				} else if !errors.Is(err, badger.ErrKeyNotFound) {
					return err
				}
				seen[m.ID] = true
				seq++
				v, err := json.Marshal(StoredMessage{Seq: seq, Node: node, ID: m.ID, Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Time: m.Time, Received: now})
				if err != nil {
					return err
				}
				if err := txn.Set(msgKey(node, seq), v); err != nil {
					return err
				}
				if err := txn.SetEntry(badger.NewEntry(idKey, nil).WithTTL(messageIDTTL)); err != nil {
					return err
				}
				chunk.Stored++
			}
			return txn.Set(seqKey, binary.BigEndian.AppendUint64(nil, seq))
		})
		if err != nil {
			return remote.MessagesResponse{}, fmt.Errorf("store messages of %s: %w", node, err)
		}
		resp.Stored += chunk.Stored
		resp.Duplicates += chunk.Duplicates
		msgs = msgs[n:]
	}
	return resp, nil // the DB syncs every write (SyncWrites)
}

func (s *badgerStore) messages(_ context.Context, node string, after uint64, limit int) ([]StoredMessage, error) {
	prefix := []byte("msg/")
	start := prefix
	if node != "" {
		prefix, start = msgPrefix(node), msgKey(node, after+1)
	}
	out := []StoredMessage{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: prefix})
		defer it.Close()
		for it.Seek(start); it.Valid() && len(out) < limit; it.Next() {
			var m StoredMessage
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &m) }); err != nil {
				return fmt.Errorf("decode %q: %w", it.Item().Key(), err)
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

func (s *badgerStore) consumeMessages(_ context.Context, node string, through uint64) (int, error) {
	s.msgMu.Lock()
	defer s.msgMu.Unlock()
	total := 0
	for {
		n := 0
		err := s.db.Update(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: msgPrefix(node)})
			var keys [][]byte
			for it.Rewind(); it.Valid() && len(keys) < 1000; it.Next() {
				k := it.Item().KeyCopy(nil)
				if binary.BigEndian.Uint64(k[len(k)-8:]) > through {
					break
				}
				keys = append(keys, k)
			}
			it.Close()
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("consume messages of %s: %w", node, err)
		}
		total += n
		if n < 1000 {
			return total, nil
		}
	}
}
