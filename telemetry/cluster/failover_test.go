package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/etcdtest"
	"github.com/outpost-edge/outpost/internal/tcpproxy"
	"github.com/outpost-edge/outpost/telemetry/model"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"))
}

// collectors records who collects what, as a target would see it: two
// collectors of one target at once is a violation.
type collectors struct {
	mu         sync.Mutex
	active     map[string]string // target → member collecting it
	stoppedAt  map[string]time.Time
	gaps       map[string]time.Duration // target → longest time without a collector since it first had one
	violations []string
}

func newCollectors() *collectors {
	return &collectors{active: map[string]string{}, stoppedAt: map[string]time.Time{}, gaps: map[string]time.Duration{}}
}

type memberCollector struct {
	c    *collectors
	name string
}

func (m memberCollector) Collect(target string, _ int64) func() {
	c := m.c
	c.mu.Lock()
	if other, ok := c.active[target]; ok {
		c.violations = append(c.violations, fmt.Sprintf("%s collected by %s while %s collects it", target, m.name, other))
	}
	c.active[target] = m.name
	if at, ok := c.stoppedAt[target]; ok {
		c.gaps[target] = max(c.gaps[target], time.Since(at))
	}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.active[target] == m.name {
			delete(c.active, target)
			c.stoppedAt[target] = time.Now()
		}
	}
}

func (c *collectors) snapshot() (map[string]string, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := map[string]string{}
	for k, v := range c.active {
		a[k] = v
	}
	return a, append([]string(nil), c.violations...)
}

type nopLocal struct{}

func (nopLocal) Newest(string) map[string]int64                    { return nil }
func (nopLocal) Times(string, string, int64, int64) map[int64]bool { return nil }
func (nopLocal) Replicate([]model.Update)                          {}

const testTTL = 2 * time.Second

func startNode(t *testing.T, etcd *etcdtest.Server, name string, targets []string, c *collectors) *Node {
	t.Helper()
	return startNodeReg(t, etcd, name, targets, c, nil)
}

