package calls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Outcome says what Accept did with a call.
type Outcome uint8

// Outcomes of Accept.
const (
	// Accepted: journaled and queued; its result comes through OnFinish.
	Accepted Outcome = iota
	// InFlight: a call with this id (or idempotency key) is journaled and not
	// finished yet; nothing more is done.
	InFlight
	// Replayed: the call finished before; its stored result is sent to
	// OnFinish again and it is not run.
	Replayed
)

func (o Outcome) String() string {
	return [...]string{"accepted", "in_flight", "replayed"}[o]
}

// Durable runs journaled calls: Accept writes a call as RECEIVED and
// waits for the group commit before it returns (so the caller may
// acknowledge it); the scheduler journals STARTED before a call runs
// (synced for at-most-once calls); FINISHED with its result is written
// before OnFinish sees it and is on disk once Journal.Flush returns, which
// reporters call before a result leaves the node. Recover picks up
// what a crash left unfinished.
type Durable struct {
	j   *Journal
	s   *Scheduler
	log *slog.Logger
	// onFinish is called with every finished record (and replays); set
	// before Recover and Accept.
	onFinish func(*Record)
	snaps    *Snapshots // the state of suspended calls; nil: none suspend
	// readInJournal holds the source kinds whose results are read from
	// the journal (ReadInJournal).
	readInJournal map[string]bool

	// mu guards the suspended calls (suspend.go): parents by id, and
	// waiting, the caller waiting for each unfinished dependency.
	mu      sync.Mutex
	parents map[string]*suspension
	waiting map[string]string
}

// NewDurable joins a journal and a scheduler. onFinish receives every
// finished record whose result must be reported; it must not block.
func NewDurable(j *Journal, s *Scheduler, log *slog.Logger, onFinish func(*Record)) *Durable {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onFinish == nil {
		onFinish = func(*Record) {}
	}
	return &Durable{j: j, s: s, log: log, onFinish: onFinish, parents: map[string]*suspension{}, waiting: map[string]string{}}
}

// Journal returns the journal.
func (d *Durable) Journal() *Journal { return d.j }

// ReadInJournal says that the results of calls of these source kinds are
// read from the journal (the admin API's calls): such a call is journaled
// REPORTED as it finishes, in the one write of its result, and never waits
// in the outbox. onFinish still sees it. Set it before Recover and Accept.
func (d *Durable) ReadInJournal(kinds ...string) {
	d.readInJournal = map[string]bool{}
	for _, k := range kinds {
		d.readInJournal[k] = true
	}
}

func (j *Journal) newRecord(c *Call) *Record {
	r := &Record{
		ID: c.ID, Task: c.Task, Input: c.Input, Source: c.Source, Queue: c.Queue, Priority: c.Priority, Labels: c.Labels,
		Key: c.IdempotencyKey, Effect: c.Effect, Attempt: max(c.Attempt, 1), State: Received,
		Received: j.opts.Wall(), ReceivedClock: j.stamp(), ReplyTo: c.ReplyTo, Digest: c.Digest,
	}
	if !c.StartBy.IsZero() {
		// -1: already past at receipt (0 means no start-by).
		r.StartByMS = max(time.Until(c.StartBy).Milliseconds(), -1)
		if r.StartByMS == 0 {
			r.StartByMS = -1
		}
	}
	r.MaxRunMS = c.MaxRun.Milliseconds()
	if !c.Deadline.IsZero() {
		r.DeadlineClock = r.ReceivedClock + max(time.Until(c.Deadline), 0)
	}
	return r
}

// Accept journals calls (one group commit for all) and queues the new
// ones. When it returns without error every call is on disk and may be
// acknowledged. A call the scheduler refuses finishes at once with
// StatusRejected (journaled, reported like any result), except when it is
// refused because the scheduler drains: then it stays RECEIVED and runs at
// the next start.
func (d *Durable) Accept(cs []*Call) ([]Outcome, error) {
	a, err := d.prepare(cs)
	if err != nil {
		return nil, err
	}
	if len(a.kvs) > 0 {
		err = d.j.commit(true, a.kvs...)
	}
	if err := d.complete(a, err); err != nil {
		return nil, err
	}
	return a.out, nil
}

