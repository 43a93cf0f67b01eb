package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// BenchmarkFleet10k: 10,000 simulated nodes (fleetNode, in this process,
// sharing one HTTP transport) long-poll the control plane, which runs as
// separate processes (so their memory is the server's own): badger, one
// PostgreSQL replica, and two replicas on one database (each node keeps
// to one of them, as behind a load balancer with keep-alive connections:
// 10,000 nodes alternating would need 20,000 connections, past this
// host's file limit). Once every node's poll is parked, one
// enqueue by label selector makes a call for each node. Reported:
// enqueue-s (the enqueue request), deliver-s (from the enqueue to the last
// node holding its call), record-s (to the last result stored), calls/s
// (10,000 over record-s), parked-MB (the servers' RSS with every poll
// parked, summed over replicas) and rss-MB (after the results). badger is
// the baseline of the two PostgreSQL set-ups; scripts/bench.sh runs the
// three one after the other in each run (interleaved).
func BenchmarkFleet10k(b *testing.B) {
	const nodes = 10000
	for _, c := range []struct {
		name     string
		pg       bool
		replicas int
	}{{"badger", false, 1}, {"postgres", true, 1}, {"postgres_2_replicas", true, 2}} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				o := procOptions{Dir: b.TempDir(), LeaseMS: 120_000}
				if c.pg {
					o.Store = pgtest.Shared(b).NewDatabase()
				}
				var ps []*proc
				var urls []string
				for range c.replicas {
					o.Dir = b.TempDir()
					p := startProc(b, o)
					ps, urls = append(ps, p), append(urls, p.url)
				}
				benchFleet(b, ps, urls, nodes)
				for _, p := range ps {
					p.kill()
				}
			}
		})
	}
}

func benchFleet(b *testing.B, ps []*proc, urls []string, nodes int) {
	tr := &http.Transport{MaxIdleConnsPerHost: 2 * nodes, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	var delivered, recorded atomic.Int64
	var tDeliver, tRecord atomic.Int64 // ns since start
	var start time.Time
	allDelivered, allRecorded := make(chan struct{}), make(chan struct{})
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range nodes {
		mine := []string{urls[i%len(urls)]}
		n := &fleetNode{id: fmt.Sprint("f", i), urls: func() []string { return mine }, hc: hc, capacity: 1, waitMS: 30_000,
			ran: func(remote.WireCall) {
				if delivered.Add(1) == int64(nodes) {
					tDeliver.Store(int64(time.Since(start)))
					close(allDelivered)
				}
			},
			recorded: func(k int) {
				if recorded.Add(int64(k)) == int64(nodes) {
					tRecord.Store(int64(time.Since(start)))
					close(allRecorded)
				}
			}}
		wg.Go(func() { n.run(ctx) })
	}
	defer func() { stop(); wg.Wait() }()
	api := urls[0] + "/api/v1/nodes"
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		var v NodesView
		getJSONClient(b, hc, api, &v)
		parked := 0
		for _, n := range v.Nodes {
			if n.Polling {
				parked++
			}
		}
		if parked == nodes {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d polls parked", parked, nodes)
		}
	}
	var parkedRSS int64
	for _, p := range ps {
		parkedRSS += p.rss()
	}
	b.ResetTimer()
	start = time.Now()
	var items struct{ Calls []EnqueueItem }
	if code := postJSON(b, urls[len(urls)-1]+"/api/v1/calls", EnqueueRequest{Selector: "!draining", Calls: []Call{{ID: "fleet", Task: "t", Effect: "idempotent"}}}, &items); code != http.StatusOK || len(items.Calls) != nodes {
		b.Fatalf("enqueue: %d, %d calls", code, len(items.Calls))
	}
	enqueued := time.Since(start)
	for _, ch := range []chan struct{}{allDelivered, allRecorded} {
		select {
		case <-ch:
		case <-time.After(10 * time.Minute):
			b.Fatalf("%d delivered, %d recorded of %d", delivered.Load(), recorded.Load(), nodes)
		}
	}
	b.StopTimer()
	var rss int64
	for _, p := range ps {
		rss += p.rss()
	}
	rec := time.Duration(tRecord.Load())
	b.ReportMetric(enqueued.Seconds(), "enqueue-s")
	b.ReportMetric(time.Duration(tDeliver.Load()).Seconds(), "deliver-s")
	b.ReportMetric(rec.Seconds(), "record-s")
	b.ReportMetric(float64(nodes)/rec.Seconds(), "calls/s")
	b.ReportMetric(float64(parkedRSS)/(1<<20), "parked-MB")
	b.ReportMetric(float64(rss)/(1<<20), "rss-MB")
}

func getJSONClient(tb testing.TB, hc *http.Client, u string, out any) {
	tb.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		tb.Fatal(err)
	}
}
