package server

import (
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// A data set of 100,000 items (a JSONL file) on each engine, the server a
// process of its own killed with -9 once a third of the items ran on the
// nodes and started again on the same state: the job resumes, and every
// item runs once on the 20 simulated nodes (their journals drop calls
// delivered again) and has one result. About 25 s on badger and 40 s on
// PostgreSQL on two loaded cores; not under -short, nor under -race (five
// minutes there): scripts/test.sh runs it on its own without -race.
func TestJob100kKill9(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("100,000 items: not under -short or -race (scripts/test.sh runs it without -race)")
	}
	forEngines(t, func(t *testing.T, e *engine) {
		const items, nodes = 100_000, 20
		src := t.TempDir() + "/items.jsonl"
		writeLines(t, src, items)
		o := procOptions{Dir: e.dir, Store: e.store, LeaseMS: 5000, JobLeaseMS: 3000}
		p := startProc(t, o)
		var mu sync.Mutex
		live := []string{p.url}
		urls := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(live) }
		r := &runs{}
		startNodes(t, nodes, urls, 64, r)
		start := time.Now()
		var j Job
		if code := postJSON(t, p.url+"/api/v1/jobs", JobSpec{ID: "big", Task: "t", Nodes: nodeNames(nodes), Source: "jsonl:" + src}, &j); code != http.StatusCreated {
			t.Fatalf("create: %d", code)
		}
		for deadline := time.Now().Add(5 * time.Minute); r.count() < items/3; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d items ran", r.count())
			}
		}
		p.kill()
		t.Logf("%s: killed with -9 once %d of %d items ran, after %v", e.name, r.count(), items, time.Since(start).Round(time.Millisecond))
		p = startProc(t, o)
		mu.Lock()
		live = []string{p.url}
		mu.Unlock()
		j, _ = waitJobAt(t, p.url, "big")
		t.Logf("%s: %d items done in %v", e.name, j.Done, time.Since(start).Round(time.Millisecond))
		if j.State != "done" || j.Items != items || j.Done != items || j.Failed != 0 {
			t.Fatalf("job %+v", j)
		}
		r.check(t, items)
	})
}
