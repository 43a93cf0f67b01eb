package remote_test

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// Retry-After as an HTTP-date with the server's wall clock an hour ahead,
// an hour behind, and at 1970: the wait is measured against the response's
// own Date header, so the link waits the 1s the server meant each time
// (measured against the node's clock it would wait an hour, or not at all).
func TestLinkRetryAfterDateSkewedServerClock(t *testing.T) {
	tests := []struct {
		name string
		skew func(time.Time) time.Time
	}{
		{"plus one hour", func(now time.Time) time.Time { return now.Add(time.Hour) }},
		{"minus one hour", func(now time.Time) time.Time { return now.Add(-time.Hour) }},
		{"1970", func(now time.Time) time.Time {
			return time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC).Add(now.Sub(now.Truncate(24 * time.Hour)))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := startCloud(t, server.Options{})
			var n atomic.Int32
			refusedAt := make(chan time.Time, 1)
			nextAt := make(chan time.Time, 1)
			cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if kind(r) != "poll" {
					return false
				}
				switch n.Add(1) {
				case 1:
					server := tt.skew(time.Now())
					w.Header().Set("Date", server.UTC().Format(http.TimeFormat))
					w.Header().Set("Retry-After", server.Add(time.Second).UTC().Format(http.TimeFormat))
					w.WriteHeader(http.StatusServiceUnavailable)
					refusedAt <- time.Now()
					return true
				case 2:
					nextAt <- time.Now()
				}
				return false
			})
			e := startEdge(t, cl, t.TempDir(), nil)
			var refused, next time.Time
			select {
			case refused = <-refusedAt:
			case <-time.After(3 * time.Second):
				t.Fatal("no poll")
			}
			select {
			case next = <-nextAt:
			case <-time.After(4 * time.Second):
				t.Fatal("no poll within 4s of a 1s Retry-After: the date was measured against the node's clock")
			}
			// Backoff cap 200ms: without the Retry-After the next poll would
			// come within 200ms.
			if gap := next.Sub(refused); gap < 950*time.Millisecond || gap > 2500*time.Millisecond {
				t.Errorf("next poll %v after a Retry-After 1s past the server's own Date", gap)
			}
			cl.enqueue(echoCalls("edge-1", []string{"after"}, "idempotent")...)
			cl.waitFinal([]string{"after"}, 5*time.Second)
			e.checkOnce(cl, []string{"after"})
		})
	}
}

// Every response carries a Date header from 1970: the lease renewal
// schedule (a poll at least every third of the lease, on the monotonic
// clock) is unchanged, the lease never lapses on the server, and the
// call runs once on its first delivery.
func TestLinkLeaseRenewalIgnoresDateHeader(t *testing.T) {
	cl := startCloud(t, server.Options{})
	epoch := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	var polls []time.Time
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) == "poll" {
			mu.Lock()
			polls = append(polls, time.Now())
			mu.Unlock()
		}
		resp, body := cl.forward(r)
		if resp == nil {
			hangUp(w)
			return true
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.Header().Set("Date", epoch.Format(http.TimeFormat))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
		return true
	})
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) { c.PollWait = 5 * time.Second })
	const lease = 900 * time.Millisecond
	cl.enqueue(server.Call{ID: "held", Node: "edge-1", Task: "slow", Input: []byte("2s"), Effect: "at_most_once", LeaseMS: lease.Milliseconds()})
	cl.waitFinal([]string{"held"}, 10*time.Second)
	c, _ := cl.srv.Get("held")
	if c.Deliveries != 1 || c.Attempt != 1 {
		t.Errorf("deliveries %d, attempt %d: the lease lapsed while the call ran", c.Deliveries, c.Attempt)
	}
	if c.Result == nil || c.Result.Status != "ok" {
		t.Errorf("result %+v", c.Result)
	}
	if n := e.ex.count("held"); n != 1 {
		t.Errorf("ran %d times", n)
	}
	mu.Lock()
	defer mu.Unlock()
	// While the call ran (about 2s) the link polled every lease/3 = 300ms,
	// not every poll wait (5s).
	var maxGap time.Duration
	renewals := 0
	for i := 1; i < len(polls); i++ {
		if polls[i].Sub(polls[0]) > 2*time.Second {
			break
		}
		renewals++
		maxGap = max(maxGap, polls[i].Sub(polls[i-1]))
	}
	if renewals < 4 || maxGap > lease/2+150*time.Millisecond {
		t.Errorf("%d polls in the first 2s, largest gap %v: want one every %v", renewals, maxGap, lease/3)
	}
}
