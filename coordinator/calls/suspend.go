package calls

import (
	"context"
	"fmt"
	"time"
)

// A journaled call can suspend (docs/architecture.md, "Suspended calls"):
// its run ends with the state its guest keeps and the calls it waits for
// (its dependencies, journaled too, with Parent set). Durable.suspend
// saves the state as a snapshot and writes the record SUSPENDED, synced;
// the call then holds no worker, instance or goroutine. When the last
// dependency's FINISHED is written, the call is queued again as a resume
// run with the state and the results. After a crash, Recover registers
// the suspended calls again and runs (or re-runs) their dependencies.
//
// Lock order: Durable.mu, then Journal.mu; neither is held across a commit
// or a Submit.

// suspension is a suspended call in memory: how many of its dependencies
// have not finished, and the Done its source gave (nil after a restart).
type suspension struct {
	id      string
	missing int
	done    func(*Call)
	since   time.Time
	// timer ends the call as timed out at its deadline (nil: none); a
	// runtime timer, not a goroutine.
	timer *time.Timer
}

// UseSnapshots gives d the store for the state of suspended calls. Without
// one, no call can suspend. Set it before Recover.
func (d *Durable) UseSnapshots(s *Snapshots) { d.snaps = s }

// Suspendable says whether c, running, may end its run suspended: it is
// journaled and its Durable keeps snapshots.
func (c *Call) Suspendable() bool { return c.durable != nil && c.durable.snaps != nil }

// Depend journals c as a dependency of parent, a running journaled call
// (its call_async), and queues it. The record is written without waiting
// (the parent's SUSPENDED write, synced, comes after it); the dependency
// shares the parent's effect: an idempotent one runs again after a crash,
// an at-most-once one finishes interrupted. A call the scheduler refuses
// is not run: its record is finished and the error returned.
func (d *Durable) Depend(parent, c *Call) error {
	c.Parent, c.Effect, c.IdempotencyKey = parent.ID, parent.Effect, c.ID
	if c.Effect == "" {
		c.Effect = AtMostOnce
	}
	r := d.j.newRecord(c)
	r.Parent = c.Parent
	e, err := d.j.recordKV(r) // nobody else sees r yet
	if err == nil {
		d.j.mu.Lock()
		d.j.recs[r.ID] = r
		d.j.mu.Unlock()
	}
	if err == nil {
		err = d.j.commit(false, e)
	}
	if err != nil {
		return fmt.Errorf("journal call of %s: %w", c.Task, err)
	}
	prev := c.Done
	d.wrapDone(c)
	if err := d.s.Submit(c); err != nil {
		c.Result, c.State, c.Done = Result{Status: refusal(err), Error: err.Error()}, Finished, prev
		d.finish(c)
		return err
	}
	return nil
}

// suspend handles a run of c that ended suspended: the state goes to a
// snapshot, the record to SUSPENDED (synced) with what it waits for, and
// the call is resumed at once if all of it has already finished.
func (d *Durable) suspend(c *Call, done func(*Call)) {
	cont := c.Suspension
	c.Suspension = nil
	digest, err := d.snaps.Put(c.ID, c.Task, cont.State)
	if err != nil {
		d.log.Error("call could not suspend", "call", c.ID, "task", c.Task, "err", err)
		d.failSuspended(c, done, cont, "suspend: "+err.Error())
		return
	}
	d.mu.Lock()
	d.j.mu.Lock()
	r := d.j.recs[c.ID]
	if r == nil {
		d.j.mu.Unlock()
		d.mu.Unlock()
		d.log.Error("suspended call is not in the journal", "call", c.ID)
		return
	}
	old := r.Snapshot
	r.State, r.Snapshot, r.Waits, r.Suspended = Suspended, digest, cont.Waits, d.j.opts.Wall()
	d.j.mu.Unlock()
	s := d.registerLocked(r, done)
	ready := s != nil && s.missing == 0 // else the last dependency to finish resumes it
	d.j.mu.Lock()
	cp := r.clone()
	d.j.mu.Unlock()
	e, err := d.j.recordKV(cp)
	if err == nil {
		// Not waited for, as STARTED of an idempotent call: a crash before
		// it lands runs the call again from its start (at-most-once:
		// interrupted). Queued before d.mu is released: a dependency that
		// finishes now resumes the call only after, so this write never
		// lands after those of the resumed run. The previous step's
		// snapshot goes once this write, which stops naming it, is applied.
		req := &commitReq{kvs: []kv{e}}
		if old != digest {
			req.after = d.snapshotDrop(old)
		}
		err = d.j.enqueue(req)
	}
	d.mu.Unlock()
	if err != nil {
		d.log.Error("journal suspension failed", "call", c.ID, "err", err)
	}
	d.j.m.suspends.Inc()
	if ready {
		d.resume(s)
	}
}

