package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// replicas opens n servers on one PostgreSQL database.
func replicas(t *testing.T, n int, o Options) ([]*Server, []*httptest.Server) {
	t.Helper()
	e := &engine{t: t, name: "postgres", dir: t.TempDir(), store: pgtest.Shared(t).NewDatabase()}
	var ss []*Server
	var hss []*httptest.Server
	for range n {
		s, hs := e.serve(o)
		ss, hss = append(ss, s), append(hss, hs)
	}
	return ss, hss
}

// Across replicas: a poll parked on one is woken by an enqueue through
// the other (LISTEN/NOTIFY); the live-poller rule holds across them; a
// cancel through one reaches a node polling the other.
func TestReplicasShareNodes(t *testing.T) {
	ss, hss := replicas(t, 2, Options{LiveWindow: time.Second})
	done := make(chan remote.PollResponse, 1)
	start := time.Now()
	go func() {
		_, got := pollCode(t, hss[0], "n", remote.PollRequest{BootID: "a", Capacity: 1, WaitMS: 20_000})
		done <- got
	}()
	for !ss[1].polling(t, "n") {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the poll never parked")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := pollCode(t, hss[1], "n", remote.PollRequest{BootID: "b"}); code != http.StatusConflict {
		t.Fatalf("another boot on the other replica while a poll is parked: %d, want 409", code)
	}
	if _, err := ss[1].Enqueue([]Call{{ID: "c", Node: "n", Task: "t"}}); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if len(got.Calls) != 1 || got.Calls[0].ID != "c" {
		t.Fatalf("parked poll on replica 0 after an enqueue on replica 1: %+v after %v", got, time.Since(start))
	}
	seq := got.Calls[0].Seq
	// The node's next poll goes to the other replica: the ack and the
	// session carry over.
	if code, _ := pollCode(t, hss[1], "n", remote.PollRequest{BootID: "a", AckThrough: seq}); code != http.StatusNoContent {
		t.Fatalf("ack on replica 1: %d", code)
	}
	req, _ := http.NewRequest("DELETE", hss[0].URL+"/api/v1/calls/c", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, got := pollCode(t, hss[1], "n", remote.PollRequest{BootID: "a", AckThrough: seq, Renew: []string{"c"}}); len(got.Cancel) != 1 {
		t.Fatalf("cancel through replica 0, poll on replica 1: %+v", got)
	}
}

// simNode is a lightweight node: it long-polls the servers in turn,
// reports every call it gets in one results:batch (output: the call id)
// through the next server, and acknowledges, until stop returns true. A
// result that is not 201 fails tb; got sees each delivered call, reported
// the number of results each batch recorded.
func simNode(tb testing.TB, hss []*httptest.Server, node string, capacity int, stop func() bool, got func(remote.WireCall), reported func(int)) {
	var ack uint64
	hc := &http.Client{Timeout: 30 * time.Second}
	for i := 0; !stop(); i++ {
		var resp remote.PollResponse
		code := call(hc, "POST", hss[i%len(hss)].URL+"/edge/v1/nodes/"+node+"/poll",
			remote.PollRequest{BootID: "boot-" + node, AckThrough: ack, Capacity: capacity, WaitMS: 500}, &resp)
		if code != http.StatusOK && code != http.StatusNoContent {
			tb.Errorf("node %s poll: %d", node, code)
			return
		}
		if len(resp.Calls) == 0 {
			continue
		}
		var batch remote.BatchRequest
		for _, c := range resp.Calls {
			ack = max(ack, c.Seq)
			got(c)
			batch.Results = append(batch.Results, result(c.ID, "ok", c.ID))
		}
		var br remote.BatchResponse
		if code := call(hc, "POST", hss[(i+1)%len(hss)].URL+"/edge/v1/nodes/"+node+"/results:batch", batch, &br); code != http.StatusOK {
			tb.Errorf("node %s results: %d", node, code)
			return
		}
		for _, it := range br.Items {
			if it.Status != http.StatusCreated {
				tb.Errorf("result of %s: %d", it.CallID, it.Status)
			}
		}
		reported(len(br.Items))
	}
}

// call sends a JSON request of the edge API and decodes a 200 answer.
func call(hc *http.Client, method, url string, body, out any) int {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, url, bytes.NewReader(b))
	req.Header.Set(remote.HeaderProtocol, remote.Protocol)
	resp, err := hc.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return 0
		}
	}
	return resp.StatusCode
}

