package server

import (
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

// Simulated nodes poll and report through both replicas at random, each
// request to either one: every call is delivered once and recorded once.
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
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Go(func() {
			node := fmt.Sprint("n", n)
			var ack uint64
			for i := 0; reported.Load() < int64(len(all)); i++ {
				hs := hss[i%2]
				code, got := pollCode(t, hs, node, remote.PollRequest{BootID: "boot-" + node, AckThrough: ack, Capacity: 4, WaitMS: 500})
				if code != http.StatusOK && code != http.StatusNoContent {
					t.Errorf("node %s poll: %d", node, code)
					return
				}
				for _, c := range got.Calls {
					ack = max(ack, c.Seq)
					if code := put(t, hss[(i+1)%2], node, result(c.ID, "ok", c.ID)); code != http.StatusCreated {
						t.Errorf("result of %s: %d", c.ID, code)
					}
					reported.Add(1)
				}
			}
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