// failSuspended finishes c, whose suspension could not be kept, as failed
// and cancels what it waited for.
func (d *Durable) failSuspended(c *Call, done func(*Call), cont *Continuation, msg string) {
	for _, w := range cont.Waits {
		d.s.Cancel(w.ID)
	}
	c.Result, c.State = Result{Status: StatusFailed, Error: msg}, Finished
	d.finish(c)
	if done != nil {
		done(c)
	}
}

// registerLocked records r, suspended, in memory: the results of the
// dependencies that have already finished are copied into it, the others
// are waited for. It returns the suspension (nil if r was registered
// already). d.mu is held.
func (d *Durable) registerLocked(r *Record, done func(*Call)) *suspension {
	if d.parents[r.ID] != nil {
		return nil
	}
	s := &suspension{id: r.ID, done: done, since: time.Now()}
	for i := range r.Waits {
		w := &r.Waits[i]
		if w.Result != nil {
			continue
		}
		dep, err := d.j.Get(w.ID)
		switch {
		case err != nil || dep == nil:
			w.Result = &Result{Status: StatusFailed, Error: fmt.Sprintf("the call %s this call waited for is not in the journal", w.ID)}
		case dep.State >= Finished && dep.Result != nil:
			res := *dep.Result
			w.Result = &res
		default:
			d.waiting[w.ID] = r.ID
			s.missing++
		}
	}
	if r.DeadlineClock != 0 {
		s.timer = time.AfterFunc(r.DeadlineClock-d.j.Clock(), func() {
			if d.endSuspended(r.ID, s, Result{Status: StatusTimeout, Error: "deadline passed while suspended"}) {
				d.j.m.suspendedEnded.WithLabelValues(string(StatusTimeout)).Inc()
			}
		})
	}
	d.parents[r.ID] = s
	d.j.m.suspended.Set(float64(len(d.parents)))
	return s
}

// deadlinePassed says whether r has a deadline and it has passed.
func (d *Durable) deadlinePassed(r *Record) bool {
	return r.DeadlineClock != 0 && r.DeadlineClock <= d.j.Clock()
}

// depFinished journals r, a dependency that finished (its record, held in
// the journal's memory, already FINISHED with its result), and hands its
// result to the suspended call that waits for it, resuming it if it was the
// last. One write holds the caller's record with the result and the
// dependency's record, REPORTED: its result lives on in the caller's
// record, or reached a caller that awaited it in memory (or that finished).
// snapshot, when set, is the dependency's own snapshot, deleted once that
// write is applied.
func (d *Durable) depFinished(r *Record, snapshot string) {
	d.mu.Lock()
	var (
		resume *suspension
		parent *Record // its copy, to encode without holding j.mu
	)
	d.j.mu.Lock()
	if pid, ok := d.waiting[r.ID]; ok {
		delete(d.waiting, r.ID)
		s := d.parents[pid]
		if p := d.j.recs[pid]; p != nil && s != nil {
			for i := range p.Waits {
				if p.Waits[i].ID == r.ID {
					res := *r.Result
					p.Waits[i].Result = &res
				}
			}
			parent = p.clone()
			if s.missing--; s.missing == 0 {
				resume = s
			}
		}
	}
	r.State, r.Reported, r.ReportedClock = Reported, d.j.opts.Wall(), d.j.stamp()
	cp := r.clone()
	d.j.mu.Unlock()
	// The copies are encoded without j.mu, still under d.mu: they are
	// queued in the order they were made.
	var kvs []kv
	if parent != nil {
		if e, err := d.j.recordKV(parent); err == nil {
			kvs = append(kvs, e)
		}
	}
	e, err := d.j.recordKV(cp)
	if err == nil {
		// The caller's record first, in the same write: a crash never
		// loses the result both ways. Not waited for, as the result of any
		// call (a crash before it lands runs the dependency again, or
		// finishes it interrupted). Queued under d.mu, so the caller's
		// records land in the order they were made (another dependency's,
		// or the resumed run's, never before this one).
		err = d.j.enqueue(&commitReq{kvs: append(kvs, e), after: then(func() { d.j.forget(r) }, d.snapshotDrop(snapshot))})
	}
	d.mu.Unlock()
	if err != nil {
		d.log.Error("journal result of a dependency failed", "call", r.ID, "parent", r.Parent, "err", err)
	}
	if resume != nil {
		d.resume(resume)
	}
}

