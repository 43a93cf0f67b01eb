package remote_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// The happy path: calls in, results out, each run once, long poll wakes at
// once on enqueue.
func TestLinkCalls(t *testing.T) {
	cl := startCloud(t, server.Options{})
	e := startEdge(t, cl, t.TempDir(), nil)
	time.Sleep(100 * time.Millisecond) // the node is parked in a long poll
	start := time.Now()
	cl.enqueue(echoCalls("edge-1", []string{"first"}, "idempotent")...)
	cl.waitFinal([]string{"first"}, 5*time.Second)
	if el := time.Since(start); el > 400*time.Millisecond {
		t.Errorf("enqueue to result took %v with a 500ms poll wait: the long poll did not wake", el)
	}
	list := ids("c", 60)
	cl.enqueue(echoCalls("edge-1", list, "at_most_once")...)
	cl.waitFinal(list, 10*time.Second)
	e.checkOnce(cl, append(list, "first"))
}

// The same call twice in one response, and the same call redelivered after
// a lost poll response (the ack never came): run once.
func TestLinkLostAckAndDuplicates(t *testing.T) {
	cl := startCloud(t, server.Options{})
	var dropped atomic.Int32
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) != "poll" || dropped.Load() > 0 {
			return false
		}
		resp, body := cl.forward(r)
		if resp != nil && resp.StatusCode == 200 {
			dropped.Add(1)
			hangUp(w) // the server leased the calls; the node never hears of them
			return true
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
		return true
	})
	list := ids("lost", 5)
	cl.enqueue(echoCalls("edge-1", list, "at_most_once")...)
	e := startEdge(t, cl, t.TempDir(), nil)
	cl.waitFinal(list, 10*time.Second)
	if dropped.Load() != 1 {
		t.Fatal("no response was dropped")
	}
	e.checkOnce(cl, list)
	for _, id := range list {
		if c, _ := cl.srv.Get(id); c.Deliveries != 2 {
			t.Errorf("%s delivered %d times, want 2 (redelivered after the lost response)", id, c.Deliveries)
		}
	}
}

// The same call twice in one poll response.
func TestLinkSameCallTwiceInOneResponse(t *testing.T) {
	cl := startCloud(t, server.Options{})
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) != "poll" {
			return false
		}
		resp, body := cl.forward(r)
		if resp == nil {
			hangUp(w)
			return true
		}
		if resp.StatusCode == 200 {
			var pr remote.PollResponse
			_ = json.Unmarshal(body, &pr)
			pr.Calls = append(pr.Calls, pr.Calls...)
			body, _ = json.Marshal(pr)
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
		return true
	})
	e := startEdge(t, cl, t.TempDir(), nil)
	list := ids("twice", 4)
	cl.enqueue(echoCalls("edge-1", list, "at_most_once")...)
	cl.waitFinal(list, 10*time.Second)
	e.checkOnce(cl, list)
}

// Redelivery after lease expiry while the first attempt still runs: the
// node acknowledges it and does not start it again.
func TestLinkRedeliveryWhileRunning(t *testing.T) {
	cl := startCloud(t, server.Options{Lease: 300 * time.Millisecond})
	// Renewals never reach the server: the lease expires while the call runs.
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		return false
	})
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) { c.PollWait = 2 * time.Second })
	cl.enqueue(server.Call{ID: "long", Node: "edge-1", Task: "slow", Input: []byte("1500ms"), Effect: "idempotent", LeaseMS: 100})
	cl.waitFinal([]string{"long"}, 10*time.Second)
	c, _ := cl.srv.Get("long")
	if c.Result == nil || c.Result.Status != "ok" {
		t.Fatalf("result %+v", c)
	}
	if n := e.ex.count("long"); n != 1 {
		t.Errorf("ran %d times", n)
	}
	t.Logf("deliveries %d, attempt %d", c.Deliveries, c.Attempt)
}

