package coordinator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// waitingCalls is how many workflows wait at once in BenchmarkWaitingCalls.
const waitingCalls = 10_000

// rss is the resident set of this process after a GC, in bytes.
func rss(tb testing.TB) float64 {
	tb.Helper()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.Atoi(f[1])
	if err != nil {
		tb.Fatal(err)
	}
	return float64(pages * os.Getpagesize())
}

// BenchmarkWaitingCalls has 10,000 calls of the example workflow
// (examples/tasks/c/workflow, input "1": one call of square each) wait at
// once for their dependency, held back by calls of square that occupy its
// slots until they are canceled; then lets them all finish.
//
//   - parked: today's blocking await (synchronous calls cannot suspend):
//     each waiting workflow holds its instance, its task slot and a goroutine.
//   - suspended: journaled calls, which suspend: each waiting workflow is a
//     journal record and a snapshot.
//
// Metrics: RSS held per waiting call (after a GC, against the RSS before the
// calls were made), workflows per second from the release to the last
// result, and for suspended calls the resume latency (from the journaled
// end of the dependency to the journaled end of the resumed workflow).
func BenchmarkWaitingCalls(b *testing.B) {
	for _, mode := range []string{"parked", "suspended"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				benchWaiting(b, mode == "suspended")
			}
		})
	}
}