func startNodeReg(t *testing.T, etcd *etcdtest.Server, name string, targets []string, c *collectors, reg prometheus.Registerer) *Node {
	t.Helper()
	cfg := Config{Etcd: []string{etcd.Endpoint()}, Name: name, LeaseTTL: confval.Duration(testTTL)}.WithDefaults("")
	n := New(Options{Cfg: cfg, Targets: targets, Collector: memberCollector{c, name}, Local: nopLocal{}, Reg: reg,
		Log: slog.New(slog.NewTextHandler(t.Output(), nil)).With("node", name)})
	if err := n.Start(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// waitPlaced waits until every target is collected on the member placement
// puts it on, among names.
func waitPlaced(t *testing.T, c *collectors, targets []string, names []string, within time.Duration) {
	t.Helper()
	ms := make([]Member, len(names))
	for i, n := range names {
		ms[i] = Member{Name: n, Capacity: DefaultCapacity}
	}
	deadline := time.Now().Add(within)
	for {
		active, _ := c.snapshot()
		wrong := 0
		for _, tg := range targets {
			if p, _ := Place(tg, ms); active[tg] != p {
				wrong++
			}
		}
		if wrong == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d targets not collected where placed after %s: %v", wrong, len(targets), within, active)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func noViolations(t *testing.T, c *collectors) {
	t.Helper()
	if _, v := c.snapshot(); len(v) > 0 {
		t.Fatalf("two collectors at once: %v", v)
	}
}

// crash cuts a node from etcd as a kill or a partition does: no revoke,
// renewals fail from now on.
func crash(n *Node) { n.cli.Close() }

func TestClusterPlacesFailsOverAndRebalances(t *testing.T) {
	etcd := etcdtest.Start(t)
	targets := targetNames(30)
	c := newCollectors()
	reg := prometheus.NewRegistry()
	a := startNodeReg(t, etcd, "a", targets, c, reg)
	startNode(t, etcd, "b", targets, c)
	startNode(t, etcd, "c", targets, c)
	waitPlaced(t, c, targets, []string{"a", "b", "c"}, 20*time.Second)
	onA := len(Assign(targets, []Member{{Name: "a", Capacity: 1}, {Name: "b", Capacity: 1}, {Name: "c", Capacity: 1}})["a"])
	if got := testutil.ToFloat64(a.mCollecting); got != float64(onA) {
		t.Errorf("outpost_cluster_targets_collecting %v, a collects %d", got, onA)
	}
	if n, err := testutil.GatherAndCount(reg, "outpost_cluster_leases_total", "outpost_cluster_lease_renewals_failed_total", "outpost_cluster_targets_collecting"); err != nil || n != 3 {
		t.Errorf("cluster metrics: %d %v", n, err)
	}
	for _, name := range []string{"a", "b", "c"} {
		if n := len(Assign(targets, []Member{{Name: "a", Capacity: 1}, {Name: "b", Capacity: 1}, {Name: "c", Capacity: 1}})[name]); n == 0 {
			t.Fatalf("%s holds no target", name)
		}
	}
	st := a.Status()
	if !st.Member || len(st.Members) != 3 || len(st.OtherTargets) != 0 {
		t.Fatalf("status: %+v", st)
	}
	t.Run("a member with other targets", func(t *testing.T) {
		// Drained from the start, so that it takes nothing from the others.
		cfg := Config{Etcd: []string{etcd.Endpoint()}, Name: "odd", LeaseTTL: confval.Duration(testTTL)}.WithDefaults("")
		odd := New(Options{Cfg: cfg, Targets: targets[:29], Collector: memberCollector{newCollectors(), "odd"}, Local: nopLocal{}})
		odd.drained = true
		if err := odd.Start(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
		defer odd.Stop()
		waitUntil(t, 10*time.Second, func() bool { return slices.Equal(a.Status().OtherTargets, []string{"odd"}) })
	})
	waitUntil(t, 10*time.Second, func() bool { return len(a.Status().Members) == 3 })

	outer := t
	t.Run("holder cut off", func(t *testing.T) {
		crash(a)
		waitPlaced(t, c, targets, []string{"b", "c"}, testTTL+10*time.Second)
		noViolations(t, c)
		if testutil.ToFloat64(a.mRenewFail) == 0 || testutil.ToFloat64(a.mCollecting) != 0 {
			t.Errorf("after the cut: %v renewals failed, %v targets collecting", testutil.ToFloat64(a.mRenewFail), testutil.ToFloat64(a.mCollecting))
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for tg, gap := range c.gaps {
			// The gap is TTL plus placement, campaign and start; the bound
			// is loose for a loaded machine.
			if gap > testTTL+4*time.Second {
				t.Errorf("%s was without a collector for %s", tg, gap)
			}
		}
	})
	t.Run("join", func(t *testing.T) {
		startNode(outer, etcd, "d", targets, c)
		waitPlaced(t, c, targets, []string{"b", "c", "d"}, 20*time.Second)
		noViolations(t, c)
	})
	t.Run("drain", func(t *testing.T) {
		e := startNode(outer, etcd, "e", targets, c)
		waitPlaced(t, c, targets, []string{"b", "c", "d", "e"}, 20*time.Second)
		if err := e.SetDrained(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		waitPlaced(t, c, targets, []string{"b", "c", "d"}, 20*time.Second)
		noViolations(t, c)
		// The drain outlives a restart: the instance comes back drained
		// and takes nothing until it is undrained.
		e.Stop()
		e = startNode(outer, etcd, "e", targets, c)
		waitUntil(t, 10*time.Second, func() bool { st := e.Status(); return st.Member && st.Drained })
		time.Sleep(time.Second)
		waitPlaced(t, c, targets, []string{"b", "c", "d"}, 20*time.Second)
		if err := e.SetDrained(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		waitPlaced(t, c, targets, []string{"b", "c", "d", "e"}, 20*time.Second)
		noViolations(t, c)
	})
}

func TestClusterSurvivesEtcdRestart(t *testing.T) {
	etcd := etcdtest.Start(t)
	targets := targetNames(12)
	c := newCollectors()
	startNode(t, etcd, "a", targets, c)
	startNode(t, etcd, "b", targets, c)
	waitPlaced(t, c, targets, []string{"a", "b"}, 20*time.Second)
	etcd.Kill()
	// Renewals cannot be confirmed: every holder stops collecting before
	// its lease could expire.
	deadline := time.Now().Add(testTTL)
	for {
		active, _ := c.snapshot()
		if len(active) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still collecting %d targets a TTL after etcd went away", len(active))
		}
		time.Sleep(20 * time.Millisecond)
	}
	etcd.Restart()
	waitPlaced(t, c, targets, []string{"a", "b"}, 30*time.Second)
	noViolations(t, c)
}

// A slow lease renewal (etcd silent for a third of the TTL, with the
// instance's next renewals due) does not stop collection: the instance
// stops only when no renewal sent in the last half TTL was confirmed.
func TestClusterRidesOutASlowRenewal(t *testing.T) {
	etcd := etcdtest.Start(t)
	p := tcpproxy.Start(t, func() string { return strings.TrimPrefix(etcd.Endpoint(), "http://") })
	const ttl = 10 * time.Second
	targets := targetNames(3)
	c := newCollectors()
	cfg := Config{Etcd: []string{"http://" + p.Addr}, Name: "a", LeaseTTL: confval.Duration(ttl)}.WithDefaults("")
	n := New(Options{Cfg: cfg, Targets: targets, Collector: memberCollector{c, "a"}, Local: nopLocal{},
		Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err := n.Start(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	waitPlaced(t, c, targets, []string{"a"}, 20*time.Second)
	// Renewals go every TTL/8 (1.25 s): at least two fall in the stall.
	// Each is given until TTL/2 after the last confirmed one was sent.
	p.Stall(3300 * time.Millisecond)
	time.Sleep(5 * time.Second)
	c.mu.Lock()
	stopped := len(c.stoppedAt)
	c.mu.Unlock()
	if stopped != 0 || testutil.ToFloat64(n.mCollecting) != 3 {
		t.Fatalf("%d targets stopped during a stall of a third of the TTL; %v collecting", stopped, testutil.ToFloat64(n.mCollecting))
	}
}

func waitUntil(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