// AcceptAsync is Accept for callers that must not block (the MQTT
// client's handler): it returns at once, and done gets the outcomes once
// every call is on disk (or the error), on the journal's completion
// goroutine, where it must not block for long. The calls are queued
// before done runs. An error from done means nothing was journaled.
func (d *Durable) AcceptAsync(cs []*Call, done func([]Outcome, error)) {
	a, err := d.prepare(cs)
	if err != nil {
		done(nil, err)
		return
	}
	finish := func(err error) {
		if err := d.complete(a, err); err != nil {
			done(nil, err)
			return
		}
		done(a.out, nil)
	}
	if len(a.kvs) == 0 {
		finish(nil)
		return
	}
	d.j.commitAsync(finish, a.kvs...)
}

// acceptance is an Accept between its journal write and its completion.
type acceptance struct {
	cs       []*Call
	out      []Outcome
	kvs      []kv
	fresh    []*Record
	freshIdx []int
	replays  []*Record
}

// prepare decides what to do with each call and builds the journal writes.
func (d *Durable) prepare(cs []*Call) (*acceptance, error) {
	a := &acceptance{cs: cs, out: make([]Outcome, len(cs))}
	d.j.mu.Lock()
	defer d.j.mu.Unlock()
	for i, c := range cs {
		if c.IdempotencyKey == "" {
			c.IdempotencyKey = c.ID
		}
		if c.Effect == "" {
			c.Effect = AtMostOnce
		}
		prev, match, err := d.findLocked(c)
		if err != nil {
			return nil, err
		}
		if prev != nil {
			if prev.State < Finished {
				a.out[i] = InFlight
				d.j.m.duplicates.WithLabelValues(match, "running").Inc()
				continue
			}
			a.out[i] = Replayed
			d.j.m.duplicates.WithLabelValues(match, "replayed").Inc()
			r := prev
			if prev.ID != c.ID || prev.State == Reported {
				// A new id for finished work, or a redelivery after the
				// report: the result goes out again under this id.
				r = d.j.newRecord(c)
				r.Input = nil
				res := *prev.Result
				r.Result, r.State, r.Finished, r.Attempt = &res, Finished, d.j.opts.Wall(), prev.Attempt
				e, err := d.j.recordKV(r)
				if err != nil {
					return nil, err
				}
				a.kvs = append(a.kvs, e)
				d.j.recs[r.ID] = r
				d.j.addOutboxLocked(r)
			}
			cp := *r
			a.replays = append(a.replays, &cp)
			continue
		}
		r := d.j.newRecord(c)
		e, err := d.j.recordKV(r)
		if err != nil {
			return nil, err
		}
		a.kvs = append(a.kvs, e)
		if r.Key != r.ID {
			a.kvs = append(a.kvs, kv{key: d.j.idemKey(r.Key), val: []byte(r.ID)})
			d.j.keys[r.Key] = r.ID
		}
		d.j.recs[r.ID] = r
		a.fresh = append(a.fresh, r)
		a.freshIdx = append(a.freshIdx, i)
	}
	return a, nil
}

// complete queues the fresh calls of a once their write is on disk, or
// forgets them if it failed (err).
func (d *Durable) complete(a *acceptance, err error) error {
	if err != nil {
		d.j.mu.Lock()
		for _, r := range a.fresh {
			delete(d.j.recs, r.ID)
			if d.j.keys[r.Key] == r.ID {
				delete(d.j.keys, r.Key)
			}
		}
		d.j.mu.Unlock()
		return fmt.Errorf("journal calls: %w", err)
	}
	for k, r := range a.fresh {
		d.queue(a.cs[a.freshIdx[k]], r)
	}
	for _, r := range a.replays {
		d.onFinish(r)
	}
	return nil
}

// findLocked looks for an earlier record of c by id, then by idempotency key.
func (d *Durable) findLocked(c *Call) (*Record, string, error) {
	if r := d.j.recs[c.ID]; r != nil {
		return r, "id", nil
	}
	r, err := d.j.load(c.ID)
	if err != nil || r != nil {
		return r, "id", err
	}
	if c.IdempotencyKey == c.ID {
		return nil, "", nil
	}
	id := d.j.keys[c.IdempotencyKey]
	if id == "" {
		if id, err = d.j.loadKey(c.IdempotencyKey); err != nil {
			return nil, "", err
		}
	}
	if id == "" {
		// A call whose key is its own id has no index entry.
		id = c.IdempotencyKey
	}
	if r := d.j.recs[id]; r != nil {
		if r.State < Finished {
			// Work under this key is running under another id: this call
			// runs too (documented: the key dedupes finished work only).
			return nil, "", nil
		}
		return r, "key", nil
	}
	r, err = d.j.load(id)
	if r == nil || r.Result == nil {
		return nil, "", err
	}
	return r, "key", err
}