func benchWaiting(b *testing.B, suspend bool) {
	mod, err := filepath.Abs("../examples/tasks/build/c-workflow.wasm")
	if err != nil {
		b.Fatal(err)
	}
	exampleModule(b, "c-workflow")
	const squares = 4 // slots of square, each held by a blocker until the release
	cfg, err := configs.Parse([]byte("data_dir: "+b.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(b)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(b)+`"}}
scheduler: {workers: 8, queue_size: 40000, max_parked: 20000}
tasks:
  - {name: workflow, module: `+mod+`, permissions: {call: [square]}, limits: {concurrency: 20000, timeout: 10m, memory: 1MiB}}
  - {name: square, module: `+mod+`, limits: {concurrency: `+strconv.Itoa(squares)+`, timeout: 10m}}
`), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	c := startCoordinator(b, cfg)
	var blockers []string
	for range squares {
		bl := calls.New("square", []byte("sq 1 0 600000"), calls.Source{Kind: "bench"})
		if err := c.sched.Submit(bl); err != nil {
			b.Fatal(err)
		}
		blockers = append(blockers, bl.ID)
	}
	for c.sched.Stats().Running < squares {
		time.Sleep(time.Millisecond)
	}
	before := rss(b)

	ids := make([]string, waitingCalls)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	fail := func(msg string) {
		mu.Lock()
		errs = append(errs, msg)
		mu.Unlock()
	}
	sem := make(chan struct{}, 256) // journaling calls at once (suspended)
	for i := range waitingCalls {
		call := calls.New("workflow", []byte("1"), calls.Source{Kind: "bench"})
		ids[i] = call.ID
		wg.Add(1)
		if suspend {
			call.Effect = calls.Idempotent
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := c.CallAsync(call); err != nil {
					fail(err.Error())
				}
			}()
			continue
		}
		// A synchronous call cannot suspend: its goroutine waits in Call
		// until its dependency is done, as any caller of today's await.
		go func() {
			defer wg.Done()
			res, err := c.Call(context.Background(), call)
			if err != nil || !res.OK() || string(res.Output) != "sum=1 steps=1" {
				fail(fmt.Sprintf("%+v %v", res, err))
			}
		}()
	}
	waiting := func() int {
		if suspend {
			return c.cloud.durable.SuspendedCount()
		}
		return c.sched.Stats().Parked
	}
	deadline := time.Now().Add(2 * time.Minute)
	for waiting() < waitingCalls {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d calls waiting after 2 minutes (%v)", waiting(), waitingCalls, errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	held := rss(b) - before

	journal, cpu := journalCounts(b, c), cpuTime(b)
	b.StartTimer()
	start := time.Now()
	for _, id := range blockers {
		c.sched.Cancel(id)
	}
	if suspend {
		waitDone(b, c, 5*time.Minute)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := c.cloud.journal.Flush(); err != nil { // for resumeLatencies, which reads it
		b.Fatal(err)
	}
	spent, cpu := journalCounts(b, c).sub(journal), cpuTime(b)-cpu
	if len(errs) > 0 {
		b.Fatalf("%d workflows failed, first: %s", len(errs), errs[0])
	}
	var lat []time.Duration
	if suspend {
		lat = resumeLatencies(b, c)
	}
	b.ReportMetric(held/waitingCalls, "B/call")
	b.ReportMetric(held/1e6, "held-MB")
	b.ReportMetric(waitingCalls/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(cpu.Microseconds())/waitingCalls, "cpu-us/call")
	if suspend {
		b.ReportMetric(spent.requests/waitingCalls, "writes/wf")
		b.ReportMetric(spent.commits/waitingCalls, "commits/wf")
		b.ReportMetric(spent.keys/waitingCalls, "keys/wf")
		b.ReportMetric(spent.syncs/waitingCalls, "syncs/wf")
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
}

// waitDone waits until the scheduler has nothing running or queued and no
// call is suspended: every workflow has then finished (a dependency's worker
// queues the resume before it lets go, a workflow's worker journals its
// result before it does). Polling the scheduler costs the run nothing that
// the parked side does not pay; reading each workflow's record back from
// the journal (10,000 reads) cost a tenth of the process's CPU.
// resumeLatencies checks every result once the clock has stopped.
func waitDone(tb testing.TB, c *Coordinator, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for st := c.sched.Stats(); st.Running+st.Queued > 0 || c.cloud.durable.SuspendedCount() > 0; st = c.sched.Stats() {
		if time.Now().After(deadline) {
			tb.Fatalf("not done after %s: %+v, %d suspended", within, st, c.cloud.durable.SuspendedCount())
		}
		time.Sleep(time.Millisecond)
	}
}

// cpuTime is the CPU time (user and system) this process has used: on a
// loaded host, the cost of a workflow that the rate cannot show.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

// journalUse is what the journal's committer has done so far: write
// requests it took, group commits it made of them, keys it wrote and
// fsyncs it waited for.
type journalUse struct{ requests, commits, keys, syncs float64 }

func (u journalUse) sub(v journalUse) journalUse {
	return journalUse{u.requests - v.requests, u.commits - v.commits, u.keys - v.keys, u.syncs - v.syncs}
}

// journalCounts reads the journal's use from the daemon's metrics.
func journalCounts(tb testing.TB, c *Coordinator) journalUse {
	tb.Helper()
	mfs, err := c.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var u journalUse
	for _, mf := range mfs {
		switch mf.GetName() {
		case "outpost_journal_commit_batch_size":
			h := mf.GetMetric()[0].GetHistogram()
			u.requests, u.commits = h.GetSampleSum(), float64(h.GetSampleCount())
		case "outpost_journal_writes_total":
			u.keys = mf.GetMetric()[0].GetCounter().GetValue()
		case "outpost_journal_syncs_total":
			u.syncs = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return u
}

// resumeLatencies checks every workflow's result and returns, for each, the
// time from the journaled end of the dependency it waited for to its own
// journaled end.
func resumeLatencies(tb testing.TB, c *Coordinator) []time.Duration {
	tb.Helper()
	recs, err := c.cloud.journal.List(context.Background(), 0)
	if err != nil {
		tb.Fatal(err)
	}
	depEnd := map[string]time.Time{}
	for _, r := range recs {
		if r.Parent != "" {
			depEnd[r.Parent] = r.Finished
		}
	}
	var lat []time.Duration
	for _, r := range recs {
		if r.Task != "workflow" {
			continue
		}
		if r.Result == nil || !r.Result.OK() || string(r.Result.Output) != "sum=1 steps=1" {
			tb.Fatalf("workflow %s: %+v", r.ID, r.Result)
		}
		lat = append(lat, r.Finished.Sub(depEnd[r.ID]))
	}
	if len(lat) != waitingCalls {
		tb.Fatalf("%d workflows in the journal, want %d", len(lat), waitingCalls)
	}
	return lat
}
