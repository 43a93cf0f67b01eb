package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/etcdtest"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/telemetry/cluster"
)

// BenchmarkClusterProcesses300 runs real outpost processes over a real
// etcd with 300 gNMI targets, each a fake agent (each stream brings four
// values; a new stream about every second). First the baseline: one
// process alone, not clustered, collecting a third of the targets. Then
// three clustered processes with all 300: each holds about a third and
// replicates the rest. Reported, per process and against the baseline
// measured in the same run: CPU cores and resident memory, the extra each
// replica costs; the points per second held and replicated; the replica
// lag (from a point's timestamp to its arrival at a replica, sampled from
// each replica's last batch every 500 ms) p50 and p99; and after a kill -9
// of one process (lease_ttl 5 s), for each target placed on it, the seconds
// until another process holds it (from the status) and the gap in its data
// at a surviving replica: from the last point stored before the kill to the
// first one after it (p50, p99, max). One iteration is the whole run,
// baseline included: go test -run X -bench ClusterProcesses300 -benchtime 1x ./cmd/outpost/
func BenchmarkClusterProcesses300(b *testing.B) {
	for range b.N {
		benchClusterProcesses(b, 300)
	}
}

func benchClusterProcesses(b *testing.B, targets int) {
	const measure = 15 * time.Second
	const ttl = 5 * time.Second
	etcd := etcdtest.Start(b)
	lines := make([]string, targets)
	for i := range lines { // a device (fake agent) per target: the config refuses two at one address
		lines[i] = targetYAML(fmt.Sprintf("t%03d", i), gnmitest.StartAgent(b).Addr, "1s", "1s")
	}

	base := startDaemon(b, daemonYAML("base", mqtttest.FreeAddr(b), "", "", strings.Join(lines[:targets/3], "")))
	time.Sleep(5 * time.Second)
	baseCPU, baseRSS := usage(b, []*daemon{base}, measure)
	base.stop(syscall.SIGTERM, 30*time.Second)
	b.ReportMetric(baseCPU[0], "baseline-cpu-cores")
	b.ReportMetric(baseRSS[0], "baseline-rss-MiB")

	names := []string{"a", "b", "c"}
	ds := map[string]*daemon{}
	for _, name := range names {
		ds[name] = startDaemon(b, daemonYAML(name, mqtttest.FreeAddr(b), "",
			fmt.Sprintf("{etcd: [%q], lease_ttl: %s, replica_interval: 500ms}", etcd.Endpoint(), ttl), strings.Join(lines, "")))
	}
	settled := time.Now()
	settledHolders(b, ds, targets, 3*time.Minute)
	b.ReportMetric(time.Since(settled).Seconds(), "settle-s")
	time.Sleep(5 * time.Second)
	points := func() (held, replicated float64) {
		for _, d := range ds {
			held += d.metric("outpost_telemetry_updates_total")
			replicated += d.metric("outpost_cluster_replicated_points_total")
		}
		return held, replicated
	}
	h0, r0 := points()
	t0 := time.Now()
	var lags []float64
	procs := make([]*daemon, 0, len(ds))
	for _, name := range names {
		procs = append(procs, ds[name])
	}
	cpu, rss := usage(b, procs, measure, func() {
		for _, d := range procs {
			for _, ts := range d.clusterStatus().Targets {
				if ts.Role == cluster.RoleReplica && ts.Live {
					lags = append(lags, ts.LagSeconds)
				}
			}
		}
	})
	h1, r1 := points()
	secs := time.Since(t0).Seconds()
	for i, name := range names {
		held := 0
		for _, ts := range ds[name].clusterStatus().Targets {
			if ts.Role == cluster.RoleHolder {
				held++
			}
		}
		b.ReportMetric(float64(held), "held("+name+")")
		b.ReportMetric(cpu[i], "cpu-cores("+name+")")
		b.ReportMetric(rss[i], "rss-MiB("+name+")")
		b.ReportMetric(cpu[i]-baseCPU[0], "extra-cpu-cores("+name+")")
		b.ReportMetric(rss[i]-baseRSS[0], "extra-rss-MiB("+name+")")
	}
	b.ReportMetric((h1-h0)/secs, "held-points/s")
	b.ReportMetric((r1-r0)/secs, "replicated-points/s")
	slices.Sort(lags)
	if len(lags) == 0 {
		b.Fatal("no replica lag sampled")
	}
	b.ReportMetric(lags[len(lags)/2], "lag-p50-s")
	b.ReportMetric(lags[len(lags)*99/100], "lag-p99-s")

	renewFailed := 0.0
	for _, d := range ds {
		renewFailed += d.metric("outpost_cluster_lease_renewals_failed_total")
	}
	b.ReportMetric(renewFailed, "renewals-failed")

	// kill -9 of the first process: how long each target placed on it is
	// without a holder.
	victim := ds["a"]
	var mine []string
	for _, ts := range victim.clusterStatus().Targets {
		if ts.PlacedOn == "a" {
			mine = append(mine, ts.Target)
		}
	}
	killed := time.Now()
	victim.kill9()
	delete(ds, "a")
	gaps := map[string]float64{}
	waitUntil(b, time.Minute, "the killed process's targets held again", func() bool {
		for _, d := range ds {
			for _, ts := range d.clusterStatus().Targets {
				if _, seen := gaps[ts.Target]; !seen && ts.Role == cluster.RoleHolder && slices.Contains(mine, ts.Target) {
					gaps[ts.Target] = time.Since(killed).Seconds()
				}
			}
		}
		return len(gaps) == len(mine)
	})
	gs := make([]float64, 0, len(gaps))
	for _, g := range gaps {
		gs = append(gs, g)
	}
	slices.Sort(gs)
	b.ReportMetric(float64(len(mine)), "failover-targets")
	b.ReportMetric(gs[len(gs)/2], "failover-held-p50-s")
	b.ReportMetric(gs[len(gs)-1], "failover-held-max-s")

	// The gap as the data shows it, at a surviving replica of each target,
	// once the new holder's first points reached it.
	// Beside it, the gaps between points in the half minute before the
	// kill: how the data looks without a failover.
	dataGaps := map[string]float64{}
	var steady []float64
	waitUntil(b, time.Minute, "the killed process's targets with data again at a replica", func() bool {
		for _, target := range mine {
			if _, done := dataGaps[target]; !done {
				if g, before, ok := dataGap(b, ds, target, killed); ok {
					dataGaps[target] = g.Seconds()
					steady = append(steady, before...)
				}
			}
		}
		return len(dataGaps) == len(mine)
	})
	slices.Sort(steady)
	b.ReportMetric(steady[len(steady)/2], "steady-data-gap-p50-s")
	b.ReportMetric(steady[len(steady)*99/100], "steady-data-gap-p99-s")
	dgs := make([]float64, 0, len(mine))
	for _, g := range dataGaps {
		dgs = append(dgs, g)
	}
	slices.Sort(dgs)
	b.ReportMetric(dgs[len(dgs)/2], "failover-data-gap-p50-s")
	b.ReportMetric(dgs[len(dgs)*99/100], "failover-data-gap-p99-s")
	b.ReportMetric(dgs[len(dgs)-1], "failover-data-gap-max-s")
	b.ReportMetric((ttl + 2*time.Second).Seconds(), "failover-target-s")
}