// 500 on poll, and 503/429 with Retry-After: the node waits and goes on.
func TestLinkPollErrorsAndRetryAfter(t *testing.T) {
	cl := startCloud(t, server.Options{})
	var n atomic.Int32
	var firstAt, resumedAt atomic.Int64
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) != "poll" {
			return false
		}
		switch n.Add(1) {
		case 1:
			w.WriteHeader(500)
			return true
		case 2:
			firstAt.Store(time.Now().UnixNano())
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(503)
			return true
		case 3:
			resumedAt.Store(time.Now().UnixNano())
			// An HTTP date with the server clock an hour ahead: 1s after its Date.
			now := time.Now().Add(time.Hour)
			w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
			w.Header().Set("Retry-After", now.Add(time.Second).UTC().Format(http.TimeFormat))
			w.WriteHeader(429)
			return true
		}
		return false
	})
	e := startEdge(t, cl, t.TempDir(), nil)
	list := ids("ra", 3)
	cl.enqueue(echoCalls("edge-1", list, "idempotent")...)
	start := time.Now()
	cl.waitFinal(list, 15*time.Second)
	if gap := time.Duration(resumedAt.Load() - firstAt.Load()); gap < 900*time.Millisecond {
		t.Errorf("Retry-After 1 honoured for only %v", gap)
	}
	if el := time.Since(start); el < 1800*time.Millisecond || el > 8*time.Second {
		t.Errorf("took %v: want about 2s of Retry-After (a date form measured against an hour-off server clock)", el)
	}
	e.checkOnce(cl, list)
}

// 429 on result uploads while polls succeed: calls keep flowing, results
// wait in the outbox and all arrive.
func TestLinkResultUpload429(t *testing.T) {
	cl := startCloud(t, server.Options{})
	var refused atomic.Int32
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if k := kind(r); (k == "result" || k == "batch") && refused.Add(1) <= 5 {
			w.Header().Set("Retry-After", "0") // absent/zero: the backoff applies
			w.WriteHeader(429)
			return true
		}
		return false
	})
	e := startEdge(t, cl, t.TempDir(), nil)
	list := ids("r429", 20)
	cl.enqueue(echoCalls("edge-1", list, "idempotent")...)
	cl.waitFinal(list, 15*time.Second)
	if refused.Load() < 5 {
		t.Fatalf("only %d uploads refused", refused.Load())
	}
	e.checkOnce(cl, list)
}

// The result response is lost after the server stored it: the node sends
// it again, the server answers 200 (same hash) and counts a replay.
func TestLinkResultResponseLost(t *testing.T) {
	cl := startCloud(t, server.Options{})
	var lost atomic.Int32
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if k := kind(r); (k == "result" || k == "batch") && lost.Add(1) == 1 {
			cl.forward(r)
			hangUp(w)
			return true
		}
		return false
	})
	e := startEdge(t, cl, t.TempDir(), nil)
	cl.enqueue(echoCalls("edge-1", []string{"rl"}, "at_most_once")...)
	cl.waitFinal([]string{"rl"}, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, _ := cl.srv.Get("rl"); c.Replays == 1 {
			break
		}
		if time.Now().After(deadline) {
			c, _ := cl.srv.Get("rl")
			t.Fatalf("no replay recorded: %+v", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.checkOnce(cl, []string{"rl"})
}

// The result request is lost before the server sees it: sent again.
func TestLinkResultRequestLost(t *testing.T) {
	cl := startCloud(t, server.Options{})
	var lost atomic.Int32
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if k := kind(r); (k == "result" || k == "batch") && lost.Add(1) == 1 {
			hangUp(w)
			return true
		}
		return false
	})
	e := startEdge(t, cl, t.TempDir(), nil)
	cl.enqueue(echoCalls("edge-1", []string{"rq"}, "at_most_once")...)
	cl.waitFinal([]string{"rq"}, 10*time.Second)
	if c, _ := cl.srv.Get("rq"); c.Replays != 0 {
		t.Errorf("replays %d", c.Replays)
	}
	e.checkOnce(cl, []string{"rq"})
}

