package calls

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
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

// Options size a Scheduler.
type Options struct {
	Workers   int // calls running at once, over all tasks
	QueueSize int // calls waiting, over all tasks
}

// Scheduler runs calls with a global worker cap and per-task concurrency
// limits. Waiting calls sit in one FIFO per task; tasks with waiting calls
// and free slots take turns (round robin), so a busy task cannot starve
// the others. Workers are goroutines started on demand, up to Workers, that
// keep taking calls while there are any.
//
// Everything below is guarded by mu; Done callbacks and Executor run
// without it.
type Scheduler struct {
	exec Executor
	opts Options
	log  *slog.Logger
	m    *metrics

	base   context.Context // parent of every running call; canceled when a drain runs out of time
	cancel context.CancelFunc

	mu       sync.Mutex
	queues   map[string]*taskQueue
	ready    fifo[*taskQueue] // tasks with waiting calls and a free slot
	queued   int
	running  int
	draining bool
	idle     chan struct{} // closed when draining and nothing is queued or running
}

type taskQueue struct {
	name    string
	calls   fifo[*Call]
	running int
	inReady bool
	m       *taskMetrics
}

// NewScheduler returns a scheduler running calls through exec. reg may be nil.
func NewScheduler(exec Executor, opts Options, log *slog.Logger, reg prometheus.Registerer) *Scheduler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{
		exec: exec, opts: opts, log: log, m: newMetrics(reg),
		base: ctx, cancel: cancel,
		queues: map[string]*taskQueue{},
		idle:   make(chan struct{}),
	}
	return s
}

// Submit queues c to run. It never blocks: a full queue, a draining
// scheduler or an unknown task is an error and c.Done is not called.
func (s *Scheduler) Submit(c *Call) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tq, err := s.admitLocked(c)
	if err != nil {
		return err
	}
	tq.calls.push(c)
	s.queued++
	s.m.queued.Set(float64(s.queued))
	s.readyLocked(tq)
	s.dispatchLocked()
	return nil
}