// dataGap is the time between target's last point stamped before at and
// its first one after, in the store of a process of ds that replicates it
// (not its holder): the gap a reader of the data sees, and the gaps
// between its points in the 30 s before at (seconds); ok is false while
// that replica has no point after at.
func dataGap(b *testing.B, ds map[string]*daemon, target string, at time.Time) (gap time.Duration, steady []float64, ok bool) {
	b.Helper()
	for _, d := range ds {
		st := d.clusterStatus()
		i := slices.IndexFunc(st.Targets, func(ts cluster.TargetState) bool { return ts.Target == target })
		if i < 0 || st.Targets[i].Role != cluster.RoleReplica {
			continue
		}
		var q struct{ Series []storedSeries }
		resp := d.get("/v1/telemetry/query?target=" + target + "&path=/...&since=" + at.Add(-time.Minute).UTC().Format(time.RFC3339Nano))
		err := json.NewDecoder(resp.Body).Decode(&q)
		resp.Body.Close()
		if err != nil {
			b.Fatalf("%s at %s: %v", target, st.Name, err)
		}
		var before, after time.Time
		var times []time.Time
		for _, s := range q.Series {
			for _, p := range s.Points {
				if !p.Time.After(at) && p.Time.After(at.Add(-30*time.Second)) {
					times = append(times, p.Time)
				}
				if !p.Time.After(at) && p.Time.After(before) {
					before = p.Time
				}
				if p.Time.After(at) && (after.IsZero() || p.Time.Before(after)) {
					after = p.Time
				}
			}
		}
		if before.IsZero() {
			b.Fatalf("%s at %s: no point before the kill", target, st.Name)
		}
		slices.SortFunc(times, time.Time.Compare)
		for i := 1; i < len(times); i++ {
			if g := times[i].Sub(times[i-1]); g > 100*time.Millisecond { // between two streams' values, not within one
				steady = append(steady, g.Seconds())
			}
		}
		return after.Sub(before), steady, !after.IsZero()
	}
	return 0, nil, false // no replica among the survivors yet
}

// usage measures, over d, the CPU cores each process used and its
// resident memory at the end (MiB), calling each (if any) every 500 ms.
func usage(b *testing.B, ds []*daemon, d time.Duration, each ...func()) (cores, rssMiB []float64) {
	b.Helper()
	cpu0 := make([]float64, len(ds))
	for i, p := range ds {
		cpu0[i] = cpuSeconds(b, p.cmd.Process.Pid)
	}
	t0 := time.Now()
	for time.Since(t0) < d {
		for _, f := range each {
			f()
		}
		time.Sleep(500 * time.Millisecond)
	}
	secs := time.Since(t0).Seconds()
	for i, p := range ds {
		rss, _ := p.procMem()
		cores, rssMiB = append(cores, (cpuSeconds(b, p.cmd.Process.Pid)-cpu0[i])/secs), append(rssMiB, float64(rss)/(1<<20))
	}
	return cores, rssMiB
}

// cpuSeconds reads a process's CPU time (user and system) from /proc.
func cpuSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces, in parentheses):
	// utime and stime are the 12th and 13th, in clock ticks (100 a second).
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}