// resume queues the next run of the suspended call s: its state from the
// snapshot and the results of what it waited for.
func (d *Durable) resume(s *suspension) {
	d.mu.Lock()
	if d.parents[s.id] != s {
		d.mu.Unlock()
		return // canceled meanwhile
	}
	delete(d.parents, s.id)
	d.j.m.suspended.Set(float64(len(d.parents)))
	if s.timer != nil {
		s.timer.Stop()
	}
	d.j.mu.Lock()
	r := d.j.recs[s.id]
	var c *Call
	if r != nil {
		c = r.call(d.j.Clock())
	}
	d.j.mu.Unlock()
	d.mu.Unlock()
	if c == nil {
		return
	}
	d.j.m.resumes.Inc()
	d.j.m.resumeWait.Observe(time.Since(s.since).Seconds())
	c.Done = s.done
	d.queueResume(c, r)
}

// queueResume queues c, the next run of r, with the results it waited
// for; the state comes from the snapshot as the run starts (loadResume),
// on the resumed call's worker, not on that of the dependency that
// finished last.
func (d *Durable) queueResume(c *Call, r *Record) {
	d.j.mu.Lock()
	digest, waits := r.Snapshot, append([]Wait(nil), r.Waits...)
	d.j.mu.Unlock()
	c.Resume, c.resumeFrom = &Continuation{Waits: waits}, digest
	d.queue(c, r)
}

// loadResume reads the state of c, a resume run about to start, from its
// snapshot. A snapshot that cannot be read makes an idempotent call run
// again from its start; any other call fails (the error).
func (d *Durable) loadResume(c *Call) error {
	digest := c.resumeFrom
	c.resumeFrom = ""
	state, err := d.snaps.Get(digest, c.ID)
	if err == nil {
		c.Resume.State = state
		return nil
	}
	if c.Effect == Idempotent && c.Input != nil {
		// Lost with a power failure (it is not fsynced): run the call
		// again from its start, as if it had not suspended.
		d.log.Warn("snapshot of a suspended call unreadable: running it again from its start", "call", c.ID, "task", c.Task, "err", err)
		d.j.mu.Lock()
		if r := d.j.recs[c.ID]; r != nil {
			r.Snapshot, r.Waits = "", nil
		}
		d.j.mu.Unlock()
		c.Resume = nil
		return nil
	}
	d.log.Error("suspended call cannot resume", "call", c.ID, "task", c.Task, "err", err)
	return fmt.Errorf("resume: %w", err)
}

// cancelSuspended finishes the suspended call id as canceled and cancels
// the calls it waits for; false if id is not suspended here.
func (d *Durable) cancelSuspended(id string) bool {
	if !d.endSuspended(id, nil, Result{Status: StatusCanceled, Error: "canceled while suspended"}) {
		return false
	}
	d.j.m.suspendedEnded.WithLabelValues(string(StatusCanceled)).Inc()
	return true
}

// endSuspended finishes the suspended call id with res without resuming
// it (canceled, or its deadline passed) and cancels the calls it waits
// for (queued, running or suspended themselves); its snapshot goes with
// its FINISHED record. want, when set, is the suspension to end: false if
// id is no longer suspended as want (it resumed, or suspended again).
func (d *Durable) endSuspended(id string, want *suspension, res Result) bool {
	d.mu.Lock()
	s := d.parents[id]
	if s == nil || want != nil && s != want {
		d.mu.Unlock()
		return false
	}
	delete(d.parents, id)
	d.j.m.suspended.Set(float64(len(d.parents)))
	if s.timer != nil {
		s.timer.Stop()
	}
	var deps []string
	for dep, pid := range d.waiting {
		if pid == id {
			deps = append(deps, dep)
			delete(d.waiting, dep)
		}
	}
	d.j.mu.Lock()
	r := d.j.recs[id]
	var c *Call
	if r != nil {
		c = r.call(d.j.Clock())
	}
	d.j.mu.Unlock()
	d.mu.Unlock()
	for _, dep := range deps {
		d.Cancel(dep)
	}
	if c == nil {
		return true
	}
	c.durable = d
	c.Result, c.State = res, Finished
	d.finish(c)
	if s.done != nil {
		s.done(c)
	}
	return true
}

