package remote_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// memNode is a light remote.Node for fleet tests: calls run (echo) as they
// are accepted and their results wait in an in-memory outbox. It stands
// in for calls.Durable so that hundreds of real remote.Clients fit in one
// test; the journal's own guarantees are tested in package calls.
type memNode struct {
	mu   sync.Mutex
	recs map[string]*calls.Record
	runs map[string]int
	link atomic.Pointer[remote.Client]
}

var _ remote.Node = (*memNode)(nil)

func newMemNode() *memNode {
	return &memNode{recs: map[string]*calls.Record{}, runs: map[string]int{}}
}

func (n *memNode) Accept(cs []*calls.Call) ([]calls.Outcome, error) {
	n.mu.Lock()
	outs := make([]calls.Outcome, len(cs))
	for i, c := range cs {
		if r, ok := n.recs[c.ID]; ok {
			outs[i] = calls.Replayed
			r.State = calls.Finished // its result goes out again
			continue
		}
		n.runs[c.ID]++
		n.recs[c.ID] = &calls.Record{ID: c.ID, Task: c.Task, Source: c.Source, Effect: c.Effect, Attempt: c.Attempt,
			State: calls.Finished, Result: &calls.Result{Status: calls.StatusOK, Output: c.Input}}
	}
	n.mu.Unlock()
	if l := n.link.Load(); l != nil {
		l.Notify()
	}
	return outs, nil
}

func (n *memNode) Unfinished(string) []string { return nil }
func (n *memNode) Cancel(string) bool         { return false }
func (n *memNode) QueueRoom() int             { return 100 }
func (n *memNode) Flush() error               { return nil }

func (n *memNode) Outbox(kind string, max int) ([]*calls.Record, int, int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var recs []*calls.Record
	count := 0
	for _, r := range n.recs {
		if r.State != calls.Finished || r.Source.Kind != kind {
			continue
		}
		count++
		if len(recs) < max {
			cp := *r
			recs = append(recs, &cp)
		}
	}
	return recs, count, 0
}

func (n *memNode) MarkReported(ids ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, id := range ids {
		if r, ok := n.recs[id]; ok {
			r.State = calls.Reported
		}
	}
	return nil
}

// 200 nodes (real remote.Clients over in-memory nodes) fail against a
// control plane that is down, then it comes back: full-jitter backoff
// spreads their first polls over the backoff window instead of one burst,
// and every node gets its queued call once.
func TestLinkFleetAfterOutage(t *testing.T) {
	const (
		nodes  = 200
		base   = 50 * time.Millisecond
		ceil   = time.Second
		outage = 2 * time.Second
	)
	cl := startCloud(t, server.Options{Lease: 10 * time.Second})
	front := startTCPFront(t, cl.proxy.Listener.Addr().String(), frontReset)
	var (
		mu    sync.Mutex
		back  time.Time // when the server came back
		first = map[string]time.Duration{}
	)
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) != "poll" {
			return false
		}
		node := strings.TrimPrefix(strings.TrimSuffix(r.URL.Path, "/poll"), "/edge/v1/nodes/")
		mu.Lock()
		if _, ok := first[node]; !ok && !back.IsZero() {
			first[node] = time.Since(back)
		}
		mu.Unlock()
		return false
	})
	var all []server.Call
	mems := make([]*memNode, nodes)
	for i := range nodes {
		all = append(all, echoCalls(fmt.Sprintf("node-%03d", i), []string{fmt.Sprintf("fleet-%03d", i)}, "at_most_once")...)
	}
	cl.enqueue(all...)
	for i := range nodes {
		m := newMemNode()
		c := remote.New(remote.Config{URL: front.url(), NodeID: fmt.Sprintf("node-%03d", i), PollWait: 500 * time.Millisecond,
			ReadTimeout: 3 * time.Second, BackoffBase: base, BackoffMax: ceil}, m, quiet, nil)
		m.link.Store(c)
		mems[i] = m
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = c.Stop(ctx)
		})
	}
	// Down long enough for every node's backoff ceiling to reach the cap.
	time.Sleep(outage)
	mu.Lock()
	back = time.Now()
	mu.Unlock()
	front.mode.Store(frontForward)

	idList := make([]string, nodes)
	for i := range idList {
		idList[i] = fmt.Sprintf("fleet-%03d", i)
	}
	cl.waitFinal(idList, 8*time.Second)
	took := time.Since(back)

	mu.Lock()
	times := make([]time.Duration, 0, len(first))
	for _, d := range first {
		times = append(times, d)
	}
	mu.Unlock()
	if len(times) != nodes {
		t.Fatalf("%d nodes polled after the outage, want %d", len(times), nodes)
	}
	slices.Sort(times)
	// The densest 100ms: a reconnection storm would put (nearly) all of
	// them there; full jitter over a ~1s window puts about a tenth.
	densest := 0
	for i, j := 0, 0; i < len(times); i++ {
		for times[i]-times[j] > 100*time.Millisecond {
			j++
		}
		densest = max(densest, i-j+1)
	}
	spread := times[len(times)-1] - times[0]
	t.Logf("first polls after the outage: spread %v, densest 100ms %d of %d, p50 %v; all calls final after %v",
		spread, densest, nodes, times[len(times)/2], took)
	if densest > nodes/2 {
		t.Errorf("%d of %d nodes came back within one 100ms window: no jitter", densest, nodes)
	}
	if spread < 300*time.Millisecond {
		t.Errorf("first polls spread over %v only", spread)
	}
	for i, m := range mems {
		id := idList[i]
		m.mu.Lock()
		runs := m.runs[id]
		m.mu.Unlock()
		if runs != 1 {
			t.Errorf("%s ran %d times on its node", id, runs)
		}
		if c, _ := cl.srv.Get(id); c.State != "done" || c.Deliveries != 1 || c.Result == nil || string(c.Result.Output) != "in "+id {
			t.Errorf("%s: %+v", id, c)
		}
	}
}
