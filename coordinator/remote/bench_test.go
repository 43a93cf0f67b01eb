package remote_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
)

// BenchmarkLinkThroughput: calls per second through the link (real server
// on loopback, a tiny echo task, b.N calls enqueued at once), with the
// node's journal (group commit: every call RECEIVED, STARTED, FINISHED and
// REPORTED on disk) beside the same link, scheduler and task with results
// kept in memory only (the baseline: what the journal costs).
//
//	go test -run XXX -bench LinkThroughput -benchtime 10000x ./coordinator/remote
func BenchmarkLinkThroughput(b *testing.B) {
	tune := func(c *remote.Config) { c.MaxInflight = 1024; c.BatchSize = 512 }
	run := func(b *testing.B, cl *cloud) {
		list := ids(fmt.Sprintf("tp%d", b.N), b.N)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < len(list); i += 1000 {
			cl.enqueue(echoCalls("edge-1", list[i:min(i+1000, len(list))], "idempotent")...)
		}
		cl.waitFinal(list, 5*time.Minute)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
	}
	b.Run("journal", func(b *testing.B) {
		cl := startCloudB(b)
		startEdgeB(b, cl, tune)
		run(b, cl)
	})
	b.Run("no_journal", func(b *testing.B) {
		cl := startCloudB(b)
		startMemEdge(b, cl, tune)
		run(b, cl)
	})
}

// memNode is a remote.Node without a journal: calls run through a real
// scheduler on the echo executor and their results wait in memory. It is
// the baseline of BenchmarkLinkThroughput, nothing else: it survives no
// crash and dedupes nothing it has reported.
type memNode struct {
	s    *calls.Scheduler
	link atomic.Pointer[remote.Client]

	mu     sync.Mutex
	seen   map[string]bool
	outbox []*calls.Record
}

func startMemEdge(b *testing.B, cl *cloud, mod func(*remote.Config)) {
	n := &memNode{s: calls.NewScheduler(&testExec{runs: map[string]int{}}, calls.Options{Workers: 4, QueueSize: 1000}, quiet, nil), seen: map[string]bool{}}
	cfg := remote.Config{URL: cl.proxy.URL, NodeID: "edge-1", PollWait: 500 * time.Millisecond, BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	mod(&cfg)
	c := remote.New(cfg, n, quiet, prometheus.NewRegistry())
	n.link.Store(c)
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.StopPolling()
		_ = n.s.Drain(ctx)
		_ = c.Stop(ctx)
	})
}

func (n *memNode) Accept(cs []*calls.Call) ([]calls.Outcome, error) {
	outs := make([]calls.Outcome, len(cs))
	for i, c := range cs {
		n.mu.Lock()
		dup := n.seen[c.ID]
		n.seen[c.ID] = true
		n.mu.Unlock()
		if dup {
			outs[i] = calls.InFlight
			continue
		}
		c.Done = func(c *calls.Call) {
			n.mu.Lock()
			res := c.Result
			n.outbox = append(n.outbox, &calls.Record{ID: c.ID, Task: c.Task, Source: c.Source, Effect: c.Effect,
				Attempt: max(c.Attempt, 1), State: calls.Finished, Result: &res})
			n.mu.Unlock()
			n.link.Load().Notify()
		}
		if err := n.s.Submit(c); err != nil {
			return nil, err
		}
	}
	return outs, nil
}

func (n *memNode) Outbox(kind string, limit int) ([]*calls.Record, int, int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := slices.Clone(n.outbox[:min(limit, len(n.outbox))])
	return out, len(n.outbox), 0
}

func (n *memNode) MarkReported(ids ...string) error {
	done := make(map[string]bool, len(ids))
	for _, id := range ids {
		done[id] = true
	}
	n.mu.Lock()
	n.outbox = slices.DeleteFunc(n.outbox, func(r *calls.Record) bool { return done[r.ID] })
	n.mu.Unlock()
	return nil
}

func (n *memNode) QueueRoom() int {
	st := n.s.Stats()
	return max(0, st.QueueSize-st.Queued)
}

func (n *memNode) Unfinished(string) []string { return nil }
func (n *memNode) Cancel(id string) bool      { return n.s.Cancel(id) }
func (n *memNode) Flush() error               { return nil }

// BenchmarkEnqueueToStart: latency from enqueue on the server to the start
// of the call on the node, with the long poll, beside its floor: one HTTP
// round trip on loopback (a POST of a poll-sized body answered with one
// call), the least any pull-based link can take to learn of a call.
//
//	go test -run XXX -bench EnqueueToStart -benchtime 200x ./coordinator/remote
func BenchmarkEnqueueToStart(b *testing.B) {
	b.Run("long_poll", func(b *testing.B) {
		cl := startCloudB(b)
		e := startEdgeB(b, cl, nil)
		var lat []time.Duration
		time.Sleep(50 * time.Millisecond)
		for i := range b.N {
			id := fmt.Sprintf("lat-%d", i)
			start := time.Now()
			cl.enqueue(echoCalls("edge-1", []string{id}, "idempotent")...)
			for e.ex.count(id) == 0 {
				time.Sleep(50 * time.Microsecond)
			}
			lat = append(lat, time.Since(start))
			cl.waitFinal([]string{id}, 10*time.Second)
		}
		report(b, lat)
	})
	b.Run("http_round_trip", func(b *testing.B) {
		answer, _ := json.Marshal(remote.PollResponse{Calls: []remote.WireCall{{Seq: 1, ID: "rt", Task: "echo", Input: []byte("in rt"), Effect: "idempotent", LeaseMS: 30000}}})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(answer)
		}))
		defer srv.Close()
		body, _ := json.Marshal(remote.PollRequest{BootID: "floor", Capacity: 10, WaitMS: 0})
		var lat []time.Duration
		for range b.N {
			start := time.Now()
			resp, err := srv.Client().Post(srv.URL+"/edge/v1/nodes/edge-1/poll", "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			var pr remote.PollResponse
			err = json.NewDecoder(resp.Body).Decode(&pr)
			resp.Body.Close()
			if err != nil || len(pr.Calls) != 1 {
				b.Fatalf("poll answer: %v, %d calls", err, len(pr.Calls))
			}
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})
}

func report(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99_ms")
}

// BenchmarkOutboxFlush: results flushed per second after an outage (b.N
// results waiting in the outbox: a one-hour outage at 5 calls/s is
// 18,000), in batches beside one PUT per result (the baseline).
//
//	go test -run XXX -bench OutboxFlush -benchtime 18000x ./coordinator/remote
func BenchmarkOutboxFlush(b *testing.B) {
	for _, mode := range []struct {
		name  string
		batch int
	}{{"batch_256", 256}, {"put_each", 1}} {
		b.Run(mode.name, func(b *testing.B) {
			cl := startCloudB(b)
			var down atomic.Bool
			down.Store(true)
			cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if k := kind(r); (k == "result" || k == "batch") && down.Load() {
					w.WriteHeader(503)
					return true
				}
				return false
			})
			e := startEdgeB(b, cl, func(c *remote.Config) { c.BatchSize = mode.batch; c.MaxInflight = 1024 })
			list := ids("ob", b.N)
			for i := 0; i < len(list); i += 1000 {
				cl.enqueue(echoCalls("edge-1", list[i:min(i+1000, len(list))], "idempotent")...)
			}
			for {
				if _, count, _ := e.j.Outbox("cloud", 0); count == b.N {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			b.ResetTimer()
			start := time.Now()
			down.Store(false)
			cl.waitFinal(list, 10*time.Minute)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "results/s")
		})
	}
}