// Do runs c and waits for its result (or for ctx). When a worker slot and a
// slot of the task are free and nothing of the task waits, c runs on the
// caller's goroutine, which saves two goroutine switches.
func (s *Scheduler) Do(ctx context.Context, c *Call) (Result, error) {
	if dl, ok := ctx.Deadline(); ok && (c.Deadline.IsZero() || dl.Before(c.Deadline)) {
		c.Deadline = dl
	}
	s.mu.Lock()
	tq, err := s.admitLocked(c)
	if err != nil {
		s.mu.Unlock()
		return Result{}, err
	}
	if s.running < s.opts.Workers && tq.calls.len() == 0 && s.hasSlotLocked(tq) {
		s.running++
		s.startLocked(tq, c)
		s.mu.Unlock()
		s.execute(c)
		s.mu.Lock()
		s.running--
		s.releaseLocked(tq)
		s.dispatchLocked()
		s.checkIdleLocked()
		s.mu.Unlock()
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
	tq.calls.push(c)
	s.queued++
	s.m.queued.Set(float64(s.queued))
	s.readyLocked(tq)
	s.dispatchLocked()
	s.mu.Unlock()
	select {
	case <-done:
		return c.Result, nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// admitLocked checks that c may be queued and returns its task's queue.
func (s *Scheduler) admitLocked(c *Call) (*taskQueue, error) {
	if s.draining {
		s.m.refused.WithLabelValues("draining").Inc()
		return nil, ErrDraining
	}
	if _, ok := s.exec.Concurrency(c.Task); !ok {
		s.m.refused.WithLabelValues("unknown_task").Inc()
		return nil, fmt.Errorf("%w %q", ErrUnknownTask, c.Task)
	}
	if s.queued >= s.opts.QueueSize {
		s.m.refused.WithLabelValues("queue_full").Inc()
		return nil, ErrQueueFull
	}
	if c.Done == nil {
		c.Done = func(*Call) {}
	}
	tq := s.queues[c.Task]
	if tq == nil {
		tq = &taskQueue{name: c.Task, m: s.m.task(c.Task)}
		s.queues[c.Task] = tq
	}
	c.State = Received
	c.q = tq
	return tq, nil
}

func (s *Scheduler) hasSlotLocked(tq *taskQueue) bool {
	limit, ok := s.exec.Concurrency(tq.name)
	// A task removed by a reload still drains its queue (one at a time):
	// the executor reports each call as an unknown task.
	return tq.running < max(limit, 1) || (!ok && tq.running == 0)
}

// readyLocked puts tq in the ready list if it has waiting calls and a slot.
func (s *Scheduler) readyLocked(tq *taskQueue) {
	if !tq.inReady && tq.calls.len() > 0 && s.hasSlotLocked(tq) {
		tq.inReady = true
		s.ready.push(tq)
	}
}

// dispatchLocked starts workers while there are ready calls and free slots.
func (s *Scheduler) dispatchLocked() {
	for s.running < s.opts.Workers {
		c := s.nextLocked()
		if c == nil {
			return
		}
		s.running++
		go s.worker(c)
	}
}

// nextLocked takes the next call to run, round robin over ready tasks.
func (s *Scheduler) nextLocked() *Call {
	tq, ok := s.ready.pop()
	if !ok {
		return nil
	}
	tq.inReady = false
	c, _ := tq.calls.pop()
	s.queued--
	s.m.queued.Set(float64(s.queued))
	s.startLocked(tq, c)
	s.readyLocked(tq)
	return c
}

func (s *Scheduler) startLocked(tq *taskQueue, c *Call) {
	tq.running++
	s.m.running.Set(float64(s.running))
	c.State = Started
}

// releaseLocked frees the task slot of a finished call.
func (s *Scheduler) releaseLocked(tq *taskQueue) {
	tq.running--
	s.m.running.Set(float64(s.running))
	s.readyLocked(tq)
}

// checkIdleLocked tells a waiting Drain that the last call is done.
func (s *Scheduler) checkIdleLocked() {
	if s.draining && s.running == 0 && s.queued == 0 {
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
		s.releaseLocked(c.q)
		if c = s.nextLocked(); c == nil {
			s.running--
			s.m.running.Set(float64(s.running))
			s.checkIdleLocked()
		}
		s.mu.Unlock()
	}
}

// execute runs c under its deadline and records its result.
func (s *Scheduler) execute(c *Call) {
	c.Started = time.Now()
	ctx := s.base
	if !c.Deadline.IsZero() {
		if !c.Started.Before(c.Deadline) {
			c.Result = Result{Status: StatusTimeout, Error: "deadline passed before the call could start"}
			s.record(c)
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, c.Deadline)
		defer cancel()
	}
	c.Result = s.exec.Execute(ctx, c)
	if s.base.Err() != nil && !c.Result.OK() {
		c.Result = Result{Status: StatusCanceled, Error: "canceled: shutdown deadline passed while the call ran"}
	}
	s.record(c)
}

func (s *Scheduler) record(c *Call) {
	c.Finished = time.Now()
	c.State = Finished
	c.q.m.observe(c.Result.Status, c.Finished.Sub(c.Started))
}

// Drain stops taking calls and waits until every queued and running call
// has finished, or ctx ends. Then running calls are canceled and queued
// ones finish as canceled; Drain returns once all are done, reporting how
// many it cut short.
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
	s.cancel()
	s.mu.Lock()
	var dropped []*Call
	for {
		tq, ok := s.ready.pop()
		if !ok {
			break
		}
		tq.inReady = false
	}
	for _, tq := range s.queues {
		for {
			c, ok := tq.calls.pop()
			if !ok {
				break
			}
			dropped = append(dropped, c)
		}
	}
	s.queued = 0
	s.m.queued.Set(0)
	running := s.running
	if running == 0 {
		s.closeIdleLocked()
	}
	s.mu.Unlock()
	for _, c := range dropped {
		c.Started = time.Now()
		c.Result = Result{Status: StatusCanceled, Error: "canceled: shutdown deadline passed before the call started"}
		s.record(c)
		c.Done(c)
	}
	<-s.idle
	return fmt.Errorf("drain deadline passed: %d queued calls canceled, %d running calls stopped", len(dropped), running)
}

// Stats is a snapshot of the scheduler's load.
type Stats struct {
	Queued, Running, Workers int
	Draining                 bool
}

// Stats returns the current load.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Queued: s.queued, Running: s.running, Workers: s.opts.Workers, Draining: s.draining}
}
