package calls

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/format"
	"github.com/outpost-edge/outpost/internal/store"
)

// Record is a journaled call as it is stored: key "calls/r/<id>" holds its
// JSON; "calls/k/<idempotency key>" holds the id when the key differs from
// the id.
type Record struct {
	ID       string `json:"id"`
	Task     string `json:"task"`
	Input    []byte `json:"input,omitempty"` // dropped once the call finishes
	Source   Source `json:"source"`
	Queue    string `json:"queue,omitempty"`
	Priority int    `json:"priority,omitempty"`
	// Labels are the call's (Call.Labels); absent from records of calls
	// without labels and from those journaled before calls had them.
	Labels  map[string]string `json:"labels,omitempty"`
	Key     string            `json:"key,omitempty"`
	Effect  Effect            `json:"effect"`
	Attempt int               `json:"attempt"`
	Runs    int               `json:"runs"` // STARTED writes: an upper bound on executions
	State   State             `json:"state"`
	Result  *Result           `json:"result,omitempty"`
	// ReplyTo is where the result goes besides the journal: the reply
	// topic of an MQTT route ("" for cloud and admin calls).
	ReplyTo string `json:"reply_to,omitempty"`
	// Digest is the call's Digest: the module a recovered call fetches.
	Digest string `json:"digest,omitempty"`
	// Parent is the call whose call_async made this one (Call.Parent).
	Parent string `json:"parent,omitempty"`
	// Snapshot ("sha256:HEX" in the snapshot store) is the state a
	// suspended call kept and Waits the calls it waits for, with their
	// results once finished; both stay while its resume step runs, so a
	// crash runs that step again, and go when it finishes.
	Snapshot  string    `json:"snapshot,omitempty"`
	Waits     []Wait    `json:"waits,omitempty"`
	Suspended time.Time `json:"suspended,omitzero"` // when it last suspended (wall clock, for people)
	// StartByMS and MaxRunMS are relative: measured from receipt on the
	// node's monotonic clock, and from the restart after a crash.
	StartByMS int64 `json:"start_by_ms,omitempty"`
	MaxRunMS  int64 `json:"max_run_ms,omitempty"`
	// DeadlineClock is the call's Deadline on the journal clock
	// (Journal.Clock): it bounds the whole call, suspended steps included,
	// across restarts; time while the daemon is down does not count, as
	// nothing is timed by the wall clock. Zero: no deadline.
	DeadlineClock time.Duration `json:"deadline_clock_ns,omitempty"`
	// Wall-clock times (JournalOptions.Wall), for people only: nothing
	// is timed by them.
	Received time.Time `json:"received"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	Reported time.Time `json:"reported,omitzero"`
	// Journal-clock stamps (Journal.Clock) of receipt and report:
	// recovery order and retention use these. Zero in records written
	// before the journal clock existed: such a record counts as received
	// and reported at clock zero, when this version first opened the
	// journal, so it is kept a full retention from the upgrade.
	ReceivedClock time.Duration `json:"received_clock_ns,omitempty"`
	ReportedClock time.Duration `json:"reported_clock_ns,omitempty"`
}

// clone returns a copy of r that later changes to r leave as it is (Waits
// is copied; the other fields are replaced, never changed in place), to
// encode once j.mu is released. j.mu is held.
func (r *Record) clone() *Record {
	cp := *r
	cp.Waits = slices.Clone(r.Waits)
	return &cp
}

func (r *Record) resultBytes() int64 {
	if r.Result == nil {
		return 0
	}
	return int64(len(r.Result.Output) + len(r.Result.Error))
}

// JournalOptions tune a Journal.
type JournalOptions struct {
	// SyncEach makes every write its own fsync (the baseline group commit
	// is measured against). Default: group commit.
	SyncEach bool
	// MaxBatch bounds writes per group commit; zero: 1024.
	MaxBatch int
	// Retention keeps reported records (the dedupe and results cache) at
	// least this long, measured on the journal clock (Journal.Clock), not
	// the wall clock; zero: 24h.
	Retention time.Duration
	// CompactEvery is how often expired records are removed; zero: 1h.
	CompactEvery time.Duration
	// Namespace, when set, keeps this journal's keys apart from other
	// journals in the same store (under "ns/<namespace>/calls/"); empty:
	// the daemon's own keys ("calls/"). It must not contain '/'. Tests run
	// a fleet of journals in one store with it.
	Namespace string
	// Wall is the wall clock, read only for the times shown to people
	// (Record.Received, Started, Finished, Reported); nil: time.Now. No
	// timing depends on it.
	Wall func() time.Time

	// mono, when set (tests), replaces the monotonic time since open.
	mono func() time.Duration
}

type kv struct {
	key, val []byte // val nil: delete
}

type commitReq struct {
	kvs []kv
	// build, when set, adds writes decided by the committer at write time
	// (compaction: see Compact).
	build func() []kv
	done  chan error // nil: asynchronous (no fsync wait)
	after func()     // run by the committer once the write is applied
	// notify, when set, gets the outcome (after the fsync) on the journal's
	// completion goroutine, never on the committer: it may write again.
	notify func(error)
}

// Journal is the durable log of calls in the state store. Writes go
// through one committer goroutine that applies everything waiting in one
// badger batch, on disk when written (the store syncs every write): one
// fsync for all the writers that wait (group commit). Unreported records
// are mirrored in memory.
//
// Lock order: Durable.mu is not held while waiting for a commit; j.mu
// guards the in-memory mirror only and is never held across a commit.
//
// Retention is measured on the journal clock: the monotonic time the
// journal has been open, summed over every run. Its value is written with
// every group commit and at least every clockEvery, so a crash loses at
// most that much of it, which only keeps records longer; the wall clock
// (a dead RTC at 1970, an NTP step, a clock set back) never times
// anything.
type Journal struct {
	db   *store.DB
	opts JournalOptions
	log  *slog.Logger
	m    *journalMetrics

	// Keys of this journal (JournalOptions.Namespace).
	prefixRecord, prefixKey, clockKey []byte
	// The journal clock is clockBase (its persisted value at open) plus
	// the monotonic time since opened.
	clockBase time.Duration
	opened    time.Time

	reqs chan *commitReq
	stop chan struct{}
	done chan struct{}
	once sync.Once

	stopCompact, compactDone chan struct{}

	// Completions of asynchronous commits (commitAsync), run in order by
	// one goroutine owned by the journal (completeLoop).
	cbMu   sync.Mutex
	cbq    []func()
	cbWake chan struct{}
	cbDone chan struct{}

	// fault, when set (tests), fails commits: a full disk.
	fault func() error

	mu           sync.Mutex
	recs         map[string]*Record // unreported records by id
	keys         map[string]string  // idempotency key → id, unreported records
	outbox       []*Record          // finished, in finish order; reported ones are skipped lazily
	pendingBytes int64
	pendingCount int
}

// journalFormat is the format of the journal's records (Record and the
// keys above), versioned apart from the state store under
// "<prefix>format" (docs/architecture.md, "Format versions").
//
// Version 2 added the suspended state and the fields of suspended calls
// and of their dependencies (Parent, Snapshot, Waits, Suspended): a
// version 1 record is a version 2 record, so the step rewrites nothing,
// and a binary that reads only version 1 refuses a journal that may hold
// suspended calls.
var journalFormat = func() *format.Store {
	f := format.New("call journal", 2)
	f.Register(format.Step{From: 1, What: "suspended calls", Txn: func(*badger.Txn) error { return nil }})
	return f
}()

// clockEvery bounds how long the journal clock goes unsaved while nothing
// is written (it is saved with every group commit besides).
const clockEvery = time.Minute

// journalPrefix is where a journal's keys live: "calls/" for the daemon's
// journal, "ns/<namespace>/calls/" for a namespaced one.
func journalPrefix(namespace string) (string, error) {
	if namespace == "" {
		return "calls/", nil
	}
	if strings.Contains(namespace, "/") {
		return "", fmt.Errorf("journal namespace %q: must not contain '/'", namespace)
	}
	return "ns/" + namespace + "/calls/", nil
}

// OpenJournal starts a journal on db. Close stops it; db stays open. It
// reads the journal clock saved by the last run; a bad namespace or an
// unreadable clock is an error.
func OpenJournal(db *store.DB, opts JournalOptions, log *slog.Logger, reg prometheus.Registerer) (*Journal, error) {
	prefix, err := journalPrefix(opts.Namespace)
	if err != nil {
		return nil, err
	}
	if opts.Wall == nil {
		opts.Wall = time.Now
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.Retention <= 0 {
		opts.Retention = 24 * time.Hour
	}
	if opts.CompactEvery <= 0 {
		opts.CompactEvery = time.Hour
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	j := &Journal{
		db: db, opts: opts, log: log, m: newJournalMetrics(reg),
		reqs: make(chan *commitReq, 4096), stop: make(chan struct{}), done: make(chan struct{}),
		stopCompact: make(chan struct{}), compactDone: make(chan struct{}),
		cbWake: make(chan struct{}, 1), cbDone: make(chan struct{}),
		recs: map[string]*Record{}, keys: map[string]string{},
		prefixRecord: []byte(prefix + "r/"), prefixKey: []byte(prefix + "k/"), clockKey: []byte(prefix + "clock"),
	}
	if err := journalFormat.OpenBadger(db.Badger(), []byte(prefix+"format"), []byte(prefix), log); err != nil {
		return nil, err
	}
	if j.clockBase, err = j.loadClock(); err != nil {
		return nil, err
	}
	j.opened = time.Now()
	go j.run()
	go j.compactLoop()
	go j.completeLoop()
	return j, nil
}

// Clock is the journal clock: how long this journal has been open, over
// all its runs (monotonic within a run, saved across runs).
func (j *Journal) Clock() time.Duration {
	if j.opts.mono != nil {
		return j.clockBase + j.opts.mono()
	}
	return j.clockBase + time.Since(j.opened)
}

// stamp is the journal clock as a record stamp: never zero, which marks
// records from before the clock.
func (j *Journal) stamp() time.Duration { return max(j.Clock(), 1) }

func (j *Journal) loadClock() (time.Duration, error) {
	var d time.Duration
	err := j.db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(j.clockKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("%d bytes, want 8", len(v))
			}
			d = time.Duration(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("read journal clock %s: %w", j.clockKey, err)
	}
	return d, nil
}

func (j *Journal) clockKV() kv {
	return kv{key: j.clockKey, val: binary.BigEndian.AppendUint64(nil, uint64(j.Clock()))}
}

// completeLoop runs the completions of asynchronous commits in commit
// order. It ends once the committer has stopped and nothing is left.
func (j *Journal) completeLoop() {
	defer close(j.cbDone)
	for {
		j.cbMu.Lock()
		q := j.cbq
		j.cbq = nil
		j.cbMu.Unlock()
		for _, f := range q {
			f()
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-j.cbWake:
		case <-j.done:
			j.cbMu.Lock()
			left := len(j.cbq)
			j.cbMu.Unlock()
			if left == 0 {
				return
			}
		}
	}
}

func (j *Journal) complete(f func()) {
	j.cbMu.Lock()
	j.cbq = append(j.cbq, f)
	j.cbMu.Unlock()
	select {
	case j.cbWake <- struct{}{}:
	default:
	}
}

// compactLoop saves the journal clock every clockEvery (a Flush writes
// it) and compacts every CompactEvery.
func (j *Journal) compactLoop() {
	defer close(j.compactDone)
	t := time.NewTicker(j.opts.CompactEvery)
	defer t.Stop()
	ct := time.NewTicker(min(clockEvery, j.opts.CompactEvery))
	defer ct.Stop()
	for {
		select {
		case <-j.stopCompact:
			return
		case <-ct.C:
			if err := j.Flush(); err != nil {
				j.log.Warn("journal clock not saved", "err", err)
			}
		case <-t.C:
			if n, err := j.Compact(context.Background()); err != nil {
				j.log.Warn("journal compaction failed", "err", err)
			} else if n > 0 {
				j.log.Debug("journal compacted", "keys", n)
			}
		}
	}
}

// Close flushes pending writes and stops the committer.
func (j *Journal) Close() error {
	j.once.Do(func() {
		close(j.stopCompact)
		<-j.compactDone
		close(j.stop)
	})
	<-j.done
	<-j.cbDone
	return nil
}

func (j *Journal) run() {
	defer close(j.done)
	batch := make([]*commitReq, 0, j.opts.MaxBatch)
	for {
		select {
		case r := <-j.reqs:
			batch = append(batch[:0], r)
		fill:
			for len(batch) < j.opts.MaxBatch && !j.opts.SyncEach {
				select {
				case r := <-j.reqs:
					batch = append(batch, r)
				default:
					break fill
				}
			}
			j.apply(batch)
		case <-j.stop:
			for {
				select {
				case r := <-j.reqs:
					j.apply([]*commitReq{r})
				default:
					if err := j.write(nil); err != nil { // saves the clock
						j.log.Warn("journal: final clock write failed", "err", err)
					}
					return
				}
			}
		}
	}
}

// apply writes a batch in one badger write batch: one fsync.
func (j *Journal) apply(batch []*commitReq) {
	start := time.Now()
	err := j.write(batch)
	if err == nil {
		j.m.syncs.Inc()
	}
	if err != nil {
		j.m.errors.Inc()
		j.log.Error("journal write failed", "writes", len(batch), "err", err)
	}
	j.m.batch.Observe(float64(len(batch)))
	j.m.latency.Observe(time.Since(start).Seconds())
	for _, r := range batch {
		if r.after != nil {
			r.after()
		}
		if r.done != nil {
			r.done <- err
		}
		if r.notify != nil {
			notify := r.notify
			j.complete(func() { notify(err) })
		}
	}
}

func (j *Journal) write(batch []*commitReq) error {
	if j.fault != nil {
		if err := j.fault(); err != nil {
			return fmt.Errorf("journal write: %w", err)
		}
	}
	wb := j.db.Badger().NewWriteBatch()
	defer wb.Cancel()
	// The clock goes with every batch, read after every stamp in it was
	// taken: a saved stamp is never ahead of the saved clock.
	clock := j.clockKV()
	if err := wb.Set(clock.key, clock.val); err != nil {
		return fmt.Errorf("journal write: clock: %w", err)
	}
	n := 0
	for _, r := range batch {
		kvs := r.kvs
		if r.build != nil {
			kvs = append(kvs, r.build()...)
		}
		for _, e := range kvs {
			var err error
			if e.val == nil {
				err = wb.Delete(e.key)
			} else {
				err = wb.Set(e.key, e.val)
			}
			if err != nil {
				return fmt.Errorf("journal write: %w", err)
			}
			n++
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("journal write: %w", err)
	}
	j.m.writes.Add(float64(n))
	return nil
}

// commit queues kvs; if durable it waits until they are on disk.
func (j *Journal) commit(durable bool, kvs ...kv) error {
	r := &commitReq{kvs: kvs}
	if !durable {
		return j.enqueue(r)
	}
	r.done = make(chan error, 1)
	return j.wait(r)
}

// enqueue queues r and returns without waiting for it to be written.
func (j *Journal) enqueue(r *commitReq) error {
	select {
	case j.reqs <- r:
		return nil
	case <-j.done:
		return errJournalClosed
	}
}

// wait queues r (r.done set) and waits until its writes are on disk.
func (j *Journal) wait(r *commitReq) error {
	select {
	case j.reqs <- r:
	case <-j.done:
		return errJournalClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-j.done:
		// The committer drains the queue before it stops.
		select {
		case err := <-r.done:
			return err
		default:
			return errJournalClosed
		}
	}
}

// commitAsync queues kvs and returns at once; notify gets the outcome once
// they are on disk (or the write failed), on the completion goroutine. It
// never blocks: on a closed journal or a full commit queue notify runs at
// once on the caller's goroutine with an error (ErrJournalBusy for a full
// queue, which the MQTT intake answers by not acknowledging: the broker
// delivers the message again).
func (j *Journal) commitAsync(notify func(error), kvs ...kv) {
	r := &commitReq{kvs: kvs, notify: notify}
	select {
	case <-j.done:
		notify(errJournalClosed)
		return
	default:
	}
	select {
	case j.reqs <- r:
	case <-j.done:
		notify(errJournalClosed)
	default:
		notify(ErrJournalBusy)
	}
}

// Flush waits until every write queued before it is on disk.
func (j *Journal) Flush() error { return j.commit(true) }

var errJournalClosed = errors.New("journal closed")

func (j *Journal) recordKey(id string) []byte {
	return append(append([]byte{}, j.prefixRecord...), id...)
}
func (j *Journal) idemKey(k string) []byte { return append(append([]byte{}, j.prefixKey...), k...) }

func (j *Journal) recordKV(r *Record) (kv, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return kv{}, fmt.Errorf("encode journal record %s: %w", r.ID, err)
	}
	return kv{key: j.recordKey(r.ID), val: b}, nil
}

// load reads a record from disk; nil, nil if there is none.
func (j *Journal) load(id string) (*Record, error) {
	var r *Record
	err := j.db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(j.recordKey(id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := item.Value(func(v []byte) error {
			r = new(Record)
			return json.Unmarshal(v, r)
		}); err != nil {
			r = j.unreadable(id, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read journal record %s: %w", id, err)
	}
	return r, nil
}

// unreadable stands in for a record whose stored value cannot be read or
// decoded (a corrupt value): nobody knows whether the call ran, so it is
// never run again; a redelivery of it is answered with an interrupted
// result, written over the bad value.
func (j *Journal) unreadable(id string, err error) *Record {
	j.m.corrupt.Inc()
	j.log.Error("journal record unreadable: skipped; a redelivery of this call is reported interrupted, not run", "call", id, "err", err)
	return &Record{
		ID: id, Key: id, Attempt: 1, State: Reported,
		Result: &Result{Status: StatusInterrupted, Error: "the node's journal record of this call was unreadable; it is not run again"},
	}
}

func (j *Journal) loadKey(key string) (string, error) {
	var id string
	err := j.db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(j.idemKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		id = string(v)
		return err
	})
	return id, err
}

// Get returns a copy of the record of id, from memory or disk; nil if unknown.
func (j *Journal) Get(id string) (*Record, error) {
	j.mu.Lock()
	if r := j.recs[id]; r != nil {
		cp := *r
		j.mu.Unlock()
		return &cp, nil
	}
	j.mu.Unlock()
	return j.load(id)
}

// List returns up to limit records in id order (limit 0: all).
func (j *Journal) List(ctx context.Context, limit int) ([]*Record, error) {
	var out []*Record
	err := j.db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: j.prefixRecord})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			r := new(Record)
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, r) }); err != nil {
				// One bad value must not keep the daemon from starting.
				j.unreadable(string(bytes.TrimPrefix(it.Item().Key(), j.prefixRecord)), err)
				continue
			}
			out = append(out, r)
			if limit > 0 && len(out) >= limit {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list journal: %w", err)
	}
	// Present the in-memory view of unreported records.
	j.mu.Lock()
	for i, r := range out {
		if m := j.recs[r.ID]; m != nil {
			cp := *m
			out[i] = &cp
		}
	}
	j.mu.Unlock()
	return out, nil
}

// Outbox returns up to max finished, unreported records whose source kind
// is kind, oldest first, and the outbox totals (all kinds).
func (j *Journal) Outbox(kind string, max int) (recs []*Record, count int, bytes int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	// Drop reported entries from the front.
	i := 0
	for i < len(j.outbox) && j.outbox[i].State != Finished {
		i++
	}
	if i > 0 {
		j.outbox = append(j.outbox[:0], j.outbox[i:]...)
	}
	for _, r := range j.outbox {
		if len(recs) >= max {
			break
		}
		if r.State == Finished && r.Source.Kind == kind {
			cp := *r
			recs = append(recs, &cp)
		}
	}
	return recs, j.pendingCount, j.pendingBytes
}

// OutboxBytes is the size of results waiting to be reported.
func (j *Journal) OutboxBytes() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.pendingBytes
}

// addOutboxLocked puts a finished record in the outbox.
func (j *Journal) addOutboxLocked(r *Record) {
	j.outbox = append(j.outbox, r)
	j.pendingCount++
	j.pendingBytes += r.resultBytes()
	j.m.outboxRecords.Set(float64(j.pendingCount))
	j.m.outboxBytes.Set(float64(j.pendingBytes))
}

// MarkReported records that the results of ids reached their receiver.
// The write is not waited for: a crash before it lands only sends the
// same result again, which receivers accept as a replay.
func (j *Journal) MarkReported(ids ...string) error {
	var (
		kvs  []kv
		gone []*Record
	)
	now, clock := j.opts.Wall(), j.stamp()
	j.mu.Lock()
	for _, id := range ids {
		r := j.recs[id]
		if r == nil || r.State != Finished {
			continue
		}
		r.State, r.Reported, r.ReportedClock = Reported, now, clock
		j.pendingCount--
		j.pendingBytes -= r.resultBytes()
		gone = append(gone, r)
		e, err := j.recordKV(r)
		if err != nil {
			j.mu.Unlock()
			return err
		}
		kvs = append(kvs, e)
	}
	j.m.outboxRecords.Set(float64(j.pendingCount))
	j.m.outboxBytes.Set(float64(j.pendingBytes))
	j.mu.Unlock()
	if len(kvs) == 0 {
		return nil
	}
	return j.enqueue(&commitReq{kvs: kvs, after: func() { j.forget(gone...) }})
}

// forget drops reported records from memory; it runs once their REPORTED
// state is in badger, so a lookup never reads an older state from disk.
func (j *Journal) forget(recs ...*Record) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, rec := range recs {
		if j.recs[rec.ID] == rec && rec.State == Reported {
			delete(j.recs, rec.ID)
			if j.keys[rec.Key] == rec.ID {
				delete(j.keys, rec.Key)
			}
		}
	}
}

// Compact removes records reported at least the retention ago on the
// journal clock. It returns how many keys it removed.
func (j *Journal) Compact(ctx context.Context) (int, error) {
	cutoff := j.Clock() - j.opts.Retention
	type victim struct {
		id, key string
		rkey    []byte
	}
	var old []victim
	err := j.db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: j.prefixRecord})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var r Record
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
				continue // an undecodable record is kept for a person to look at
			}
			if r.State == Reported && r.ReportedClock <= cutoff {
				old = append(old, victim{id: r.ID, key: r.Key, rkey: it.Item().KeyCopy(nil)})
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("compact journal: %w", err)
	}
	// The deletes are decided again by the committer as it writes them: a
	// record a redelivery brought back (in memory again, its new state
	// queued after this batch or already written) is kept. A redelivery
	// that reads the store after the delete landed finds nothing, as it
	// would after any retention.
	total := 0
	for len(old) > 0 {
		part := old[:min(len(old), 1000)]
		old = old[len(part):]
		req := &commitReq{done: make(chan error, 1), build: func() []kv {
			j.mu.Lock()
			defer j.mu.Unlock()
			var dels []kv
			for _, v := range part {
				if j.recs[v.id] != nil {
					continue
				}
				dels = append(dels, kv{key: v.rkey})
				if v.key != "" && v.key != v.id && j.keys[v.key] == "" {
					dels = append(dels, kv{key: j.idemKey(v.key)})
				}
			}
			total += len(dels)
			return dels
		}}
		if err := j.wait(req); err != nil {
			return 0, fmt.Errorf("compact journal: %w", err)
		}
	}
	j.m.compacted.Add(float64(total))
	return total, nil
}

// recover loads every unreported record into memory and returns them in
// receipt order.
func (j *Journal) recover(ctx context.Context) ([]*Record, error) {
	all, err := j.List(ctx, 0)
	if err != nil {
		return nil, err
	}
	var open []*Record
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, r := range all {
		if r.State == Reported {
			continue
		}
		j.recs[r.ID] = r
		if r.Key != "" && r.Key != r.ID {
			j.keys[r.Key] = r.ID
		}
		open = append(open, r)
	}
	// Receipt order on the journal clock; records from before it (stamp
	// zero) come first, among themselves by their wall time.
	sort.SliceStable(open, func(a, b int) bool {
		ra, rb := open[a], open[b]
		if ra.ReceivedClock != rb.ReceivedClock {
			return ra.ReceivedClock < rb.ReceivedClock
		}
		return ra.ReceivedClock == 0 && ra.Received.Before(rb.Received)
	})
	for _, r := range open {
		// A dependency's result goes to its caller, never to a source.
		if r.State == Finished && r.Parent == "" {
			j.addOutboxLocked(r)
		}
	}
	return open, nil
}

type journalMetrics struct {
	writes, syncs, errors, compacted prometheus.Counter
	corrupt                          prometheus.Counter
	batch, latency                   prometheus.Histogram
	outboxRecords, outboxBytes       prometheus.Gauge
	duplicates, recovered            *prometheus.CounterVec
	// Suspended calls (suspend.go).
	suspended         prometheus.Gauge
	suspends, resumes prometheus.Counter
	suspendedEnded    *prometheus.CounterVec
	resumeWait        prometheus.Histogram
}

func newJournalMetrics(reg prometheus.Registerer) *journalMetrics {
	m := &journalMetrics{
		writes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_journal_writes_total", Help: "Journal keys written."}),
		syncs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_journal_syncs_total", Help: "Group commits written, one fsync each."}),
		errors:    prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_journal_write_errors_total", Help: "Journal batches that failed to write or sync."}),
		compacted: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_journal_compacted_total", Help: "Journal keys removed by retention."}),
		corrupt:   prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_journal_unreadable_records_total", Help: "Journal records skipped because their stored value could not be read or decoded."}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outpost_journal_commit_batch_size", Help: "Writers per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outpost_journal_commit_seconds", Help: "Time to write and sync one group commit.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14)}),
		outboxRecords: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_journal_outbox_results", Help: "Finished calls whose result is not reported yet."}),
		outboxBytes:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_journal_outbox_bytes", Help: "Bytes of results not reported yet."}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_journal_duplicates_total",
			Help: "Calls not run because they were already journaled, by what matched (id, key) and what happened (running, replayed)."}, []string{"match", "action"}),
		recovered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_journal_recovered_total",
			Help: "Unfinished calls found at start, by action (queued, rerun, interrupted, outbox, resume, orphan)."}, []string{"action"}),
		suspended: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_calls_suspended", Help: "Journaled calls suspended, waiting for the calls they made."}),
		suspends:  prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_calls_suspends_total", Help: "Runs of journaled calls that ended suspended."}),
		resumes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_calls_resumes_total", Help: "Suspended calls queued to resume once what they waited for finished."}),
		suspendedEnded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_calls_suspended_ended_total",
			Help: "Suspended calls finished without resuming, by status (timeout: their deadline passed; canceled)."}, []string{"status"}),
		resumeWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outpost_calls_suspended_seconds", Help: "Time from a call's suspension to its resume being queued.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
	}
	if reg != nil {
		reg.MustRegister(m.writes, m.syncs, m.errors, m.compacted, m.corrupt, m.batch, m.latency, m.outboxRecords, m.outboxBytes, m.duplicates, m.recovered,
			m.suspended, m.suspends, m.resumes, m.resumeWait, m.suspendedEnded)
	}
	return m
}
