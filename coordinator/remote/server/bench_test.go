package server

import (
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// BenchmarkCloudStore: b.N calls through the control plane's HTTP API on
// each engine, with the same load: 50 simulated nodes (simNode: long poll,
// capacity 8, one results:batch per response) and enqueues of 500 calls
// spread over them. badger is the baseline (one process, state in memory,
// written through); postgres is one replica on a PostgreSQL database;
// postgres_2_replicas two replicas on one database, each node alternating
// between them. Reported: calls/s from the first enqueue to the last
// recorded result (every call is enqueued at once, so this is throughput
// under a backlog, not latency). scripts/bench.sh runs the sub-benchmarks one after the other in each
// run (interleaved).
func BenchmarkCloudStore(b *testing.B) {
	for _, c := range []struct {
		name     string
		pg       bool
		replicas int
	}{{"badger", false, 1}, {"postgres", true, 1}, {"postgres_2_replicas", true, 2}} {
		b.Run(c.name, func(b *testing.B) {
			o := Options{Dir: b.TempDir(), Lease: time.Minute}
			if c.pg {
				o.Store = pgtest.Shared(b).NewDatabase()
			}
			var ss []*Server
			var hss []*httptest.Server
			for range c.replicas {
				s, err := Open(o)
				if err != nil {
					b.Fatal(err)
				}
				hs := httptest.NewServer(s.Handler())
				b.Cleanup(func() { hs.Close(); _ = s.Close() })
				ss, hss = append(ss, s), append(hss, hs)
			}
			benchCalls(b, ss, hss)
		})
	}
}

func benchCalls(b *testing.B, ss []*Server, hss []*httptest.Server) {
	const nodes = 50
	var (
		mu       sync.Mutex
		done     int
		finished = make(chan struct{})
	)
	stop := func() bool {
		select {
		case <-finished:
			return true
		default:
			return false
		}
	}
	var elapsed time.Duration
	var start time.Time
	reported := func(n int) {
		mu.Lock()
		defer mu.Unlock()
		if done += n; done == b.N {
			elapsed = time.Since(start)
			close(finished)
		}
	}
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Go(func() { simNode(b, hss, fmt.Sprint("bench-", n), 8, stop, func(remote.WireCall) {}, reported) })
	}
	b.ResetTimer()
	mu.Lock()
	start = time.Now()
	mu.Unlock()
	for i := 0; i < b.N; i += 500 {
		var cs []Call
		for j := i; j < min(i+500, b.N); j++ {
			cs = append(cs, Call{ID: fmt.Sprint("c", j), Node: fmt.Sprint("bench-", j%nodes), Task: "t", Effect: "idempotent"})
		}
		if _, err := ss[(i/500)%len(ss)].Enqueue(cs); err != nil {
			b.Fatal(err)
		}
	}
	<-finished
	b.StopTimer()
	wg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
}

// BenchmarkDeviceMessages: b.N device messages (200-byte payloads) posted
// to messages:batch in batches of 100 by 8 nodes at once, on the same
// engines as BenchmarkCloudStore (postgres_2_replicas: each node
// alternating between two replicas). Reported: messages/s stored.
func BenchmarkDeviceMessages(b *testing.B) {
	for _, c := range []struct {
		name     string
		pg       bool
		replicas int
	}{{"badger", false, 1}, {"postgres", true, 1}, {"postgres_2_replicas", true, 2}} {
		b.Run(c.name, func(b *testing.B) {
			o := Options{Dir: b.TempDir()}
			if c.pg {
				o.Store = pgtest.Shared(b).NewDatabase()
			}
			var urls []string
			for range c.replicas {
				s, err := Open(o)
				if err != nil {
					b.Fatal(err)
				}
				hs := httptest.NewServer(s.Handler())
				b.Cleanup(func() { hs.Close(); _ = s.Close() })
				urls = append(urls, hs.URL)
			}
			const nodes, batch = 8, 100
			payload := make([]byte, 200)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for n := range nodes {
				wg.Go(func() {
					for i, k := n*batch, 0; i < b.N; i, k = i+nodes*batch, k+1 {
						var msgs []remote.Message
						for j := i; j < min(i+batch, b.N); j++ {
							msgs = append(msgs, remote.Message{ID: fmt.Sprint("m", j), Topic: "devices/d/up", Payload: payload, QoS: 1})
						}
						if code, r := postMessages(b, urls[k%len(urls)], fmt.Sprint("bench-", n), msgs...); code != 200 || r.Stored != len(msgs) {
							b.Errorf("batch at %d: %d %+v", i, code, r)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "messages/s")
		})
	}
}
