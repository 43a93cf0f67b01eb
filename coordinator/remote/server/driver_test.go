package server

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// driving reports whether s drives job id now (holds its lease).
func (s *Server) driving(id string) bool {
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	return s.jobs.driving[id]
}

// runs counts the first runs of each call on simulated nodes.
type runs struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *runs) add(c remote.WireCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[c.ID]++
}

// count is how many calls ran.
func (r *runs) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.n)
}

// check fails t unless want calls ran, each once.
func (r *runs) check(t testing.TB, want int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, k := range r.n {
		if k != 1 {
			t.Errorf("call %s ran %d times", id, k)
		}
	}
	if len(r.n) != want {
		t.Errorf("%d calls ran, want %d", len(r.n), want)
	}
}

// startNodes runs simulated nodes n0… until the test ends.
func startNodes(t testing.TB, n int, urls func() []string, capacity int, r *runs) {
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		fn := &fleetNode{id: nodeName(i), urls: urls, hc: &http.Client{Timeout: 10 * time.Second}, capacity: capacity, waitMS: 1000, ran: r.add}
		wg.Go(func() { fn.run(ctx) })
	}
	t.Cleanup(func() { stop(); wg.Wait() })
}

func nodeName(i int) string { return "n" + string(rune('a'+i%26)) + string(rune('0'+i/26%10)) }

// nodeNames are the first n nodeName.
func nodeNames(n int) []string {
	var out []string
	for i := range n {
		out = append(out, nodeName(i))
	}
	return out
}

// Two replicas on one database: one drives the job at a time (the other
// never holds its lease meanwhile); when the driver stops, the other
// takes the job over and finishes it, every item run once.
func TestJobOneDriver(t *testing.T) {
	ss, hss := replicas(t, 2, Options{JobLease: time.Second, Lease: time.Minute})
	src := t.TempDir() + "/items.jsonl"
	writeLines(t, src, 600)
	var mu sync.Mutex
	live := []string{hss[0].URL, hss[1].URL}
	urls := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(live) }
	r := &runs{}
	if code := createJob(t, hss[0], JobSpec{ID: "one", Task: "t", Nodes: nodeNames(4), Source: "jsonl:" + src}); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	// Neither node polls yet: the job waits with its items enqueued, and
	// one replica drives it for several lease periods.
	var drivers [2]int
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		a, b := ss[0].driving("one"), ss[1].driving("one")
		if a && b {
			t.Fatal("both replicas drive the job")
		}
		if a {
			drivers[0]++
		}
		if b {
			drivers[1]++
		}
	}
	if (drivers[0] == 0) == (drivers[1] == 0) {
		t.Fatalf("samples driving: %v, want one replica only", drivers)
	}
	driver := 0
	if drivers[1] > 0 {
		driver = 1
	}
	other := 1 - driver
	// The driver stops cleanly (its lease is given up) as the nodes start.
	mu.Lock()
	live = []string{hss[other].URL}
	mu.Unlock()
	hss[driver].Close()
	_ = ss[driver].Close()
	startNodes(t, 4, urls, 16, r)
	j, _ := waitJobAt(t, hss[other].URL, "one")
	if j.State != "done" || j.Done != 600 || j.Driver != ss[other].ID() {
		t.Fatalf("job %+v, want done by %s", j, ss[other].ID())
	}
	r.check(t, 600)
}

// Two replica processes on one database; the one driving a job is killed
// with -9 mid-job: the other takes the job over once the dead replica has
// missed its heartbeats for the replica timeout (5 s), long before the
// job's lease (a minute) would lapse, and finishes it; every item runs
// once on the nodes and has one result.
func TestJobDriverKill9(t *testing.T) {
	store := pgtest.Shared(t).NewDatabase()
	ps := []*proc{
		startProc(t, procOptions{Dir: t.TempDir(), Store: store, LeaseMS: 5000, JobLeaseMS: 60_000}),
		startProc(t, procOptions{Dir: t.TempDir(), Store: store, LeaseMS: 5000, JobLeaseMS: 60_000}),
	}
	const items = 3000
	src := t.TempDir() + "/items.jsonl"
	writeLines(t, src, items)
	var mu sync.Mutex
	live := []string{ps[0].url, ps[1].url}
	urls := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(live) }
	r := &runs{}
	startNodes(t, 10, urls, 8, r)
	var j Job
	if code := postJSON(t, ps[0].url+"/api/v1/jobs", JobSpec{ID: "k", Task: "t", Nodes: nodeNames(10), Source: "jsonl:" + src}, &j); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	for deadline := time.Now().Add(2 * time.Minute); j.Done < items/5; time.Sleep(50 * time.Millisecond) {
		getJSON(t, ps[1].url+"/api/v1/jobs/k", http.StatusOK, &j)
		if time.Now().After(deadline) {
			t.Fatalf("job %+v", j)
		}
	}
	driver := slices.IndexFunc(ps, func(p *proc) bool { return p.id == j.Driver })
	if driver < 0 {
		t.Fatalf("driver %q is neither replica", j.Driver)
	}
	other := 1 - driver
	mu.Lock()
	live = []string{ps[other].url}
	mu.Unlock()
	ps[driver].kill()
	t.Logf("killed the driver with -9 at %d of %d items", j.Done, items)
	killed := time.Now()
	j, _ = waitJobAt(t, ps[other].url, "k")
	t.Logf("done %v after the kill", time.Since(killed).Round(time.Millisecond))
	if time.Since(killed) > 45*time.Second {
		t.Errorf("the job took %v after its driver died: taken over only when its lease lapsed?", time.Since(killed))
	}
	if j.State != "done" || j.Done != items || j.Failed != 0 || j.Driver != ps[other].id {
		t.Fatalf("job %+v, want done by %s", j, ps[other].id)
	}
	r.check(t, items)
}
