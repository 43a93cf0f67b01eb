package calls

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Executor runs one call's task on the calling goroutine and says how it
// ended. It is the scheduler's only view of the runtime.
type Executor interface {
	Execute(ctx context.Context, c *Call) Result
	// Concurrency is the task's limit of calls at once; false if there is no such task.
	Concurrency(task string) (int, bool)
}

// ContextValuer is an optional interface of an Executor: ContextValue
// answers Value(key) in the context of the running call c for the keys the
// scheduler does not know (nil: none), so that the executor needs no
// context.WithValue per call for what it derives from the call.
type ContextValuer interface {
	ContextValue(c *Call, key any) any
}

// Options size a Scheduler.
type Options struct {
	Workers   int // calls running at once, over all tasks
	QueueSize int // calls waiting, over all tasks
	// Queues are the weighted queues besides "control" (always strict
	// first) and "default" (weight 1 unless listed). A call naming an
	// unknown queue goes to "default".
	Queues []QueueSpec
	// AgingAfter: a call waiting longer than this runs next, whatever the
	// weights say, so no queue starves. Zero: 1s.
	AgingAfter time.Duration
	// MaxParked bounds the calls parked in Blocking at once (each still
	// holds its task's instance and memory). A call that would park past it
	// keeps its worker slot while it waits. Zero: 16 × Workers, at least 64
	// (config key scheduler.max_parked).
	MaxParked int
}

// QueueSpec is one weighted queue.
type QueueSpec struct {
	Name   string
	Weight int
}

// ControlQueue is the strict priority queue: its calls run before any other.
const ControlQueue = "control"

// DefaultQueue takes calls that name no queue or an unknown one.
const DefaultQueue = "default"

// Scheduler runs calls with a global worker cap and per-task concurrency
// limits. Waiting calls sit in one FIFO per queue and task. The control
// queue goes first; the other queues share the workers by weight (smooth
// weighted round robin), and a call that waited longer than AgingAfter
// goes next. Inside a queue, a free worker goes to the task with waiting
// calls and a free slot that holds the fewest slots (round robin among
// equals): a task above its fair share of the workers gets no other worker
// while another task waits, so a busy task cannot starve the others. Workers
// are goroutines started on demand, up to Workers, that keep taking calls
// while there are any.
//
// Everything below is guarded by mu; Done callbacks and Executor run
// without it.
type Scheduler struct {
	exec   Executor
	valuer ContextValuer // exec's, or nil
	opts   Options
	log    *slog.Logger
	m      *metrics

	// cut is set when a drain runs out of time; Drain then cancels the
	// running calls one by one (their contexts have no shared parent:
	// registering each call with one would serialize them on its lock).
	cut atomic.Bool

	mu      sync.Mutex
	classes []*class // control first
	byName  map[string]*class
	tasks   map[string]*taskState
	live    map[string]*Call // queued and running calls by id, for Cancel
	// runs holds the calls between the start and the end of their
	// executor run, earliest deadline first (runctx.go): for Cancel, a
	// drain out of time and the deadline timer, which fires at armedAt.
	runs    runHeap
	timer   *time.Timer
	armedAt time.Time
	queued  int
	running int // calls holding a worker slot; parked calls do not
	parked  int // calls waiting in Blocking without a worker slot
	// resumers wait, in order, for a worker slot to resume after Blocking;
	// a freed slot goes to them before any queued call.
	resumers fifo[chan struct{}]
	// deferred holds the calls with a NeedBy time, by latest start
	// (slack.go); deferredCanceled counts those canceled there.
	deferred         []*Call
	deferredCanceled int
	// pendingDone counts calls taken off a queue by a cancel whose Done has
	// not run yet; Drain waits for them too.
	pendingDone int
	draining    bool
	idle        chan struct{} // closed when draining and nothing is queued or running
}

