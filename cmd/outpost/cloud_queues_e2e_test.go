package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// Priorities end to end: the daemon advertises its queues (weights and
// aging) in its polls and outpost-cloud hands calls out in that order, so
// with a flood enqueued first in the highest queue, the lower queues'
// calls finish while the flood is still being worked off. Each result
// tells the control plane where the call ran. On badger, and on
// PostgreSQL with two replicas behind a balancer that alternates the
// daemon's requests, so the queues' credits are shared.
func TestCloudQueuesUnderFlood(t *testing.T) {
	const queues = `  max_inflight: 4
  aging_after: 200ms
  queues: [{name: high, weight: 8}, {name: mid, weight: 2}, {name: low, weight: 1}]`
	t.Run("badger", func(t *testing.T) {
		c := startCloudProc(t)
		cloudDaemon(t, c, queues)
		testCloudQueuesUnderFlood(t, c)
	})
	t.Run("postgres_2_replicas", func(t *testing.T) {
		storeFile := filepath.Join(t.TempDir(), "store.url")
		if err := os.WriteFile(storeFile, []byte(pgtest.Start(t).NewDatabase()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var reps []*cloudProc
		for range 2 {
			reps = append(reps, startCloudProcArgs(t, "--store-file", storeFile, "--data", filepath.Join(t.TempDir(), "cloud")))
		}
		cloudDaemonAt(t, newBalancer(t, reps[0].url, reps[1].url).url, queues)
		testCloudQueuesUnderFlood(t, reps[0])
	})
}

func testCloudQueuesUnderFlood(t *testing.T, c *cloudProc) {
	var flood []server.Call
	for i := range 400 {
		flood = append(flood, server.Call{ID: fmt.Sprintf("high-%d", i), Node: "edge-1", Task: "echo", Queue: "high", Input: []byte("h")})
	}
	c.enqueue(flood...)
	var rest []server.Call
	for i := range 5 {
		for _, q := range []string{"mid", "low"} {
			rest = append(rest, server.Call{ID: fmt.Sprintf("%s-%d", q, i), Node: "edge-1", Task: "echo", Queue: q, Input: []byte(q)})
		}
	}
	c.enqueue(rest...)
	var lastRest time.Time
	for _, r := range rest {
		got := c.waitDone(r.ID, 60*time.Second)
		if got.State != "done" || got.Result.Status != "ok" || got.Result.Env != "local" || got.Result.Rule != "default" {
			t.Fatalf("%s: %+v", r.ID, got)
		}
		if got.ResultAt.After(lastRest) {
			lastRest = got.ResultAt
		}
	}
	highDone := 0
	for _, h := range flood {
		if got := c.get(h.ID); got.Final() && got.ResultAt.Before(lastRest) {
			highDone++
		}
	}
	// Served by weight the 10 calls of mid and low finish within about
	// the first 60 calls; handed out in enqueue order they would wait for
	// all 400 of the flood.
	if highDone >= 300 {
		t.Errorf("%d of the 400 flood calls finished before the last call of the lower queues; want them served alongside the flood", highDone)
	}
	t.Logf("flood calls finished before the lower queues' last: %d of 400", highDone)
}
