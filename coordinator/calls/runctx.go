package calls

import (
	"container/heap"
	"context"
	"sync/atomic"
	"time"
)

// runCtx is the context of a running call (Scheduler.execute), kept in the
// call: its cancel, its deadline, its worker slot (Blocking, Wait) and the
// executor's values (ContextValuer).
//
// It is not a context.WithDeadline: a timer per call was a tenth of the
// cost of a no-op call through the daemon. The scheduler keeps its running
// calls in a heap on their deadlines with one timer set at the earliest
// (runs, expire); a call past its deadline is canceled with the cause
// context.DeadlineExceeded, and Err says context.DeadlineExceeded as a
// context.WithDeadline would. Done, Cause and the cancellation of derived
// contexts are those of the embedded context.WithCancelCause of
// Background: contexts derived from a runCtx are canceled with it without a
// goroutine each.
type runCtx struct {
	context.Context
	cancel   context.CancelCauseFunc
	deadline time.Time   // zero: none
	expired  atomic.Bool // canceled because the deadline passed
	slot     slot
	idx      int // in the scheduler's runs heap, -1 when not in it
}

func (r *runCtx) Deadline() (time.Time, bool) { return r.deadline, !r.deadline.IsZero() }

func (r *runCtx) Err() error {
	err := r.Context.Err()
	if err != nil && r.expired.Load() {
		return context.DeadlineExceeded
	}
	return err
}

func (r *runCtx) Value(key any) any {
	if key == (slotKey{}) {
		return &r.slot
	}
	if v := r.slot.s.valuer; v != nil {
		if val := v.ContextValue(r.slot.c, key); val != nil {
			return val
		}
	}
	return r.Context.Value(key)
}

// expire cancels the call for its deadline.
func (r *runCtx) expire() {
	r.expired.Store(true)
	r.cancel(context.DeadlineExceeded)
}

// runHeap is the running calls, earliest deadline first (no deadline last).
type runHeap []*Call

func (h runHeap) Len() int { return len(h) }

func (h runHeap) Less(i, j int) bool {
	a, b := h[i].run.deadline, h[j].run.deadline
	return !a.IsZero() && (b.IsZero() || a.Before(b))
}

func (h runHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].run.idx, h[j].run.idx = i, j
}

func (h *runHeap) Push(x any) {
	c := x.(*Call)
	c.run.idx = len(*h)
	*h = append(*h, c)
}

func (h *runHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.run.idx = -1
	return c
}

// startRunLocked sets up c's context with deadline dl (zero: none) and
// makes it reachable by Cancel, by a drain out of time and, with a
// deadline, by the deadline timer.
func (s *Scheduler) startRunLocked(c *Call, dl time.Time) {
	heap.Push(&s.runs, c)
	c.running = true
	if dl.IsZero() {
		return
	}
	if s.armedAt.IsZero() || dl.Before(s.armedAt) {
		s.armLocked(dl)
	}
}

// armLocked sets the deadline timer to fire at dl.
func (s *Scheduler) armLocked(dl time.Time) {
	s.armedAt = dl
	if s.timer == nil {
		s.timer = time.AfterFunc(time.Until(dl), s.expire)
	} else {
		s.timer.Reset(time.Until(dl))
	}
}

// endRunLocked undoes startRunLocked. The timer stays set: when it fires
// for calls that have ended it finds nothing due and is set for the
// earliest deadline left.
func (s *Scheduler) endRunLocked(c *Call) {
	if c.run.idx >= 0 { // else expire took it out
		heap.Remove(&s.runs, c.run.idx)
	}
	c.running = false
}

// expire cancels the running calls past their deadline and sets the timer
// for the next deadline.
func (s *Scheduler) expire() {
	var due []*Call
	s.mu.Lock()
	now := time.Now()
	for len(s.runs) > 0 {
		c := s.runs[0]
		if c.run.deadline.IsZero() || c.run.deadline.After(now) {
			break
		}
		heap.Pop(&s.runs)
		due = append(due, c)
	}
	s.armedAt = time.Time{}
	if len(s.runs) > 0 && !s.runs[0].run.deadline.IsZero() {
		s.armLocked(s.runs[0].run.deadline)
	}
	s.mu.Unlock()
	for _, c := range due {
		c.run.expire()
	}
}
