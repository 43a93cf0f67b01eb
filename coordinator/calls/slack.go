package calls

import (
	"fmt"
	"slices"
	"time"
)

// Deadline-aware scheduling of calls with a NeedBy time (the calls a task
// makes with call_async; docs/architecture.md, "Deadline-aware
// scheduling"). Such a call is not queued in order: it waits in the
// deferred list, sorted by its latest start, the NeedBy time minus the
// task's estimated run time with a margin (latestStart). A free worker
// takes, in this order: a deferred call whose latest start has come
// (urgent: before any queued call), the queued calls as usual, and, when
// nothing is queued, the deferred call with the earliest latest start (the
// node is idle: run it early). A call whose NeedBy is nearer than the
// estimated run time is refused at once with ErrTooLate.

// runSamples is how many recent run times of a task the estimate looks at.
const runSamples = 16

// slackMargin is added to the estimated run of a deferred call: the time
// a free worker takes to pick it up and the guest to start.
const slackMargin = 10 * time.Millisecond

// runTimes keeps a task's recent run times.
type runTimes struct {
	d [runSamples]time.Duration
	n int // samples taken, all time
}

func (r *runTimes) add(d time.Duration) {
	r.d[r.n%runSamples] = d
	r.n++
}

// estimate is the longest of the recent run times (0 with none yet): a
// deferred call is started early enough for a run as slow as those.
func (r *runTimes) estimate() time.Duration {
	return slices.Max(r.d[:])
}

// latestStart is when c must start to finish by its NeedBy, from est.
func latestStart(c *Call, est time.Duration) time.Time {
	return c.NeedBy.Add(-(est + est/2 + slackMargin))
}

// tooLateLocked returns an error wrapping ErrTooLate if c cannot finish by
// its NeedBy even if it started now.
func (s *Scheduler) tooLateLocked(c *Call, ts *taskState, now time.Time) error {
	if c.NeedBy.IsZero() {
		return nil
	}
	est := ts.runs.estimate()
	if left := c.NeedBy.Sub(now); left < est {
		s.m.refused.WithLabelValues("too_late").Inc()
		return fmt.Errorf("%w: %s is needed in %s, and its recent runs took up to %s", ErrTooLate, c.Task, max(left, 0).Round(time.Millisecond), est.Round(time.Millisecond))
	}
	return nil
}

// deferLocked puts c, admitted, in the deferred list.
func (s *Scheduler) deferLocked(c *Call) {
	c.queuedAt = time.Now()
	c.inQueue, c.deferred = true, true
	c.latest = latestStart(c, c.q.task.runs.estimate())
	i, _ := slices.BinarySearchFunc(s.deferred, c, func(a, b *Call) int { return a.latest.Compare(b.latest) })
	s.deferred = slices.Insert(s.deferred, i, c)
	c.q.task.deferred++
	s.queued++
	s.m.queued.Set(float64(s.queued))
	s.m.deferred.Set(float64(len(s.deferred)))
}

// takeDeferredLocked takes the first deferred call (earliest latest start)
// whose task has a free slot; only one whose latest start has come unless
// any is set. Canceled calls met on the way finish without running.
//
// A fan-out leaves thousands of calls of one task deferred while its
// slots are taken: each task's slot is looked up once per scan, and the
// scan stops as soon as every call left belongs to a task without a free
// slot and none of them is canceled.
func (s *Scheduler) takeDeferredLocked(now time.Time, any bool) *Call {
	var (
		full     []*taskState // tasks met without a free slot
		fullLeft int          // their calls after the one looked at
	)
	for i := 0; i < len(s.deferred); i++ {
		c := s.deferred[i]
		if !any && c.latest.After(now) {
			return nil
		}
		ts := c.q.task
		wasFull := slices.Contains(full, ts)
		if !wasFull && !c.canceled && !s.hasSlotLocked(c.q) {
			full = append(full, ts)
			fullLeft += ts.deferred
			wasFull = true
		}
		if wasFull {
			fullLeft--
		}
		if !c.canceled && wasFull {
			if s.deferredCanceled == 0 && fullLeft == len(s.deferred)-i-1 {
				return nil
			}
			continue
		}
		s.removeDeferredLocked(i)
		i--
		if c.canceled {
			s.deferredCanceled--
			s.pendingDone++
			go s.finishUnstarted(c, Result{Status: StatusCanceled, Error: "canceled before it started"})
			continue
		}
		if any && now.Before(c.latest) {
			s.m.early.Inc()
		}
		s.startLocked(c.q, c)
		return c
	}
	return nil
}

// removeDeferredLocked takes the call at i out of the deferred list. The
// first call, the one usually taken, goes without moving the others.
func (s *Scheduler) removeDeferredLocked(i int) {
	c := s.deferred[i]
	if i == 0 {
		s.deferred[0] = nil
		s.deferred = s.deferred[1:]
	} else {
		s.deferred = slices.Delete(s.deferred, i, i+1)
	}
	c.inQueue, c.deferred = false, false
	c.q.task.deferred--
	s.queued--
	s.m.queued.Set(float64(s.queued))
	s.m.deferred.Set(float64(len(s.deferred)))
}
