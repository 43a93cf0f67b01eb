package remote

import "github.com/outpost-edge/outpost/coordinator/calls"

// durableNode is the Node of a daemon: journaled calls on its scheduler.
type durableNode struct{ d *calls.Durable }

var _ Node = durableNode{}

// NewNode returns the Node view of d.
func NewNode(d *calls.Durable) Node { return durableNode{d} }

func (n durableNode) Accept(cs []*calls.Call) ([]calls.Outcome, error) { return n.d.Accept(cs) }
func (n durableNode) Unfinished(kind string) []string                  { return n.d.Unfinished(kind) }
func (n durableNode) Cancel(id string) bool                            { return n.d.Cancel(id) }
func (n durableNode) MarkReported(ids ...string) error                 { return n.d.Journal().MarkReported(ids...) }

func (n durableNode) Flush() error { return n.d.Journal().Flush() }

func (n durableNode) QueueRoom() int {
	st := n.d.Scheduler().Stats()
	if st.Draining {
		return 0
	}
	return max(0, st.QueueSize-st.Queued)
}

func (n durableNode) Outbox(kind string, max int) ([]*calls.Record, int, int64) {
	return n.d.Journal().Outbox(kind, max)
}
