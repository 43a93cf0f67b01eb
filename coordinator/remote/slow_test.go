package remote_test

import (
	"bytes"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// drip answers with the real server's response, one byte per 100ms. The
// body is padded with JSON whitespace so that even a short answer takes
// longer than the read timeout.
func drip(cl *cloud, w http.ResponseWriter, r *http.Request) {
	resp, body := cl.forward(r)
	if resp == nil {
		hangUp(w)
		return
	}
	body = append(body, bytes.Repeat([]byte(" "), 50)...)
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	fl := w.(http.Flusher)
	for i := range body {
		if _, err := w.Write(body[i : i+1]); err != nil {
			return
		}
		fl.Flush()
		select {
		case <-time.After(100 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}
}

// A slow-drip response (1 byte per 100ms) on a poll and on a result
// upload: the read timeout ends each, the link backs off and recovers, and
// every call runs once with its result stored.
func TestLinkSlowDrip(t *testing.T) {
	for _, target := range []string{"poll", "result"} {
		t.Run(target, func(t *testing.T) {
			cl := startCloud(t, server.Options{})
			var dripped atomic.Int32
			var dripEnded atomic.Int64
			cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				k := kind(r)
				if k == "batch" {
					k = "result"
				}
				if k != target || dripped.Add(1) > 1 {
					return false
				}
				start := time.Now()
				drip(cl, w, r)
				dripEnded.Store(int64(time.Since(start)))
				return true
			})
			list := ids("drip-"+target, 3)
			cl.enqueue(echoCalls("edge-1", list, "at_most_once")...)
			start := time.Now()
			e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) {
				c.PollWait = 300 * time.Millisecond
				c.ReadTimeout = time.Second
			})
			cl.waitFinal(list, 10*time.Second)
			el := time.Since(start)
			// For a result the server stored it before dripping its answer,
			// so the calls can be final before the retry is sent: wait for it.
			for wait := time.Now().Add(5 * time.Second); dripped.Load() < 2 && time.Now().Before(wait); {
				time.Sleep(20 * time.Millisecond)
			}
			if dripped.Load() < 2 {
				t.Fatalf("no %s after the dripped one", target)
			}
			// The dripped body is hundreds of bytes (tens of seconds at
			// 10 B/s): the 1s read timeout must have cut it.
			if el > 6*time.Second {
				t.Errorf("took %v: the read timeout did not end the slow response", el)
			}
			if v := sample(t, e.reg, "outpost_cloud_polls_total", "result", "ok"); v < 1 {
				t.Errorf("no successful poll after the slow one")
			}
			e.checkOnce(cl, list)
			if target == "poll" {
				for _, id := range list {
					if c, _ := cl.srv.Get(id); c.Deliveries != 2 {
						t.Errorf("%s delivered %d times, want 2 (the dripped response was never acknowledged)", id, c.Deliveries)
					}
				}
			}
			if target == "result" {
				// The server stored the results before the slow answer; the
				// retry is answered 200 (same hash) and the outbox empties.
				deadline := time.Now().Add(5 * time.Second)
				for sample(t, e.reg, "outpost_cloud_results_uploaded_total", "status", "200") < 1 && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if v := sample(t, e.reg, "outpost_cloud_results_uploaded_total", "status", "200"); v < 1 {
					t.Errorf("no replayed upload after the slow answer")
				}
				for {
					if _, n, _ := e.j.Outbox("cloud", 0); n == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("outbox not empty after the slow answer")
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			e.close()
			// The dripping handler stopped once the client hung up.
			deadline := time.Now().Add(2 * time.Second)
			for dripEnded.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if d := time.Duration(dripEnded.Load()); d < 900*time.Millisecond || d > 3*time.Second {
				t.Errorf("the slow response ran %v: the client did not hang up at its read timeout", d)
			}
		})
	}
}
