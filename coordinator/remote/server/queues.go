package server

import (
	"container/heap"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// A node's pending calls are taken in the order the node advertises in its
// poll: the control queue first (strict priority), then the weighted
// queues by smooth weighted round robin, where a queue whose oldest call
// waited past the node's aging bound and that was not served for as long
// goes next whatever the weights say, as the node's own scheduler orders
// them (coordinator/calls). Inside a queue: priority, then enqueue order.
// A node that advertises no weights and no aging gets the calls of all its
// queues in one order: control first, then priority, then enqueue order.
//
// Both engines run this selection: badger over one heap per queue it keeps
// in memory, PostgreSQL over the heads of each queue read in the take's
// transaction, with the credits and last-served times of node_queues.

// queueSet is a node's pending calls by queue.
type queueSet struct {
	queues map[string]*pendingQueue
	n      int
}

// pendingQueue is one queue's pending calls and its share of the polls.
type pendingQueue struct {
	name   string
	calls  pendingHeap
	cur    int64     // smooth weighted round robin credit
	served time.Time // when a call of this queue was last taken
}

// advertised is what a node's poll says about its queues.
type advertised struct {
	weights map[string]int // weighted queues; absent ones weigh 1
	aging   time.Duration  // 0: no aging
}

func advertisedBy(req *remote.PollRequest) advertised {
	return advertised{weights: req.QueueWeights, aging: time.Duration(req.AgingMS) * time.Millisecond}
}

func (a advertised) ordered() bool { return len(a.weights) > 0 || a.aging > 0 }

func (a advertised) weight(queue string) int64 {
	if w, ok := a.weights[queue]; ok && w > 0 {
		return int64(w)
	}
	return 1
}

func (s *queueSet) Len() int { return s.n }

// queue returns the queue called name, added when missing.
func (s *queueSet) queue(name string) *pendingQueue {
	if s.queues == nil {
		s.queues = map[string]*pendingQueue{}
	}
	q := s.queues[name]
	if q == nil {
		q = &pendingQueue{name: name}
		s.queues[name] = q
	}
	return q
}

func (s *queueSet) push(c *Call) {
	heap.Push(&s.queue(queueName(c)).calls, c)
	s.n++
}

// queueName is the queue a call is ordered in: no queue is "default".
func queueName(c *Call) string {
	if c.Queue == "" {
		return "default"
	}
	return c.Queue
}

// next returns the queue the next call is taken from (nil when none is
// pending).
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

// verdict is what a take does with the head of the queue next chose.
type verdict int

const (
	deliver verdict = iota // hand it out: the queue is charged and served
	drop                   // remove it without charging its queue (cancelled, expired)
	stop                   // the poll is full
)

// drain offers the heads of the queues to f in the advertised order until
// f says stop or no call is pending, and removes those f delivers or drops.
func (s *queueSet) drain(a advertised, now time.Time, f func(*Call) verdict) {
	for {
		q := s.next(a, now)
		if q == nil {
			return
		}
		switch f(q.calls[0]) {
		case stop:
			return
		case deliver:
			s.charge(q, a, now)
		}
		heap.Pop(&q.calls)
		s.n--
	}
}

// charge accounts a call of q being delivered: every weighted queue with
// calls earns its weight and q pays the sum.
func (s *queueSet) charge(q *pendingQueue, a advertised, now time.Time) {
	q.served = now
	if q.name == "control" || !a.ordered() {
		return
	}
	var total int64
	for _, o := range s.queues {
		if o.calls.Len() > 0 && o.name != "control" {
			o.cur += a.weight(o.name)
			total += a.weight(o.name)
		}
	}
	q.cur -= total
}

// pendingHeap orders a queue's pending calls: priority, order.
type pendingHeap []*Call

func (h pendingHeap) Len() int           { return len(h) }
func (h pendingHeap) Less(i, j int) bool { return before(h[i], h[j]) }
func (h pendingHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *pendingHeap) Push(x any)        { c := x.(*Call); c.index = len(*h); *h = append(*h, c) }
func (h *pendingHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}

var _ heap.Interface = (*pendingHeap)(nil)

// before orders pending calls: control queue, priority, order.
func before(a, b *Call) bool {
	if (a.Queue == "control") != (b.Queue == "control") {
		return a.Queue == "control"
	}
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return a.Order < b.Order
}
