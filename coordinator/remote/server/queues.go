package server

import (
	"container/heap"
	"time"
)

// A node's pending calls, one heap per queue (priority, then enqueue
// order), taken in the order the node advertises in its poll: the control
// queue first (strict priority), then the weighted queues by smooth
// weighted round robin, where a queue whose oldest call waited past the
// node's aging bound and that was not served for as long goes next
// whatever the weights say, as the node's own scheduler orders them
// (coordinator/calls). A node that advertises no weights gets the calls of
// all its queues in one order: control first, then priority, then enqueue
// order.

// queueSet is a node's pending calls by queue.
type queueSet struct {
	queues map[string]*pendingQueue
	n      int
}

// pendingQueue is one queue's pending calls and its share of the polls.
type pendingQueue struct {
	name   string
	calls  pendingHeap
	cur    int       // smooth weighted round robin credit
	served time.Time // when a call of this queue was last taken
}

// advertised is what a node's poll says about its queues.
type advertised struct {
	weights map[string]int // weighted queues; absent ones weigh 1
	aging   time.Duration  // 0: no aging
}

func (a advertised) ordered() bool { return len(a.weights) > 0 || a.aging > 0 }

func (s *queueSet) Len() int { return s.n }

func (s *queueSet) push(c *Call) {
	if s.queues == nil {
		s.queues = map[string]*pendingQueue{}
	}
	q := s.queues[queueName(c)]
	if q == nil {
		q = &pendingQueue{name: queueName(c)}
		s.queues[q.name] = q
	}
	heap.Push(&q.calls, c)
	s.n++
}

func queueName(c *Call) string {
	if c.Queue == "" {
		return "default"
	}
	return c.Queue
}

// next returns the queue the next call is taken from (nil when none is
// pending) without taking it: take does, once the caller decided to.
func (s *queueSet) next(a advertised, now time.Time) *pendingQueue {
	var best, starved *pendingQueue
	for _, q := range s.queues {
		if q.calls.Len() == 0 {
			continue
		}
		switch {
		case q.name == "control":
			return q
		case !a.ordered():
			if best == nil || before(q.calls[0], best.calls[0]) {
				best = q
			}
			continue
		case best == nil || q.cur+a.weight(q.name) > best.cur+a.weight(best.name) ||
			q.cur+a.weight(q.name) == best.cur+a.weight(best.name) && q.name < best.name:
			best = q
		}
		if a.aging > 0 && now.Sub(q.calls[0].Enqueued) > a.aging && now.Sub(q.served) > a.aging &&
			(starved == nil || q.served.Before(starved.served)) {
			starved = q
		}
	}
	if starved != nil {
		return starved
	}
	return best
}

func (a advertised) weight(queue string) int {
	if w, ok := a.weights[queue]; ok && w > 0 {
		return w
	}
	return 1
}

// take pops the head of q, chosen by next, and charges q for it.
func (s *queueSet) take(q *pendingQueue, a advertised, now time.Time) *Call {
	if q.name != "control" && a.ordered() {
		total := 0
		for _, o := range s.queues {
			if o.calls.Len() > 0 && o.name != "control" {
				o.cur += a.weight(o.name)
				total += a.weight(o.name)
			}
		}
		q.cur -= total
	}
	q.served = now
	s.n--
	return heap.Pop(&q.calls).(*Call)
}