// snapshotDrop returns what deletes digest, a snapshot no record names
// any more, run as the commit's after of the write that stops naming it:
// once that write is on disk (the store syncs every write) or failed (a
// write that failed leaves a record naming a deleted snapshot: that call
// runs again from its start, as when the snapshot itself is lost). The file is removed on the journal's completion
// goroutine, off the committer. Nil when digest is empty.
func (d *Durable) snapshotDrop(digest string) func() {
	if digest == "" {
		return nil
	}
	remove := func() {
		if err := d.snaps.remove(digest); err != nil {
			d.log.Warn("snapshot not deleted (swept at the next start)", "snapshot", digest, "err", err)
		}
	}
	return func() { d.j.complete(remove) }
}

// recoverSuspended sorts the open records of a restart: suspended calls are
// registered again (they wait for their dependencies, or resume at once),
// a call that was running a resume step runs it again (idempotent) or is
// interrupted, and a dependency whose caller no longer waits for it (the
// caller runs again from its start, or finished) is finished as canceled
// without running. It returns the records left to the usual recovery and
// sweeps the snapshots no open record names.
func (d *Durable) recoverSuspended(ctx context.Context, open []*Record) []*Record {
	byID := make(map[string]*Record, len(open))
	for _, r := range open {
		byID[r.ID] = r
	}
	keep := map[string]bool{}
	var rest, resumeNow, expired []*Record
	var ready []*suspension
	d.mu.Lock()
	for _, r := range open {
		if r.Snapshot != "" && r.State < Finished {
			keep[r.Snapshot] = true
		}
		switch {
		case r.State != Suspended:
		case d.deadlinePassed(r):
			// Not registered: its dependencies, which no caller waits
			// for now, finish canceled below without running.
			expired = append(expired, r)
		default:
			if s := d.registerLocked(r, nil); s != nil && s.missing == 0 {
				ready = append(ready, s)
			}
		}
	}
	d.mu.Unlock()
	for _, r := range open {
		switch {
		case r.State == Suspended:
		case r.State == Started && r.Snapshot != "" && r.Effect == Idempotent:
			d.j.m.recovered.WithLabelValues("resume").Inc()
			r.Attempt++
			resumeNow = append(resumeNow, r)
		case r.Parent != "" && r.State < Finished && !d.waitedFor(byID[r.Parent], r.ID):
			d.j.m.recovered.WithLabelValues("orphan").Inc()
			c := r.call(d.j.Clock())
			c.durable = d
			c.Result, c.State = Result{Status: StatusCanceled, Error: "canceled: the call that made it no longer waits for it (it ran again or finished after a restart)"}, Finished
			d.finish(c)
		default:
			rest = append(rest, r)
		}
	}
	for _, r := range expired { // after the loop above, which saw them suspended
		d.j.m.suspendedEnded.WithLabelValues(string(StatusTimeout)).Inc()
		c := r.call(d.j.Clock())
		c.durable = d
		c.Result, c.State = Result{Status: StatusTimeout, Error: "deadline passed while suspended"}, Finished
		d.finish(c)
	}
	for _, r := range resumeNow {
		d.queueResume(r.call(d.j.Clock()), r)
	}
	for _, s := range ready {
		d.resume(s)
	}
	if d.snaps != nil && ctx.Err() == nil {
		if n, err := d.snaps.sweep(keep); err != nil {
			d.log.Warn("snapshot sweep failed", "err", err)
		} else if n > 0 {
			d.log.Info("snapshots of finished calls deleted", "files", n)
		}
	}
	return rest
}

// waitedFor says whether parent, recovered, is suspended waiting for id.
func (d *Durable) waitedFor(parent *Record, id string) bool {
	if parent == nil || parent.State != Suspended {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waiting[id] == parent.ID
}

// Caller returns the call of s running with ctx (the caller of a host
// function), nil for any other context.
func (s *Scheduler) Caller(ctx context.Context) *Call {
	sl, _ := ctx.Value(slotKey{}).(*slot)
	if sl == nil || sl.s != s {
		return nil
	}
	return sl.c
}

// JournaledCaller is Caller when that call is journaled, else nil.
func (s *Scheduler) JournaledCaller(ctx context.Context) *Call {
	if c := s.Caller(ctx); c != nil && c.durable != nil {
		return c
	}
	return nil
}

// Depend journals dep as a dependency of c, a running journaled call, and
// queues it (Durable.Depend).
func (c *Call) Depend(dep *Call) error { return c.durable.Depend(c, dep) }