// queue hands a journaled call to the scheduler.
func (d *Durable) queue(c *Call, r *Record) {
	d.wrapDone(c)
	if err := d.s.Submit(c); err != nil {
		st := refusal(err)
		if errors.Is(err, ErrDraining) {
			// Journaled as the drain began: accepted, so it runs at the
			// next start like a call the drain cut before it started.
			c.cutByShutdown = true
			st = StatusCanceled
		}
		c.Result = Result{Status: st, Error: err.Error()}
		c.State = Finished
		c.Done(c)
	}
}

// refusal is the status of a call the scheduler refused with err.
func refusal(err error) Status {
	switch {
	case errors.Is(err, ErrUnknownTask):
		return StatusUnknown
	case errors.Is(err, ErrTooLate):
		return StatusTooLate
	}
	return StatusRejected
}

// wrapDone makes c journaled by d: its Done journals how it ended
// (finished, suspended, or left for recovery by a drain) before the
// source's Done runs.
func (d *Durable) wrapDone(c *Call) {
	c.durable = d
	prev := c.Done
	c.Done = func(c *Call) {
		if cont := c.Suspension; cont != nil {
			if c.Result.Status == StatusSuspended {
				d.suspend(c, prev)
				return
			}
			c.Suspension = nil // canceled or cut while it ran: nobody resumes it
			for _, w := range cont.Waits {
				d.s.Cancel(w.ID)
			}
		}
		if c.cutByShutdown {
			d.leaveForRecovery(c)
		} else {
			d.finish(c)
		}
		if prev != nil {
			prev(c)
		}
	}
}

// started journals STARTED before c runs, after loading the state of a
// resume run; the scheduler calls it.
func (d *Durable) started(c *Call) error {
	if c.resumeFrom != "" {
		if err := d.loadResume(c); err != nil {
			return err
		}
	}
	d.j.mu.Lock()
	r := d.j.recs[c.ID]
	if r == nil {
		d.j.mu.Unlock()
		return fmt.Errorf("call %s is not in the journal", c.ID)
	}
	r.State, r.Started, r.Attempt = Started, d.j.opts.Wall(), max(c.Attempt, 1)
	r.Runs++
	cp := r.clone()
	d.j.mu.Unlock()
	e, err := d.j.recordKV(cp)
	if err != nil {
		return err
	}
	// Synced before an at-most-once call runs (a crash after this point
	// reports it interrupted, never runs it again). For an idempotent call
	// the write is not waited for: a crash before it lands re-runs the
	// call, which its effect allows.
	if err := d.j.commit(c.Effect != Idempotent, e); err != nil {
		return fmt.Errorf("journal start of %s: %w", c.ID, err)
	}
	return nil
}

// finish journals FINISHED with the result, then hands the record on: to
// onFinish, or for a dependency to the suspended call that waits for it
// (depFinished, which journals both in one write).
func (d *Durable) finish(c *Call) {
	d.j.mu.Lock()
	r := d.j.recs[c.ID]
	if r == nil {
		d.j.mu.Unlock()
		d.log.Error("finished call is not in the journal", "call", c.ID)
		return
	}
	res := c.Result
	snapshot := r.Snapshot
	r.State, r.Result, r.Finished, r.Input = Finished, &res, d.j.opts.Wall(), nil
	r.Snapshot, r.Waits = "", nil
	if r.Parent != "" {
		d.j.mu.Unlock()
		d.depFinished(r, snapshot)
		return
	}
	read := d.readInJournal[r.Source.Kind]
	if read {
		r.State, r.Reported, r.ReportedClock = Reported, r.Finished, d.j.stamp()
	}
	enc := r.clone()
	d.j.mu.Unlock()
	e, err := d.j.recordKV(enc)
	if err == nil {
		// Not waited for here: whoever reports the result calls
		// Journal.Flush first, one fsync for a whole batch of results. A
		// crash before that recovers the call from STARTED. The snapshot
		// goes once this write, which stops naming it, is applied.
		req := &commitReq{kvs: []kv{e}, after: d.snapshotDrop(snapshot)}
		if read {
			req.after = then(func() { d.j.forget(r) }, req.after)
		}
		err = d.j.enqueue(req)
	}
	if err != nil {
		d.log.Error("journal finish failed", "call", c.ID, "err", err)
	}
	// Into the outbox once the write is queued: a reporter's Flush waits
	// for it before the result leaves the node.
	d.j.mu.Lock()
	if !read {
		d.j.addOutboxLocked(r)
	}
	cp := *r
	d.j.mu.Unlock()
	d.onFinish(&cp)
}

