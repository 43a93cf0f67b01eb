package server

import (
	"context"
	"errors"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// store holds the control plane's queues: calls, per-node sessions (boot
// id, delivery seqs, live pollers), leases and results. Two engines
// implement it with the same semantics (docs/cloud-link.md, "Server state
// machine"): badgerStore, embedded, one process, state in memory and
// written through to badger; and pgStore, PostgreSQL, shared by any number
// of replicas. The HTTP handlers in server.go validate requests and hold
// long polls; every state change happens in a store method.
type store interface {
	// enqueue adds validated calls; an id that exists is not added again
	// (its item says its state).
	enqueue(ctx context.Context, calls []Call) ([]EnqueueItem, error)
	// beginPoll starts a poll of node: the live-poller check (a
	// *pollRefusal), expiry of leases that ran out, acknowledgements and
	// redelivery of unacknowledged calls, renewals, and the cancels and
	// lost leases to report. endPoll must follow a ticket.
	beginPoll(ctx context.Context, node string, req *remote.PollRequest) (*pollTicket, remote.PollResponse, error)
	// take hands out pending calls up to the node's free capacity and the
	// poll's byte budget in the order the poll advertises (queues.go:
	// control queue first, then the weighted queues by smooth weighted
	// round robin with aging; inside a queue priority, then enqueue order),
	// and expires those past their start-by ttl.
	take(ctx context.Context, t *pollTicket) ([]remote.WireCall, error)
	// endPoll ends a poll; gone means the poller's connection dropped, so
	// it stops being live at once.
	endPoll(t *pollTicket, gone bool)
	// putResults records results whose hash was checked, each with its
	// HTTP status: 201 stored, 200 replay, 409 conflict, 410 cancelled or
	// expired, 404 unknown. The first result of a call wins.
	putResults(ctx context.Context, node string, rs []remote.Result) ([]int, error)
	// nodeCalls lists a node's calls in the wanted states (all when empty).
	nodeCalls(ctx context.Context, node string, want map[string]bool) ([]remote.CallState, error)
	// get returns the calls of ids that exist, without their inputs.
	get(ctx context.Context, ids []string) ([]Call, error)
	// inputs returns the inputs of the calls of ids that exist.
	inputs(ctx context.Context, ids []string) (map[string][]byte, error)
	// list returns the calls f selects, without inputs.
	list(ctx context.Context, f callFilter) ([]Call, error)
	// cancel cancels a call that is not final (errNoCall, errFinal).
	cancel(ctx context.Context, id string) error
	// nodes lists the nodes that polled, have calls or have labels, by id,
	// with their labels and pending and held counts; Online is set for a
	// node polling now or whose last poll began under onlineWindow ago.
	nodes(ctx context.Context) ([]NodeInfo, error)
	// setLabels sets and removes labels of node (added when unknown) and
	// returns its labels after the change.
	setLabels(ctx context.Context, node string, set map[string]string, remove []string) (map[string]string, error)
	// leaseJob takes or renews the lease on driving job for holder (a
	// replicaID) until ttl from now (the database's clock on PostgreSQL)
	// and reports whether holder has it: it does when no one held it, the
	// lease lapsed, its holder is a replica that stopped marking itself
	// alive (PostgreSQL: ReplicaTimeout), or holder held it already.
	// release gives it up instead (false).
	leaseJob(ctx context.Context, job, holder string, ttl time.Duration, release bool) (bool, error)
	// createJob stores a new job (false: the id exists); getJob (errNoJob)
	// and listJobs read jobs; updateJob changes one with f under a lock
	// (a row lock on PostgreSQL) and stores it when f returns true.
	createJob(ctx context.Context, j Job) (bool, error)
	getJob(ctx context.Context, id string) (Job, error)
	listJobs(ctx context.Context) ([]Job, error)
	updateJob(ctx context.Context, id string, f func(*Job) bool) (bool, error)
	// storeMessages stores a node's device messages in the order given,
	// numbered on from the node's last seq (the first is 1), and drops
	// (counts as duplicates) those whose id the node sent in the last
	// messageIDTTL, consumed or not, or earlier in msgs; it returns once
	// they are durable. Concurrent batches of one node are numbered one
	// after the other, without gaps, on every replica.
	storeMessages(ctx context.Context, node string, msgs []remote.Message) (remote.MessagesResponse, error)
	// messages lists node's stored messages after seq after ("": every
	// node's, by node then seq), at most limit.
	messages(ctx context.Context, node string, after uint64, limit int) ([]StoredMessage, error)
	// consumeMessages deletes node's messages up to seq through and
	// returns how many; their ids are still remembered.
	consumeMessages(ctx context.Context, node string, through uint64) (int, error)
	// nodeWake is closed when node's queue may have changed (enqueue,
	// cancel); changed when any call may have changed state. Take the
	// channel before looking at the state it guards.
	nodeWake(node string) <-chan struct{}
	// replicaID names this process among the replicas of the store.
	replicaID() string
	changed() <-chan struct{}
	close() error
}

// callFilter selects calls (GET /api/v1/calls): of node, in state (""
// matches any) and with every one of labels.
type callFilter struct {
	node, state string
	labels      map[string]string
}

// match says whether f selects c.
func (f callFilter) match(c *Call) bool {
	for k, v := range f.labels {
		if got, ok := c.Labels[k]; !ok || got != v {
			return false
		}
	}
	return (f.node == "" || c.Node == f.node) && (f.state == "" || c.State == f.state)
}

// pollTicket is one poll in flight.
type pollTicket struct {
	node string
	req  *remote.PollRequest
	n    *node // badger
	id   int64 // postgres: its row in node_polls
}

// pollRefusal is a poll answered before it starts (409, 410).
type pollRefusal struct {
	code       int
	msg        string
	retryAfter int // seconds; 0: none
}

func (e *pollRefusal) Error() string { return e.msg }

// onlineWindow: a node whose last poll began this recently is online
// (twice the link's default long-poll wait, with room for a retry).
const onlineWindow = time.Minute

var (
	errNoCall = errors.New("no such call")
	errFinal  = errors.New("call is final")
)

// pollCallBudget is how many bytes of calls one poll response carries at
// most (the first call always goes): the rest of remote.MaxResponseBody is
// left for the lost and cancel lists.
const pollCallBudget = remote.MaxResponseBody - 1<<20

// wireSize is an upper bound on the JSON size of c in a poll response.
func wireSize(c *Call) int {
	n := (len(c.Input)+2)/3*4 + 2*(len(c.ID)+len(c.Task)+len(c.Key)+len(c.Queue)+len(c.Digest)) + 512
	for k, v := range c.Labels {
		n += 2*(len(k)+len(v)) + 6
	}
	return n
}

// wireCall is c as delivered with seq, its lease and the start-by time left.
func wireCall(c *Call, seq uint64, lease time.Duration, startByMS int64) remote.WireCall {
	return remote.WireCall{
		Seq: seq, ID: c.ID, Attempt: c.Attempt, Task: c.Task, Input: c.Input, Queue: c.Queue, Priority: c.Priority, Labels: c.Labels,
		Effect: c.Effect, IdempotencyKey: c.Key, LeaseMS: lease.Milliseconds(), MaxRunMS: c.MaxRunMS,
		Digest: c.Digest, StartByMS: startByMS,
	}
}

// expiredResult is the result the server records for a call whose start-by
// ttl passed while it was queued.
func expiredResult(c *Call) *remote.Result {
	const msg = "start-by ttl passed while queued on the control plane"
	return &remote.Result{CallID: c.ID, Attempt: c.Attempt, Status: "expired", Error: msg, Hash: remote.ResultHash("expired", nil, msg)}
}