// Simulated nodes poll and report through both replicas in turn: every
// call is delivered once and recorded once.
func TestReplicasExactlyOnce(t *testing.T) {
	const nodes, perNode = 20, 25
	ss, hss := replicas(t, 2, Options{Lease: 30 * time.Second})
	var all []Call
	for n := range nodes {
		for i := range perNode {
			all = append(all, Call{ID: fmt.Sprintf("n%d-%d", n, i), Node: fmt.Sprint("n", n), Task: "t", Effect: "idempotent"})
		}
	}
	// Enqueued while the nodes poll, half through each replica.
	var reported atomic.Int64
	stop := func() bool { return reported.Load() >= int64(len(all)) }
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Go(func() {
			simNode(t, hss, fmt.Sprint("n", n), 4, stop, func(remote.WireCall) {}, func(n int) { reported.Add(int64(n)) })
		})
	}
	for i := 0; i < len(all); i += 50 {
		if _, err := ss[(i/50)%2].Enqueue(all[i:min(i+50, len(all))]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for _, c := range all {
		rec, _ := ss[0].Get(c.ID)
		if rec.State != "done" || rec.Deliveries != 1 || rec.Replays != 0 || string(rec.Result.Output) != c.ID {
			t.Fatalf("call %s: %+v", c.ID, rec)
		}
	}
}

// The database restarts under a replica: while it is down polls are 503
// (the node backs off) and enqueues fail; once it is back the pool and the
// notice connection reconnect, and a parked poll is woken by an enqueue.
func TestPostgresRestart(t *testing.T) {
	pg := pgtest.Start(t)
	e := &engine{t: t, name: "postgres", dir: t.TempDir(), store: pg.NewDatabase()}
	s, hs := e.serve(Options{})
	if _, err := s.Enqueue([]Call{{ID: "before", Node: "n", Task: "t"}}); err != nil {
		t.Fatal(err)
	}
	if _, got := pollCode(t, hs, "n", remote.PollRequest{BootID: "b", Capacity: 1}); len(got.Calls) != 1 {
		t.Fatalf("poll %+v", got)
	}
	pg.Kill()
	if code, _ := pollCode(t, hs, "n", remote.PollRequest{BootID: "b", AckThrough: 1}); code != http.StatusServiceUnavailable {
		t.Fatalf("poll with the database down: %d, want 503", code)
	}
	if _, err := s.Enqueue([]Call{{ID: "lost", Node: "n", Task: "t"}}); err == nil {
		t.Fatal("enqueue with the database down succeeded")
	}
	pg.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _ := pollCode(t, hs, "n", remote.PollRequest{BootID: "b", AckThrough: 1})
		if code == http.StatusNoContent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("poll after the database came back: %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	done := make(chan remote.PollResponse, 1)
	go func() {
		_, got := pollCode(t, hs, "n", remote.PollRequest{BootID: "b", AckThrough: 1, Capacity: 1, WaitMS: 30_000})
		done <- got
	}()
	for deadline := time.Now().Add(10 * time.Second); !s.polling(t, "n"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the poll never parked")
		}
	}
	start := time.Now()
	if _, err := s.Enqueue([]Call{{ID: "after", Node: "n", Task: "t"}}); err != nil {
		t.Fatal(err)
	}
	if got := <-done; len(got.Calls) != 1 || got.Calls[0].ID != "after" || time.Since(start) > 20*time.Second {
		t.Fatalf("parked poll after the restart: %+v after %v", got, time.Since(start))
	}
}
