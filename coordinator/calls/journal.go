package calls

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/store"
)

// Record is a journaled call as it is stored: key "calls/r/<id>" holds its
// JSON; "calls/k/<idempotency key>" holds the id when the key differs from
// the id.
type Record struct {
	ID       string  `json:"id"`
	Task     string  `json:"task"`
	Input    []byte  `json:"input,omitempty"` // dropped once the call finishes
	Source   Source  `json:"source"`
	Queue    string  `json:"queue,omitempty"`
	Priority int     `json:"priority,omitempty"`
	Key      string  `json:"key,omitempty"`
	Effect   Effect  `json:"effect"`
	Attempt  int     `json:"attempt"`
	Runs     int     `json:"runs"` // STARTED writes: an upper bound on executions
	State    State   `json:"state"`
	Result   *Result `json:"result,omitempty"`
	// ReplyTo is where the result goes besides the journal: the reply
	// topic of an MQTT route ("" for cloud and admin calls).
	ReplyTo string `json:"reply_to,omitempty"`
	// Digest is the call's Digest: the module a recovered call fetches.
	Digest string `json:"digest,omitempty"`
	// StartByMS and MaxRunMS are relative: measured from receipt on the
	// node's monotonic clock, and from the restart after a crash.
	StartByMS int64 `json:"start_by_ms,omitempty"`
	MaxRunMS  int64 `json:"max_run_ms,omitempty"`
	// Wall-clock times, for people and for retention only.
	Received time.Time `json:"received"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	Reported time.Time `json:"reported,omitzero"`
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
	// least this long; zero: 24h.
	Retention time.Duration
	// CompactEvery is how often expired records are removed; zero: 1h.
	CompactEvery time.Duration
}

type kv struct {
	key, val []byte // val nil: delete
}

type commitReq struct {
	kvs   []kv
	done  chan error // nil: asynchronous (no fsync wait)
	after func()     // run by the committer once the write is applied
	// notify, when set, gets the outcome (after the fsync) on the journal's
	// completion goroutine, never on the committer: it may write again.
	notify func(error)
}

// Journal is the durable log of calls in the state store. Writes go
// through one committer goroutine that applies everything waiting in one
// badger batch and fsyncs once for all the writers that wait (group
// commit). Unreported records are mirrored in memory.
//
// Lock order: Durable.mu is not held while waiting for a commit; j.mu
// guards the in-memory mirror only and is never held across a commit.
type Journal struct {
	db   *store.DB
	opts JournalOptions
	log  *slog.Logger
	m    *journalMetrics

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

var (
	prefixRecord = []byte("calls/r/")
	prefixKey    = []byte("calls/k/")
)

// OpenJournal starts a journal on db. Close stops it; db stays open.
func OpenJournal(db *store.DB, opts JournalOptions, log *slog.Logger, reg prometheus.Registerer) *Journal {
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
	}
	go j.run()
	go j.compactLoop()
	go j.completeLoop()
	return j
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

func (j *Journal) compactLoop() {
	defer close(j.compactDone)
	t := time.NewTicker(j.opts.CompactEvery)
	defer t.Stop()
	for {
		select {
		case <-j.stopCompact:
			return
		case <-t.C:
			if n, err := j.Compact(context.Background(), time.Now()); err != nil {
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
					if err := j.db.Sync(); err != nil {
						j.log.Warn("journal: final sync failed", "err", err)
					}
					return
				}
			}
		}
	}
}

// apply writes a batch in one badger write batch and, if any writer waits,
// one fsync.
func (j *Journal) apply(batch []*commitReq) {
	start := time.Now()
	err := j.write(batch)
	wait := false
	for _, r := range batch {
		wait = wait || r.done != nil || r.notify != nil
	}
	if err == nil && wait {
		err = j.db.Sync()
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
	n := 0
	for _, r := range batch {
		for _, e := range r.kvs {
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
	if durable {
		r.done = make(chan error, 1)
	}
	select {
	case j.reqs <- r:
	case <-j.done:
		return errJournalClosed
	}
	if !durable {
		return nil
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

func recordKey(id string) []byte { return append(append([]byte{}, prefixRecord...), id...) }
func idemKey(k string) []byte    { return append(append([]byte{}, prefixKey...), k...) }

func (j *Journal) recordKV(r *Record) (kv, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return kv{}, fmt.Errorf("encode journal record %s: %w", r.ID, err)
	}
	return kv{key: recordKey(r.ID), val: b}, nil
}

// load reads a record from disk; nil, nil if there is none.
func (j *Journal) load(id string) (*Record, error) {
	var r *Record
	err := j.db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey(id))
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
		item, err := txn.Get(idemKey(key))
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
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: prefixRecord})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			r := new(Record)
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, r) }); err != nil {
				// One bad value must not keep the daemon from starting.
				j.unreadable(string(bytes.TrimPrefix(it.Item().Key(), prefixRecord)), err)
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
	now := time.Now()
	j.mu.Lock()
	for _, id := range ids {
		r := j.recs[id]
		if r == nil || r.State != Finished {
			continue
		}
		r.State, r.Reported = Reported, now
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
	// The records leave memory once their REPORTED state is in badger, so
	// a lookup never reads an older state from disk.
	r := &commitReq{kvs: kvs, after: func() {
		j.mu.Lock()
		for _, rec := range gone {
			if j.recs[rec.ID] == rec && rec.State == Reported {
				delete(j.recs, rec.ID)
				if j.keys[rec.Key] == rec.ID {
					delete(j.keys, rec.Key)
				}
			}
		}
		j.mu.Unlock()
	}}
	select {
	case j.reqs <- r:
		return nil
	case <-j.done:
		return errJournalClosed
	}
}

// Compact removes reported records older than the retention. It returns
// how many it removed.
func (j *Journal) Compact(ctx context.Context, now time.Time) (int, error) {
	cutoff := now.Add(-j.opts.Retention)
	var dels []kv
	err := j.db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: prefixRecord})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var r Record
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
				continue // an undecodable record is kept for a person to look at
			}
			if r.State == Reported && r.Reported.Before(cutoff) {
				dels = append(dels, kv{key: it.Item().KeyCopy(nil)})
				if r.Key != "" && r.Key != r.ID {
					dels = append(dels, kv{key: idemKey(r.Key)})
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("compact journal: %w", err)
	}
	total := len(dels)
	for len(dels) > 0 {
		n := min(len(dels), 1000)
		if err := j.commit(true, dels[:n]...); err != nil {
			return 0, fmt.Errorf("compact journal: %w", err)
		}
		dels = dels[n:]
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
	sort.SliceStable(open, func(a, b int) bool { return open[a].Received.Before(open[b].Received) })
	for _, r := range open {
		if r.State == Finished {
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
}

func newJournalMetrics(reg prometheus.Registerer) *journalMetrics {
	m := &journalMetrics{
		writes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_journal_writes_total", Help: "Journal keys written."}),
		syncs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_journal_syncs_total", Help: "Group commits that waited for an fsync."}),
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
			Help: "Unfinished calls found at start, by action (queued, rerun, interrupted, outbox)."}, []string{"action"}),
	}
	if reg != nil {
		reg.MustRegister(m.writes, m.syncs, m.errors, m.compacted, m.corrupt, m.batch, m.latency, m.outboxRecords, m.outboxBytes, m.duplicates, m.recovered)
	}
	return m
}