// Truncated JSON, bad gzip and a non-JSON proxy page: logged, backed off,
// redelivered; the node keeps running and every call runs once.
func TestLinkBadResponses(t *testing.T) {
	cl := startCloud(t, server.Options{})
	var n atomic.Int32
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) != "poll" {
			return false
		}
		switch n.Add(1) {
		case 1:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"calls":[{"seq":1,"id":"x"`))
		case 2:
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write([]byte("not gzip at all"))
		case 3:
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>502 bad gateway</html>"))
		default:
			return false
		}
		return true
	})
	e := startEdge(t, cl, t.TempDir(), nil)
	list := ids("bad", 3)
	cl.enqueue(echoCalls("edge-1", list, "at_most_once")...)
	cl.waitFinal(list, 10*time.Second)
	if n.Load() < 4 {
		t.Fatalf("only %d polls", n.Load())
	}
	e.checkOnce(cl, list)
}

// A proxy cutting the long poll before the server answers is retried at once.
func TestLinkProxyCutsPoll(t *testing.T) {
	cl := startCloud(t, server.Options{})
	var cut atomic.Int32
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) == "poll" && cut.Add(1) <= 3 {
			time.Sleep(50 * time.Millisecond)
			hangUp(w)
			return true
		}
		return false
	})
	e := startEdge(t, cl, t.TempDir(), nil)
	cl.enqueue(echoCalls("edge-1", []string{"cut"}, "idempotent")...)
	cl.waitFinal([]string{"cut"}, 10*time.Second)
	e.checkOnce(cl, []string{"cut"})
}

// 401 mid-stream: the node re-reads its token file and goes on; 403 stops
// polling.
func TestLinkAuth(t *testing.T) {
	cl := startCloud(t, server.Options{Tokens: map[string]string{"good": "edge-1", "other": "edge-2"}})
	tok := tempFile(t, "stale\n")
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) { c.TokenFile = tok })
	time.Sleep(200 * time.Millisecond)
	if cl.count("poll") < 2 {
		t.Fatalf("polls %d", cl.count("poll"))
	}
	if err := writeFile(tok, "good\n"); err != nil {
		t.Fatal(err)
	}
	cl.enqueue(echoCalls("edge-1", []string{"auth"}, "idempotent")...)
	cl.waitFinal([]string{"auth"}, 10*time.Second)
	e.checkOnce(cl, []string{"auth"})

	tok2 := tempFile(t, "other\n")
	e2 := startEdge(t, cl, t.TempDir(), func(c *remote.Config) { c.TokenFile = tok2 })
	deadline := time.Now().Add(5 * time.Second)
	for e2.c.State() != remote.StateForbidden {
		if time.Now().After(deadline) {
			t.Fatalf("state %s after a 403", e2.c.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two daemons polling as one node: the second is told 409 and waits.
func TestLinkTwoPollers(t *testing.T) {
	cl := startCloud(t, server.Options{})
	a := startEdge(t, cl, t.TempDir(), nil)
	time.Sleep(100 * time.Millisecond)
	b := startEdge(t, cl, t.TempDir(), nil)
	deadline := time.Now().Add(5 * time.Second)
	for b.c.State() != remote.StateConflict {
		if time.Now().After(deadline) {
			t.Fatalf("second poller state %s", b.c.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
	list := ids("two", 10)
	cl.enqueue(echoCalls("edge-1", list, "at_most_once")...)
	cl.waitFinal(list, 10*time.Second)
	for _, id := range list {
		if a.ex.count(id)+b.ex.count(id) != 1 {
			t.Errorf("%s ran %d+%d times", id, a.ex.count(id), b.ex.count(id))
		}
	}
}

// 410 on poll (the server lost the session: restarted without its
// sequence) and the reconcile that follows.
func TestLinkGoneAndReconcile(t *testing.T) {
	cl := startCloud(t, server.Options{})
	e := startEdge(t, cl, t.TempDir(), nil)
	first := ids("before", 3)
	cl.enqueue(echoCalls("edge-1", first, "idempotent")...)
	cl.waitFinal(first, 10*time.Second)
	var gone atomic.Int32
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) == "poll" {
			resp, body := cl.forward(r)
			if resp == nil {
				hangUp(w)
				return true
			}
			if resp.StatusCode == http.StatusGone {
				gone.Add(1)
			}
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(body)
			return true
		}
		return false
	})
	cl.restartLosingSessions()
	after := ids("after", 3)
	cl.enqueue(echoCalls("edge-1", after, "idempotent")...)
	cl.waitFinal(after, 10*time.Second)
	if gone.Load() == 0 {
		t.Error("no 410 after the server lost its sequence")
	}
	e.checkOnce(cl, append(first, after...))
}

// 410 on a result (cancelled while running) and cancel while running: the
// node stops the call and drops the result from its outbox.
func TestLinkCancelWhileRunning(t *testing.T) {
	cl := startCloud(t, server.Options{})
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) { c.PollWait = 200 * time.Millisecond })
	cl.enqueue(server.Call{ID: "cx", Node: "edge-1", Task: "slow", Input: []byte("30s"), Effect: "at_most_once"})
	deadline := time.Now().Add(5 * time.Second)
	for e.ex.count("cx") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	req, _ := http.NewRequest("DELETE", cl.hs.URL+"/api/v1/calls/cx", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("cancel: %v %v", resp, err)
	}
	resp.Body.Close()
	for {
		rec, _ := e.j.Get("cx")
		if rec != nil && rec.State.String() == "reported" {
			if rec.Result.Status != "canceled" {
				t.Errorf("status %s", rec.Result.Status)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record %+v", rec)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c, _ := cl.srv.Get("cx"); c.State != "cancelled" || c.Result != nil {
		t.Errorf("server %+v", c)
	}
}

// ttl expiring while the node is offline: the server expires the call and
// the node never runs it.
func TestLinkTTLWhileOffline(t *testing.T) {
	cl := startCloud(t, server.Options{})
	cl.enqueue(server.Call{ID: "ttl", Node: "edge-1", Task: "echo", TTLMS: 100, Effect: "at_most_once"})
	time.Sleep(200 * time.Millisecond)
	e := startEdge(t, cl, t.TempDir(), nil)
	cl.waitFinal([]string{"ttl"}, 5*time.Second)
	if c, _ := cl.srv.Get("ttl"); c.State != "expired" || c.Result.Status != "expired" {
		t.Errorf("%+v", c)
	}
	if e.ex.count("ttl") != 0 {
		t.Error("expired call ran")
	}
}

// A long outage that fills the outbox: the node advertises zero capacity,
// drops nothing, and flushes when the link is back.
func TestLinkOutboxFull(t *testing.T) {
	cl := startCloud(t, server.Options{})
	var down atomic.Bool
	down.Store(true)
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if k := kind(r); (k == "result" || k == "batch") && down.Load() {
			w.WriteHeader(503)
			return true
		}
		return false
	})
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) { c.OutboxMaxBytes = 100; c.PollWait = 100 * time.Millisecond })
	list := ids("full", 30) // 13 bytes of output each
	cl.enqueue(echoCalls("edge-1", list[:10], "idempotent")...)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, count, _ := e.j.Outbox("cloud", 0); count == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first results never reached the outbox")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A poll already parked keeps the capacity it advertised (the cap is
	// soft by at most max_inflight results); the next poll says zero.
	time.Sleep(300 * time.Millisecond)
	cl.enqueue(echoCalls("edge-1", list[10:], "idempotent")...)
	time.Sleep(500 * time.Millisecond)
	_, count, bytes := e.j.Outbox("cloud", 0)
	if count != 10 || bytes < 100 {
		t.Fatalf("outbox %d results, %d bytes: want the node to stop taking calls at the cap", count, bytes)
	}
	for _, id := range list[10:] {
		if c, _ := cl.srv.Get(id); c.State != "pending" {
			t.Fatalf("%s taken while the outbox was full: %+v", id, c)
		}
	}
	down.Store(false)
	cl.waitFinal(list, 15*time.Second)
	e.checkOnce(cl, list)
}

// A flood in a bulk queue with a trickle in the control queue: control
// calls are handed out first.
func TestLinkControlQueueFirst(t *testing.T) {
	cl := startCloud(t, server.Options{})
	bulk := ids("bulk", 200)
	cl.enqueue(echoCalls("edge-1", bulk, "idempotent")...)
	ctrl := server.Call{ID: "ctrl", Node: "edge-1", Task: "echo", Input: []byte("in ctrl"), Queue: "control", Effect: "idempotent"}
	cl.enqueue(ctrl)
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) { c.MaxInflight = 8 })
	cl.waitFinal(append(bulk, "ctrl"), 15*time.Second)
	c, _ := cl.srv.Get("ctrl")
	done := 0
	for _, id := range bulk {
		if b, _ := cl.srv.Get(id); b.ResultAt.Before(c.ResultAt) {
			done++
		}
	}
	if done > 16 {
		t.Errorf("%d bulk calls finished before the control call", done)
	}
	e.checkOnce(cl, append(bulk, "ctrl"))
}

// Zero capacity: a node whose scheduler is draining takes nothing.
func TestLinkZeroCapacity(t *testing.T) {
	cl := startCloud(t, server.Options{})
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) { c.MaxInflight = 0; c.OutboxMaxBytes = 1 })
	// An outbox cap of one byte is full after the first result.
	cl.enqueue(echoCalls("edge-1", []string{"z1"}, "idempotent")...)
	cl.waitFinal([]string{"z1"}, 5*time.Second)
	if c, _ := cl.srv.Get("z1"); c.State != "done" {
		t.Fatal(c)
	}
	if !strings.Contains(e.c.State(), "up") {
		t.Errorf("state %s", e.c.State())
	}
}
