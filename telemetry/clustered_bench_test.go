package telemetry

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/etcdtest"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/telemetry/cluster"
	"github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// BenchmarkCluster300 runs three clustered services in one process over a
// real etcd with 300 gNMI targets (on three fake agents, each stream
// bringing four values, a new stream every second or so), and reports the
// replica lag (p50, p99 over every replica sampled each 500 ms), the points
// per second replicas ingest beside what holders collect, the CPU and heap
// of the three, and how long after one instance leaves every target is held
// (leave-held-s) and held and copied again (leave-settled-s) (the failover gap after a kill is measured by the e2e
// TestClusterKillHolder). One iteration is the whole run: use -benchtime 1x.
func BenchmarkCluster300(b *testing.B) {
	for range b.N {
		benchCluster(b, 300)
	}
}

func benchCluster(b *testing.B, targets int) {
	etcd := etcdtest.Start(b)
	agents := []*gnmitest.Agent{gnmitest.StartAgent(b), gnmitest.StartAgent(b), gnmitest.StartAgent(b)}
	cfg := func(name string) Config {
		c := Config{
			GNMIServer: gnmiserver.Config{Listen: "127.0.0.1:0"},
			Store:      tsdb.Config{FlushInterval: confval.Duration(200 * time.Millisecond)},
			Cluster:    cluster.Config{Etcd: []string{etcd.Endpoint()}, Name: name, LeaseTTL: confval.Duration(2 * time.Second)},
		}
		for i := range targets {
			c.GNMI.Targets = append(c.GNMI.Targets, gnmi.Target{Name: fmt.Sprintf("t%03d", i), Address: agents[i%3].Addr,
				BackoffMin: confval.Duration(time.Second), BackoffMax: confval.Duration(time.Second),
				Subscriptions: []gnmi.Subscription{{Paths: []string{"/interfaces"}}}})
		}
		return c
	}
	svcs, regs := map[string]*Service{}, map[string]*prometheus.Registry{}
	for _, name := range []string{"a", "b", "c"} {
		regs[name] = prometheus.NewRegistry()
		s := New(cfg(name), b.TempDir(), nil, regs[name], Sinks{})
		if err := s.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Stop(context.Background()) })
		svcs[name] = s
	}
	// settle waits until every target is held and copied; it returns how long
	// until every target was held.
	settle := func(within time.Duration) (allHeld time.Duration) {
		start := time.Now()
		deadline := start.Add(within)
		for {
			held, copied := 0, 0
			for _, s := range svcs {
				for _, ts := range s.Cluster().Status().Targets {
					if ts.Role == cluster.RoleHolder {
						held++
					} else if ts.Role == cluster.RoleReplica && ts.Points > 0 {
						copied++
					}
				}
			}
			if held == targets && allHeld == 0 {
				allHeld = time.Since(start)
			}
			if held == targets && copied == targets*(len(svcs)-1) {
				return allHeld
			}
			if time.Now().After(deadline) {
				b.Fatalf("not settled after %s: %d held, %d replicas with data", within, held, copied)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	settle(2 * time.Minute)
	var lags []float64
	collected := func() (c float64) { // the hubs count what is collected, not what is replicated
		for _, r := range regs {
			mfs, _ := r.Gather()
			for _, mf := range mfs {
				if mf.GetName() == "outpost_telemetry_updates_total" {
					c += mf.GetMetric()[0].GetCounter().GetValue()
				}
			}
		}
		return c
	}
	replicated := func() (r uint64) {
		for _, s := range svcs {
			for _, ts := range s.Cluster().Status().Targets {
				r += ts.Points
			}
		}
		return r
	}
	c0, r0, t0 := collected(), replicated(), time.Now()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	for time.Since(t0) < 10*time.Second {
		for _, s := range svcs {
			for _, ts := range s.Cluster().Status().Targets {
				if ts.Role == cluster.RoleReplica && ts.LagSeconds >= 0 {
					lags = append(lags, ts.LagSeconds)
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	secs := time.Since(t0).Seconds()
	b.ReportMetric((cpuTime()-cpu0).Seconds()/secs, "cpu-cores(3-instances)")
	runtime.ReadMemStats(&ms1)
	slices.Sort(lags)
	b.ReportMetric(lags[len(lags)/2], "lag-p50-s")
	b.ReportMetric(lags[len(lags)*99/100], "lag-p99-s")
	b.ReportMetric((collected()-c0)/secs, "collected-points/s")
	b.ReportMetric(float64(replicated()-r0)/secs, "replicated-points/s")
	b.ReportMetric(float64(ms1.HeapInuse)/(1<<20), "heap-MiB(3-instances)")

	leaves := time.Now()
	if err := svcs["c"].Stop(context.Background()); err != nil {
		b.Fatal(err)
	}
	delete(svcs, "c")
	b.ReportMetric(settle(time.Minute).Seconds(), "leave-held-s")
	b.ReportMetric(time.Since(leaves).Seconds(), "leave-settled-s")
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
