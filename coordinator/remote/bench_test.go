package remote_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// BenchmarkLinkThroughput: durable calls per second through the link (real
// server on loopback, journal with group commit, a tiny echo task), b.N
// calls enqueued at once.
//
//	go test -run XXX -bench LinkThroughput -benchtime 10000x ./coordinator/remote
func BenchmarkLinkThroughput(b *testing.B) {
	cl := startCloudB(b)
	startEdgeB(b, cl, func(c *remote.Config) { c.MaxInflight = 1024; c.BatchSize = 512 })
	list := ids(fmt.Sprintf("tp%d", b.N), b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < len(list); i += 1000 {
		cl.enqueue(echoCalls("edge-1", list[i:min(i+1000, len(list))], "idempotent")...)
	}
	cl.waitFinal(list, 5*time.Minute)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}

// BenchmarkEnqueueToStart: latency from enqueue on the server to the start
// of the call on the node, with the long poll, beside a fixed-interval
// poller asking every second (the baseline).
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
	b.Run("fixed_1s_poll", func(b *testing.B) {
		cl := startCloudB(b)
		n := min(b.N, 8) // a second each
		var lat []time.Duration
		var delivered atomic.Int64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // a poller that asks every second and does not wait
			defer close(done)
			var ack uint64
			for {
				body, _ := json.Marshal(remote.PollRequest{BootID: "fixed", AckThrough: ack, Capacity: 10, WaitMS: 0})
				req, _ := http.NewRequest("POST", cl.proxy.URL+"/edge/v1/nodes/edge-1/poll", bytes.NewReader(body))
				req.Header.Set(remote.HeaderProtocol, remote.Protocol)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					var pr remote.PollResponse
					_ = json.NewDecoder(resp.Body).Decode(&pr)
					resp.Body.Close()
					for _, c := range pr.Calls {
						ack = max(ack, c.Seq)
						delivered.Store(time.Now().UnixNano())
					}
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
			}
		}()
		for i := range n {
			before := delivered.Load()
			start := time.Now()
			cl.enqueue(server.Call{ID: fmt.Sprintf("fx-%d", i), Node: "edge-1", Task: "echo"})
			for delivered.Load() == before {
				time.Sleep(time.Millisecond)
			}
			lat = append(lat, time.Duration(delivered.Load()-start.UnixNano()))
			time.Sleep(time.Duration(137*(i+1)%1000) * time.Millisecond) // spread enqueues over the interval
		}
		close(stop)
		<-done
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