// class is one scheduler queue.
type class struct {
	name   string
	weight int
	cur    int              // smooth weighted round robin credit
	served time.Time        // when a call of this queue was last taken
	ready  fifo[*taskQueue] // tasks with waiting calls and a free slot
	queued int
	depth  prometheus.Gauge
}

// taskState is one task's slots, shared by its queues in every class.
type taskState struct {
	name    string
	running int
	queues  []*taskQueue
	m       *taskMetrics
	runs    runTimes // recent run times, for deadline-aware scheduling
	// deferred counts the task's calls in the scheduler's deferred list.
	deferred int
}

type taskQueue struct {
	class   *class
	task    *taskState
	calls   fifo[*Call]
	inReady bool
}

// NewScheduler returns a scheduler running calls through exec. reg may be nil.
func NewScheduler(exec Executor, opts Options, log *slog.Logger, reg prometheus.Registerer) *Scheduler {
	if opts.AgingAfter <= 0 {
		opts.AgingAfter = time.Second
	}
	if opts.MaxParked <= 0 {
		opts.MaxParked = max(16*opts.Workers, 64)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{
		exec: exec, opts: opts, log: log, m: newMetrics(reg),
		byName: map[string]*class{},
		tasks:  map[string]*taskState{},
		live:   map[string]*Call{},
		idle:   make(chan struct{}),
	}
	s.addClass(ControlQueue, 0)
	for _, q := range opts.Queues {
		if q.Name != ControlQueue && s.byName[q.Name] == nil {
			s.addClass(q.Name, max(q.Weight, 1))
		}
	}
	s.valuer, _ = exec.(ContextValuer)
	if s.byName[DefaultQueue] == nil {
		s.addClass(DefaultQueue, 1)
	}
	return s
}

func (s *Scheduler) addClass(name string, weight int) {
	c := &class{name: name, weight: weight, depth: s.m.depth.WithLabelValues(name)}
	s.classes = append(s.classes, c)
	s.byName[name] = c
}

// Submit queues c to run. It never blocks: a full queue, a draining
// scheduler or an unknown task (for a call without a Digest) is an error
// and c.Done is not called.
func (s *Scheduler) Submit(c *Call) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tq, _, err := s.admitLocked(c)
	if err != nil {
		return err
	}
	if c.NeedBy.IsZero() {
		s.pushLocked(tq, c)
	} else {
		s.deferLocked(c)
	}
	s.dispatchLocked()
	return nil
}

func (s *Scheduler) pushLocked(tq *taskQueue, c *Call) {
	c.queuedAt = time.Now()
	c.inQueue = true
	tq.calls.push(c)
	s.queued++
	tq.class.queued++
	tq.class.depth.Set(float64(tq.class.queued))
	s.m.queued.Set(float64(s.queued))
	s.readyLocked(tq)
}

