package remote_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/store"
)

// fleetNode is one simulated node with the daemon's code path: its own
// calls.Journal (namespaced in a store the fleet shares: a thousand badger
// stores do not fit in one test), scheduler, calls.Durable and a real
// remote.Client. Calls are RECEIVED before the ack, STARTED, FINISHED and
// REPORTED in its journal.
type fleetNode struct {
	j *calls.Journal
	s *calls.Scheduler
	c *remote.Client
}

func startFleetNode(t testing.TB, db *store.DB, ex *testExec, id string, cfg remote.Config) *fleetNode {
	t.Helper()
	j, err := calls.OpenJournal(db, calls.JournalOptions{Namespace: id}, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &fleetNode{j: j, s: calls.NewScheduler(ex, calls.Options{Workers: 1, QueueSize: 16}, quiet, nil)}
	var link atomic.Pointer[remote.Client]
	d := calls.NewDurable(j, n.s, quiet, func(*calls.Record) {
		if l := link.Load(); l != nil {
			l.Notify()
		}
	})
	cfg.NodeID = id
	n.c = remote.New(cfg, remote.NewNode(d), quiet, nil)
	link.Store(n.c)
	if err := d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := n.c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *fleetNode) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.c.StopPolling()
	_ = n.s.Drain(ctx)
	_ = n.c.Stop(ctx)
	_ = n.j.Close()
}

// A thousand nodes, each a real remote.Client over its own journal, fail
// against a control plane that is down, then it comes back: full-jitter
// backoff spreads their first polls over the backoff window instead of
// one burst, every node runs its queued call once, the server records it
// once, and every journal ends with the call REPORTED.
func TestLinkFleetAfterOutage(t *testing.T) {
	const (
		nodes  = 1000
		base   = 50 * time.Millisecond
		ceil   = time.Second
		outage = 2 * time.Second
	)
	cl := startCloud(t, server.Options{Lease: 30 * time.Second})
	var (
		mu    sync.Mutex
		back  time.Time                    // when the server came back
		first = map[string]time.Duration{} // first dial after back, by node
		last  = map[string]time.Time{}     // last dial before back, by node
	)
	// Each node's first poll after the outage is timed where it starts: the
	// node's dial (a reset connection is not reused, so every retry dials).
	// That is the backoff's own timing, before any queueing in the server.
	dialer := func(node string) func(ctx context.Context, network, addr string) (net.Conn, error) {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			if back.IsZero() {
				last[node] = time.Now()
			} else if _, ok := first[node]; !ok {
				first[node] = time.Since(back)
			}
			mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	}
	// The nodes reach the real server through a TCP front that resets every
	// connection during the outage (not through the fault proxy: its second
	// HTTP hop would double the connections a thousand long polls hold).
	front := startTCPFront(t, strings.TrimPrefix(cl.url(), "http://"), frontReset)
	var all []server.Call
	for i := range nodes {
		// Half at-most-once (STARTED synced before the run), half idempotent.
		effect := []string{"at_most_once", "idempotent"}[i%2]
		all = append(all, echoCalls(fmt.Sprintf("node-%04d", i), []string{fmt.Sprintf("fleet-%04d", i)}, effect)...)
	}
	cl.enqueue(all...)
	db, err := store.Open(t.TempDir(), store.Defaults(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	ex := &testExec{runs: map[string]int{}}
	fleet := make([]*fleetNode, nodes)
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range fleet {
			if n != nil {
				wg.Go(n.stop)
			}
		}
		wg.Wait()
		_ = db.Close()
	})
	started := time.Now()
	for i := range nodes {
		id := fmt.Sprintf("node-%04d", i)
		fleet[i] = startFleetNode(t, db, ex, id, remote.Config{URL: front.url(), PollWait: 2 * time.Second,
			ReadTimeout: 10 * time.Second, BackoffBase: base, BackoffMax: ceil, DialContext: dialer(id)})
	}
	t.Logf("%d nodes with their journals started in %v", nodes, time.Since(started))
	// Down long enough for every node's backoff ceiling to reach the cap.
	time.Sleep(outage)
	mu.Lock()
	back = time.Now()
	mu.Unlock()
	front.mode.Store(frontForward)

	idList := make([]string, nodes)
	for i := range idList {
		idList[i] = fmt.Sprintf("fleet-%04d", i)
	}
	cl.waitFinal(idList, 150*time.Second) // a bound for a loaded host under -race: the test is about the spread below
	took := time.Since(back)

	mu.Lock()
	times := make([]time.Duration, 0, len(first))
	for _, d := range first {
		times = append(times, d)
	}
	for node, at := range last {
		if _, ok := first[node]; !ok {
			// Its dial just before the server came back was the one that
			// got through.
			times = append(times, at.Sub(back))
		}
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
	// The server has the results; a node marks its call REPORTED once the
	// upload's answer is in.
	reported := func(i int) bool {
		r, err := fleet[i].j.Get(idList[i])
		return err == nil && r != nil && r.State == calls.Reported
	}
	waitFor(30*time.Second, func() bool {
		for i := range fleet {
			if !reported(i) {
				return false
			}
		}
		return true
	})
	redelivered := 0
	for i, id := range idList {
		if runs := ex.count(id); runs != 1 {
			t.Errorf("%s ran %d times on its node", id, runs)
		}
		// A poll whose answer the node did not read in time (a loaded
		// machine) is redelivered: allowed, and deduped by the journal.
		c, _ := cl.srv.Get(id)
		if c.State != "done" || c.Result == nil || string(c.Result.Output) != "in "+id {
			t.Errorf("%s: %+v", id, c)
		}
		if c.Deliveries > 1 {
			redelivered++
		}
		if r, err := fleet[i].j.Get(id); err != nil || r == nil || r.State != calls.Reported || r.Runs != 1 || r.Attempt != 1 ||
			r.Result == nil || string(r.Result.Output) != "in "+id {
			t.Errorf("%s journal record: %+v", id, r)
		}
	}
	t.Logf("all %d journals REPORTED %v after the control plane came back; %d calls delivered more than once", nodes, time.Since(back), redelivered)
}