// then runs fs in order, skipping nil ones.
func then(fs ...func()) func() {
	return func() {
		for _, f := range fs {
			if f != nil {
				f()
			}
		}
	}
}

// leaveForRecovery handles a call cut short by the scheduler's own
// shutdown (the drain deadline): treated like a crash, not a cancellation.
// Its record stays RECEIVED or STARTED and nothing is reported for it now;
// the next start's Recover runs it (again, with attempt+1, if it had
// started and is idempotent) or finishes it as interrupted (at-most-once).
func (d *Durable) leaveForRecovery(c *Call) {
	d.j.mu.Lock()
	r := d.j.recs[c.ID]
	var st State
	if r != nil {
		st = r.State
	}
	d.j.mu.Unlock()
	d.log.Warn("call cut by the drain deadline: left in the journal for the next start", "call", c.ID, "task", c.Task,
		"state", st, "effect", c.Effect, "attempt", c.Attempt)
}

// Recover queues again what a crash left unfinished: RECEIVED calls run;
// STARTED calls run again (attempt+1) if idempotent, else finish as
// interrupted; FINISHED ones go back to the outbox. Call it once, after
// the scheduler's tasks are loaded and before new calls are accepted.
func (d *Durable) Recover(ctx context.Context) error {
	all, err := d.j.recover(ctx)
	if err != nil {
		return err
	}
	open := d.recoverSuspended(ctx, all)
	for _, r := range open {
		switch r.State {
		case Finished:
			d.j.m.recovered.WithLabelValues("outbox").Inc()
			if r.Parent != "" {
				// Written by a version that journaled a dependency's
				// FINISHED apart from its caller's record.
				d.depFinished(r, "")
				continue
			}
			cp := *r
			d.onFinish(&cp)
			continue
		case Started:
			if r.Effect != Idempotent {
				d.j.m.recovered.WithLabelValues("interrupted").Inc()
				d.log.Warn("at-most-once call interrupted by a restart: not run again", "call", r.ID, "task", r.Task, "attempt", r.Attempt)
				c := r.call(d.j.Clock())
				c.durable = d
				c.Result = Result{Status: StatusInterrupted, Error: "the process stopped while the call ran; at-most-once calls are not run again"}
				c.State = Finished
				d.finish(c)
				continue
			}
			d.j.m.recovered.WithLabelValues("rerun").Inc()
			r.Attempt++
		default:
			d.j.m.recovered.WithLabelValues("queued").Inc()
		}
		d.queue(r.call(d.j.Clock()), r)
	}
	if len(all) > 0 {
		d.log.Info("journal recovered", "calls", len(all), "suspended", d.SuspendedCount())
	}
	return nil
}

// call rebuilds a runnable call from a record; its deadline is measured
// from clock, the journal clock now.
func (r *Record) call(clock time.Duration) *Call {
	c := &Call{
		ID: r.ID, Task: r.Task, Input: r.Input, Source: r.Source, Queue: r.Queue, Priority: r.Priority, Labels: r.Labels,
		IdempotencyKey: r.Key, Attempt: r.Attempt, Effect: r.Effect, Received: time.Now(),
		MaxRun: time.Duration(r.MaxRunMS) * time.Millisecond, ReplyTo: r.ReplyTo,
		Digest: r.Digest, Parent: r.Parent,
	}
	if r.StartByMS != 0 {
		c.StartBy = c.Received.Add(time.Duration(r.StartByMS) * time.Millisecond)
	}
	if r.DeadlineClock != 0 {
		c.Deadline = c.Received.Add(r.DeadlineClock - clock)
	}
	return c
}

// Scheduler returns the scheduler.
func (d *Durable) Scheduler() *Scheduler { return d.s }

// Cancel cancels a queued, running or suspended journaled call (a
// suspended one finishes canceled at once, and so do the calls it waits for).
func (d *Durable) Cancel(id string) bool { return d.cancelSuspended(id) || d.s.Cancel(id) }

// SuspendedCount is the number of suspended calls.
func (d *Durable) SuspendedCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.parents)
}

// Unfinished lists the ids of journaled calls of a source kind that are
// not finished (the leases a cloud node holds).
func (d *Durable) Unfinished(kind string) []string {
	d.j.mu.Lock()
	defer d.j.mu.Unlock()
	var ids []string
	for id, r := range d.j.recs {
		if r.State < Finished && r.Source.Kind == kind {
			ids = append(ids, id)
		}
	}
	return ids
}