// Do runs c and waits for its result (or for ctx). When a worker slot and a
// slot of the task are free and nothing of the task waits, c runs on the
// caller's goroutine, which saves two goroutine switches.
func (s *Scheduler) Do(ctx context.Context, c *Call) (Result, error) {
	if dl, ok := ctx.Deadline(); ok && (c.Deadline.IsZero() || dl.Before(c.Deadline)) {
		c.Deadline = dl
	}
	c.prepareRun(time.Now()) // before the lock; execute prepares again if c waits in a queue
	s.mu.Lock()
	tq, limit, err := s.admitLocked(c)
	if err != nil {
		s.mu.Unlock()
		return Result{}, err
	}
	if s.running < s.opts.Workers && s.resumers.len() == 0 && tq.calls.len() == 0 && slotFree(tq.task, limit) {
		// execute, with its lock sections merged into these two.
		s.running++
		s.startLocked(tq, c)
		ok := s.beginLocked(c)
		s.mu.Unlock()
		ran := ok && s.run(c)
		s.mu.Lock()
		if ok {
			s.endLocked(c, ran)
		}
		s.running--
		s.releaseLocked(c)
		s.dispatchLocked()
		s.checkIdleLocked()
		s.mu.Unlock()
		s.record(c)
		c.Done(c)
		return c.Result, nil
	}
	done := make(chan struct{})
	prev := c.Done
	c.Done = func(c *Call) {
		if prev != nil {
			prev(c)
		}
		close(done)
	}
	s.pushLocked(tq, c)
	s.dispatchLocked()
	s.mu.Unlock()
	select {
	case <-done:
		return c.Result, nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// admitLocked checks that c may be queued and returns its task's queue and
// concurrency (-1: no such task, for a call with a digest).
func (s *Scheduler) admitLocked(c *Call) (_ *taskQueue, limit int, _ error) {
	if s.draining {
		s.m.refused.WithLabelValues("draining").Inc()
		return nil, 0, ErrDraining
	}
	limit, ok := s.exec.Concurrency(c.Task)
	if !ok {
		if c.Digest == "" {
			s.m.refused.WithLabelValues("unknown_task").Inc()
			return nil, 0, fmt.Errorf("%w %q", ErrUnknownTask, c.Task)
		}
		// A call with a digest names its code: the executor fetches an
		// unknown task (one call of it at a time, slotFree).
		limit = -1
	}
	if s.queued >= s.opts.QueueSize {
		s.m.refused.WithLabelValues("queue_full").Inc()
		return nil, 0, ErrQueueFull
	}
	if c.Done == nil {
		c.Done = func(*Call) {}
	}
	cl := s.byName[c.Queue]
	if cl == nil {
		cl = s.byName[DefaultQueue]
	}
	ts := s.tasks[c.Task]
	if ts == nil {
		ts = &taskState{name: c.Task, m: s.m.task(c.Task)}
		s.tasks[c.Task] = ts
	}
	if err := s.tooLateLocked(c, ts, time.Now()); err != nil {
		return nil, 0, err
	}
	var tq *taskQueue
	for _, q := range ts.queues {
		if q.class == cl {
			tq = q
		}
	}
	if tq == nil {
		tq = &taskQueue{class: cl, task: ts}
		ts.queues = append(ts.queues, tq)
	}
	c.State = Received
	c.q = tq
	if c.ID != "" {
		s.live[c.ID] = c
	}
	return tq, limit, nil
}

func (s *Scheduler) hasSlotLocked(tq *taskQueue) bool {
	limit, ok := s.exec.Concurrency(tq.task.name)
	if !ok {
		limit = -1
	}
	return slotFree(tq.task, limit)
}

// slotFree says whether ts may start a call with concurrency limit (-1: the
// task is not loaded). A task removed by a reload still drains its queue
// (one at a time): the executor reports each call as an unknown task.
func slotFree(ts *taskState, limit int) bool {
	return ts.running < max(limit, 1) || (limit < 0 && ts.running == 0)
}

// readyLocked puts tq in the ready list if it has waiting calls and a slot.
func (s *Scheduler) readyLocked(tq *taskQueue) {
	if !tq.inReady && tq.calls.len() > 0 && s.hasSlotLocked(tq) {
		tq.inReady = true
		tq.class.ready.push(tq)
	}
}

// dispatchLocked hands free slots to resuming calls first, then starts
// workers while there are ready calls and free slots.
func (s *Scheduler) dispatchLocked() {
	for s.running < s.opts.Workers {
		if s.resumers.len() > 0 {
			s.running++
			s.resumeLocked()
			continue
		}
		c := s.nextLocked()
		if c == nil {
			return
		}
		s.running++
		go s.worker(c)
	}
}

// nextLocked takes the next call to run: a deferred call whose latest
// start has come, the control queue, then a call that waited past
// AgingAfter, then the weighted queues in smooth weighted round robin
// (inside a queue the ready task holding the fewest slots, round robin
// among equals); with nothing queued, the next deferred call.
func (s *Scheduler) nextLocked() *Call {
	var now time.Time
	if len(s.deferred) > 0 {
		now = time.Now()
		if c := s.takeDeferredLocked(now, false); c != nil {
			return c
		}
	}
	for {
		cl := s.pickClassLocked()
		if cl == nil {
			if len(s.deferred) == 0 {
				return nil
			}
			return s.takeDeferredLocked(now, true)
		}
		tq, _ := cl.ready.popMin(taskRunning)
		tq.inReady = false
		c, _ := tq.calls.pop()
		c.inQueue = false
		s.queued--
		cl.queued--
		cl.depth.Set(float64(cl.queued))
		s.m.queued.Set(float64(s.queued))
		if c.canceled {
			// Cancelled while queued: finish it without a slot.
			s.readyLocked(tq)
			s.pendingDone++
			go s.finishUnstarted(c, Result{Status: StatusCanceled, Error: "canceled before it started"})
			continue
		}
		s.startLocked(tq, c)
		s.readyLocked(tq)
		return c
	}
}

// taskRunning orders ready tasks for a free worker: the task holding the
// fewest slots goes first, so a task above its fair share of the workers
// waits while another has calls queued; among equals, round robin.
func taskRunning(tq *taskQueue) int { return tq.task.running }

func (s *Scheduler) pickClassLocked() *class {
	control := s.classes[0]
	if control.ready.len() > 0 {
		return control
	}
	var (
		best, starved *class
		total         int
		now           time.Time
	)
	for _, cl := range s.classes[1:] {
		tq, ok := cl.ready.peek()
		if !ok {
			continue
		}
		cl.cur += cl.weight
		total += cl.weight
		if best == nil || cl.cur > best.cur {
			best = cl
		}
		// Aging: a queue whose head waited past AgingAfter and that was not
		// served for as long is served now, whatever the weights say.
		if c, ok := tq.calls.peek(); ok {
			if now.IsZero() {
				now = time.Now()
			}
			if now.Sub(c.queuedAt) > s.opts.AgingAfter && now.Sub(cl.served) > s.opts.AgingAfter &&
				(starved == nil || cl.served.Before(starved.served)) {
				starved = cl
			}
		}
	}
	if best == nil {
		return nil
	}
	if starved != nil && starved != best {
		s.m.aged.Inc()
		best = starved
	}
	best.cur -= total
	best.served = now
	return best
}

func (s *Scheduler) startLocked(tq *taskQueue, c *Call) {
	tq.task.running++
	s.m.running.Set(float64(s.running))
	c.State = Started
}

// releaseLocked frees the task slot of a finished call.
func (s *Scheduler) releaseLocked(c *Call) {
	ts := c.q.task
	ts.running--
	s.m.running.Set(float64(s.running))
	for _, tq := range ts.queues {
		s.readyLocked(tq)
	}
	if s.live[c.ID] == c {
		delete(s.live, c.ID)
	}
}

// checkIdleLocked tells a waiting Drain that the last call is done.
func (s *Scheduler) checkIdleLocked() {
	if s.draining && s.running == 0 && s.parked == 0 && s.queued == 0 && s.pendingDone == 0 {
		s.closeIdleLocked()
	}
}

func (s *Scheduler) closeIdleLocked() {
	select {
	case <-s.idle:
	default:
		close(s.idle)
	}
}

// worker runs calls until none is ready, keeping its worker slot between them.
func (s *Scheduler) worker(c *Call) {
	for c != nil {
		s.execute(c)
		c.Done(c)
		s.mu.Lock()
		s.releaseLocked(c)
		if s.resumers.len() > 0 {
			s.resumeLocked() // this worker's slot goes to a resuming call
			c = nil
		} else if c = s.nextLocked(); c == nil {
			s.running--
			s.m.running.Set(float64(s.running))
			s.checkIdleLocked()
		}
		s.mu.Unlock()
	}
}

// execute runs c under its deadlines and records its result.
func (s *Scheduler) execute(c *Call) {
	c.prepareRun(time.Now())
	s.mu.Lock()
	ok := s.beginLocked(c)
	s.mu.Unlock()
	if ok {
		ran := s.run(c)
		s.mu.Lock()
		s.endLocked(c, ran)
		s.mu.Unlock()
	}
	s.record(c)
}

// prepareRun does, outside the scheduler's lock, what beginLocked needs:
// the start time and the context (runCtx: no timer of its own, this is the
// hot path).
func (c *Call) prepareRun(now time.Time) {
	c.Started = now
	c.run.Context, c.run.cancel = context.WithCancelCause(context.Background())
}

// beginLocked starts the run of c, prepared: one context carries its
// deadline, its max run and its cancel. It returns false, with c.Result
// set, for a call that may not start: past its start-by time or deadline,
// or canceled.
func (s *Scheduler) beginLocked(c *Call) bool {
	switch {
	case !c.StartBy.IsZero() && c.Started.After(c.StartBy):
		c.Result = Result{Status: StatusExpired, Error: "start-by deadline passed before the call could start"}
		return false
	case !c.Deadline.IsZero() && !c.Started.Before(c.Deadline):
		c.Result = Result{Status: StatusTimeout, Error: "deadline passed before the call could start"}
		return false
	case c.canceled:
		c.Result = Result{Status: StatusCanceled, Error: "canceled before it started"}
		return false
	}
	dl := c.Deadline
	if c.MaxRun > 0 && (dl.IsZero() || c.Started.Add(c.MaxRun).Before(dl)) {
		dl = c.Started.Add(c.MaxRun)
	}
	c.run.deadline = dl
	c.run.slot = slot{s: s, c: c}
	if s.cut.Load() {
		c.run.cancel(context.Canceled) // a drain ran out of time: it starts stopped, as the running ones were
	}
	s.startRunLocked(c, dl)
	return true
}

// run runs c, begun, through the executor (without the lock) and reports
// whether it ran (a journaled call that could not be marked started did
// not).
func (s *Scheduler) run(c *Call) bool {
	defer c.run.cancel(context.Canceled)
	if c.durable != nil {
		if err := c.durable.started(c); err != nil {
			c.Result = Result{Status: StatusFailed, Error: "not started: " + err.Error()}
			return false
		}
	}
	c.Result = s.exec.Execute(&c.run, c)
	return true
}

// endLocked ends the run of c: a call that ran and failed after a cancel,
// or after a drain ran out of time, is canceled.
func (s *Scheduler) endLocked(c *Call, ran bool) {
	s.endRunLocked(c)
	if ran {
		c.q.task.runs.add(time.Since(c.Started))
	}
	switch {
	case !ran || c.Result.OK():
	case c.canceled:
		c.Result = Result{Status: StatusCanceled, Error: "canceled while running"}
	case s.cut.Load():
		c.Result = Result{Status: StatusCanceled, Error: "canceled: shutdown deadline passed while the call ran"}
		c.cutByShutdown = true
	}
}

func (s *Scheduler) record(c *Call) {
	c.Finished = time.Now()
	c.State = Finished
	c.q.task.m.observe(c.Result.Status, c.Finished.Sub(c.Started))
	if !c.NeedBy.IsZero() && c.Finished.After(c.NeedBy) {
		s.m.needByMissed.Inc()
	}
}

// finishUnstarted ends a call that never got a worker slot.
func (s *Scheduler) finishUnstarted(c *Call, r Result) {
	c.Started = time.Now()
	c.Result = r
	s.record(c)
	s.mu.Lock()
	if s.live[c.ID] == c {
		delete(s.live, c.ID)
	}
	s.mu.Unlock()
	c.Done(c)
	s.mu.Lock()
	s.pendingDone--
	s.checkIdleLocked()
	s.mu.Unlock()
}

// Cancel cancels a queued or running call by id: a queued call finishes as
// canceled without running, a running one has its context canceled (the
// guest is stopped). It reports whether the call was found.
func (s *Scheduler) Cancel(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.live[id]
	if c == nil || c.canceled {
		return c != nil
	}
	c.canceled = true
	if c.deferred {
		s.deferredCanceled++
	}
	if c.running {
		c.run.cancel(context.Canceled)
	}
	return true
}

// Drain stops taking calls and waits until every queued and running call
// has finished, or ctx ends. Then running calls are canceled and queued
// ones finish as canceled; Drain returns once all are done, reporting how
// many it cut short. Journaled calls cut short are not finished in the
// journal (Durable): the next start recovers them as after a crash.
func (s *Scheduler) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.checkIdleLocked()
	s.mu.Unlock()
	select {
	case <-s.idle:
		return nil
	case <-ctx.Done():
	}
	s.cut.Store(true)
	s.mu.Lock()
	for _, c := range s.runs {
		c.run.cancel(context.Canceled)
	}
	var dropped []*Call
	for _, cl := range s.classes {
		for {
			tq, ok := cl.ready.pop()
			if !ok {
				break
			}
			tq.inReady = false
		}
		cl.queued = 0
		cl.depth.Set(0)
	}
	for _, ts := range s.tasks {
		for _, tq := range ts.queues {
			for {
				c, ok := tq.calls.pop()
				if !ok {
					break
				}
				c.inQueue = false
				dropped = append(dropped, c)
			}
		}
	}
	for _, c := range s.deferred {
		c.inQueue, c.deferred = false, false
		c.q.task.deferred--
		dropped = append(dropped, c)
	}
	s.deferred, s.deferredCanceled = nil, 0
	s.m.deferred.Set(0)
	s.queued = 0
	s.m.queued.Set(0)
	running := s.running + s.parked
	if running == 0 && s.pendingDone == 0 {
		s.closeIdleLocked()
	}
	s.mu.Unlock()
	for _, c := range dropped {
		c.Started = time.Now()
		c.Result = Result{Status: StatusCanceled, Error: "canceled: shutdown deadline passed before the call started"}
		c.cutByShutdown = true
		s.record(c)
		s.mu.Lock()
		delete(s.live, c.ID)
		s.mu.Unlock()
		c.Done(c)
	}
	<-s.idle
	return fmt.Errorf("drain deadline passed: %d queued calls canceled, %d running calls stopped", len(dropped), running)
}

// slotKey is the context key of the worker slot of a running call.
type slotKey struct{}

// slot is the worker slot of one running call c, guarded by the scheduler's mu.
type slot struct {
	s      *Scheduler
	c      *Call
	parked bool
}

// Blocking runs wait, which blocks (for another call, say), with the
// worker slot of the running call of ctx given back, so the scheduler can
// start another call meanwhile: a chain of calls each waiting for the next
// cannot deadlock the worker pool. When wait returns, Blocking waits for a
// free worker slot (resuming calls go before queued ones) and returns
// wait's error; it does not give up on ctx, so Workers is never exceeded by
// the calls that run.
//
// The call keeps its task slot: a task with concurrency n that waits for
// calls of itself would deadlock (until the deadline) once n of its calls
// wait; Wait refuses such a wait at once. When ctx carries no call of s (wait runs outside a call, or the
// call is already parked) or MaxParked calls are parked, wait runs with the
// slot kept.
func (s *Scheduler) Blocking(ctx context.Context, wait func() error) error {
	sl, _ := ctx.Value(slotKey{}).(*slot)
	if sl == nil || sl.s != s {
		return wait()
	}
	s.mu.Lock()
	if sl.parked || s.parked >= s.opts.MaxParked {
		if !sl.parked {
			s.m.parkRefused.Inc()
		}
		s.mu.Unlock()
		return wait()
	}
	sl.parked = true
	s.parked++
	s.running--
	s.m.running.Set(float64(s.running))
	s.m.parked.Set(float64(s.parked))
	s.dispatchLocked()
	s.mu.Unlock()

	err := wait()

	s.mu.Lock()
	var resumed chan struct{}
	if s.running < s.opts.Workers && s.resumers.len() == 0 {
		s.running++
	} else {
		resumed = make(chan struct{})
		s.resumers.push(resumed)
	}
	s.mu.Unlock()
	if resumed != nil {
		<-resumed // the slot was counted in running by whoever gave it
	}
	s.mu.Lock()
	sl.parked = false
	s.parked--
	s.m.running.Set(float64(s.running))
	s.m.parked.Set(float64(s.parked))
	s.mu.Unlock()
	return err
}

// Wait runs wait, which waits for c, a call made by the running call of ctx
// (synchronously with Do, or awaiting a call it submitted), in Blocking.
// It first refuses, with an error wrapping ErrCallCycle and without running
// wait, a wait that could never end: c, or the call at the end of what c
// waits for in turn, needs a slot of a task whose every slot is held by
// calls that wait, through this one, for it. Outside a call of s it runs
// wait as Blocking does.
func (s *Scheduler) Wait(ctx context.Context, c *Call, wait func() error) error {
	sl, _ := ctx.Value(slotKey{}).(*slot)
	if sl == nil || sl.s != s {
		return wait()
	}
	s.mu.Lock()
	if err := s.cycleLocked(sl.c, c); err != nil {
		s.mu.Unlock()
		s.m.cycles.Inc()
		s.log.Warn("call refused", "task", c.Task, "caller", sl.c.Task, "err", err)
		return err
	}
	sl.c.waitingOn, c.waitedBy = c, sl.c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		sl.c.waitingOn = nil
		if c.waitedBy == sl.c {
			c.waitedBy = nil
		}
		s.mu.Unlock()
	}()
	return s.Blocking(ctx, wait)
}

// maxChain bounds the wait-for chain cycleLocked follows.
const maxChain = 4096

// cycleLocked says whether x waiting for y can never end. The chain is x's
// waiters (the calls waiting for x, transitively), x, y, and the calls y
// waits for in turn, up to w, which waits for nothing. Every call of the
// chain but w holds a slot of its task and keeps it until w finishes; if w
// still needs a slot (it is queued, or new), and the chain holds all of
// its task's slots, w never starts.
func (s *Scheduler) cycleLocked(x, y *Call) error {
	var chain []*Call
	for a := x; a != nil && len(chain) < maxChain; a = a.waitedBy {
		chain = append(chain, a)
	}
	slices.Reverse(chain)
	w := y
	chain = append(chain, w)
	for w.waitingOn != nil && len(chain) < maxChain {
		w = w.waitingOn
		chain = append(chain, w)
	}
	if w.q != nil && !w.inQueue {
		return nil // running, finished or cancelled: it needs no slot
	}
	limit, ok := s.exec.Concurrency(w.Task)
	if !ok {
		return nil
	}
	limit = max(limit, 1)
	held := 0
	names := make([]string, len(chain))
	for i, a := range chain {
		names[i] = a.Task
		if a != w && a.Task == w.Task {
			held++
		}
	}
	if held < limit {
		return nil
	}
	return fmt.Errorf("%w: %s (%s has concurrency %d, all held by this chain)", ErrCallCycle, strings.Join(names, " -> "), w.Task, limit)
}

// resumeLocked gives a slot already counted in running to the first
// resuming call.
func (s *Scheduler) resumeLocked() {
	ch, _ := s.resumers.pop()
	close(ch)
}

// Stats is a snapshot of the scheduler's load.
type Stats struct {
	Queued, Running, Parked, Workers, QueueSize, MaxParked int
	Draining                                               bool
}

// Stats returns the current load.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Queued: s.queued, Running: s.running, Parked: s.parked, Workers: s.opts.Workers, QueueSize: s.opts.QueueSize, MaxParked: s.opts.MaxParked, Draining: s.draining}
}
