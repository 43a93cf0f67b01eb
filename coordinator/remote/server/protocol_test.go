package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// pollCode sends one poll and returns its status and response.
func pollCode(t *testing.T, hs *httptest.Server, node string, req remote.PollRequest) (int, remote.PollResponse) {
	t.Helper()
	b, _ := json.Marshal(req)
	hreq, _ := http.NewRequest("POST", hs.URL+"/edge/v1/nodes/"+node+"/poll", bytes.NewReader(b))
	hreq.Header.Set(remote.HeaderProtocol, remote.Protocol)
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out remote.PollResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, out
}

func ids(cs []remote.WireCall) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// The poll protocol on each engine: order (control queue, priority,
// enqueue order) and capacity; redelivery of a response the node never
// acknowledged; 410 for an ack past the session; cancel of a held call,
// reported once, and 410 for its result; start-by ttl expiry while queued;
// a parked long poll woken by an enqueue; the node's call list.
func TestPollProtocol(t *testing.T) { forEngines(t, testPollProtocol) }

func testPollProtocol(t *testing.T, e *engine) {
	s, hs := e.serve(Options{Lease: 10 * time.Second})
	enqueue := func(cs ...Call) {
		t.Helper()
		items, err := s.Enqueue(cs)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			if !it.Created {
				t.Fatalf("enqueue %+v", it)
			}
		}
	}
	t.Run("order and capacity", func(t *testing.T) {
		enqueue(Call{ID: "low", Node: "o", Task: "t"}, Call{ID: "high", Node: "o", Task: "t", Priority: 5},
			Call{ID: "ctrl", Node: "o", Task: "t", Queue: "control"}, Call{ID: "low2", Node: "o", Task: "t"})
		_, got := pollCode(t, hs, "o", remote.PollRequest{BootID: "b", Capacity: 3})
		if s := fmt.Sprint(ids(got.Calls)); s != "[ctrl high low]" {
			t.Fatalf("first poll %s, want control first, then priority, then enqueue order, 3 at most", s)
		}
		// Three delivered and unacknowledged: a capacity of 4 leaves room for one.
		_, got = pollCode(t, hs, "o", remote.PollRequest{BootID: "b", AckThrough: got.Calls[2].Seq, Capacity: 1})
		if s := fmt.Sprint(ids(got.Calls)); s != "[low2]" || got.Calls[0].Seq != 4 {
			t.Fatalf("second poll %s %+v", s, got.Calls)
		}
	})
	t.Run("unacknowledged response redelivered", func(t *testing.T) {
		enqueue(Call{ID: "r", Node: "r", Task: "t"})
		_, got := pollCode(t, hs, "r", remote.PollRequest{BootID: "b", Capacity: 1})
		if len(got.Calls) != 1 {
			t.Fatalf("poll %+v", got)
		}
		// The response was lost: the next poll acknowledges nothing.
		_, again := pollCode(t, hs, "r", remote.PollRequest{BootID: "b", Capacity: 1})
		if len(again.Calls) != 1 || again.Calls[0].ID != "r" || again.Calls[0].Attempt != 1 || again.Calls[0].Seq <= got.Calls[0].Seq {
			t.Fatalf("redelivery %+v after %+v", again.Calls, got.Calls)
		}
		if c, _ := s.Get("r"); c.Deliveries != 2 || c.State != "leased" {
			t.Errorf("record %+v", c)
		}
	})
	t.Run("ack past the session", func(t *testing.T) {
		if code, _ := pollCode(t, hs, "r", remote.PollRequest{BootID: "b", AckThrough: 1000}); code != http.StatusGone {
			t.Fatalf("status %d, want 410", code)
		}
	})
	t.Run("cancel a held call", func(t *testing.T) {
		enqueue(Call{ID: "x", Node: "c", Task: "t"})
		_, got := pollCode(t, hs, "c", remote.PollRequest{BootID: "b", Capacity: 1})
		seq := got.Calls[0].Seq
		pollCode(t, hs, "c", remote.PollRequest{BootID: "b", AckThrough: seq})
		req, _ := http.NewRequest("DELETE", hs.URL+"/api/v1/calls/x", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("cancel: %v %v", resp, err)
		}
		resp.Body.Close()
		if _, got := pollCode(t, hs, "c", remote.PollRequest{BootID: "b", AckThrough: seq, Renew: []string{"x"}}); !slices.Equal(got.Cancel, []string{"x"}) {
			t.Fatalf("poll after cancel %+v", got)
		}
		if code, got := pollCode(t, hs, "c", remote.PollRequest{BootID: "b", AckThrough: seq}); code != http.StatusNoContent {
			t.Fatalf("cancel reported again: %d %+v", code, got)
		}
		if code := put(t, hs, "c", result("x", "canceled", "")); code != http.StatusGone {
			t.Errorf("result of the cancelled call: %d", code)
		}
		req, _ = http.NewRequest("DELETE", hs.URL+"/api/v1/calls/x", nil)
		resp, _ = http.DefaultClient.Do(req)
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict {
			t.Errorf("second cancel: %d, want 409", resp.StatusCode)
		}
	})
	t.Run("start-by ttl passes while queued", func(t *testing.T) {
		enqueue(Call{ID: "late", Node: "e", Task: "t", TTLMS: 1}, Call{ID: "fresh", Node: "e", Task: "t", TTLMS: 60_000})
		time.Sleep(20 * time.Millisecond)
		_, got := pollCode(t, hs, "e", remote.PollRequest{BootID: "b", Capacity: 5})
		if len(got.Calls) != 1 || got.Calls[0].ID != "fresh" || got.Calls[0].StartByMS <= 0 || got.Calls[0].StartByMS > 60_000 {
			t.Fatalf("poll %+v", got.Calls)
		}
		if c, _ := s.Get("late"); c.State != "expired" || c.Result == nil || c.Result.Status != "expired" {
			t.Errorf("late call %+v", c)
		}
	})
	t.Run("long poll woken by enqueue", func(t *testing.T) {
		done := make(chan remote.PollResponse, 1)
		start := time.Now()
		go func() {
			_, got := pollCode(t, hs, "w", remote.PollRequest{BootID: "b", Capacity: 1, WaitMS: 20_000})
			done <- got
		}()
		time.Sleep(300 * time.Millisecond) // the poll parks
		enqueue(Call{ID: "wake", Node: "w", Task: "t"})
		got := <-done
		if len(got.Calls) != 1 || time.Since(start) > 15*time.Second {
			t.Fatalf("poll %+v after %v", got, time.Since(start))
		}
	})
	t.Run("node call list", func(t *testing.T) {
		req, _ := http.NewRequest("GET", hs.URL+"/edge/v1/nodes/o/calls?state=leased", nil)
		req.Header.Set(remote.HeaderProtocol, remote.Protocol)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list remote.CallList
		_ = json.NewDecoder(resp.Body).Decode(&list)
		var got []string
		for _, c := range list.Calls {
			got = append(got, c.ID)
		}
		slices.Sort(got)
		if fmt.Sprint(got) != "[ctrl high low low2]" {
			t.Fatalf("leased calls of o: %v", got)
		}
	})
}

// polling reports whether the server sees a poll of node in flight.
func (s *Server) polling(t *testing.T, node string) bool {
	t.Helper()
	ns, err := s.st.nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.ID == node {
			return n.Polling
		}
	}
	return false
}

// One live poller per node: a poll from another boot id while a poll is
// parked is 409; once that poller's connection drops the other boot is
// served at once; after a poll ends normally another boot waits out the
// live window.
func TestLivePoller(t *testing.T) { forEngines(t, testLivePoller) }

func testLivePoller(t *testing.T, e *engine) {
	s, hs := e.serve(Options{LiveWindow: 2 * time.Second})
	b, _ := json.Marshal(remote.PollRequest{BootID: "a", WaitMS: 30_000, Capacity: 1})
	hreq, _ := http.NewRequest("POST", hs.URL+"/edge/v1/nodes/n/poll", bytes.NewReader(b))
	hreq.Header.Set(remote.HeaderProtocol, remote.Protocol)
	tr := &http.Transport{}
	parked := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Do(hreq)
		if err == nil {
			resp.Body.Close()
		}
		parked <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !s.polling(t, "n") {
		if time.Now().After(deadline) {
			t.Fatal("the first poll never parked")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := pollCode(t, hs, "n", remote.PollRequest{BootID: "b"}); code != http.StatusConflict {
		t.Fatalf("another boot while a poll is parked: %d, want 409", code)
	}
	tr.CloseIdleConnections()
	hs.CloseClientConnections() // the parked poller's connection drops
	<-parked
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, _ := pollCode(t, hs, "n", remote.PollRequest{BootID: "b"})
		if code == http.StatusNoContent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the poller dropped: %d, want 204", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// b's poll ended normally just now: a stays out for the live window.
	if code, _ := pollCode(t, hs, "n", remote.PollRequest{BootID: "a"}); code != http.StatusConflict {
		t.Fatalf("within the live window: %d, want 409", code)
	}
	time.Sleep(2500 * time.Millisecond)
	if code, _ := pollCode(t, hs, "n", remote.PollRequest{BootID: "a"}); code != http.StatusNoContent {
		t.Fatalf("after the live window: %d, want 204", code)
	}
}

// Results from many goroutines at once, each call's result sent twice
// with the same hash and once with another: one 201, the rest 200 or 409,
// and the stored result is the first.
func TestConcurrentResults(t *testing.T) { forEngines(t, testConcurrentResults) }

func testConcurrentResults(t *testing.T, e *engine) {
	s, hs := e.serve(Options{})
	var cs []Call
	for i := range 50 {
		cs = append(cs, Call{ID: fmt.Sprint("c", i), Node: "n", Task: "t"})
	}
	if _, err := s.Enqueue(cs); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	codes := map[string][]int{}
	var wg sync.WaitGroup
	for _, c := range cs {
		for _, out := range []string{"same", "same", "other"} {
			wg.Go(func() {
				code := put(t, hs, "n", result(c.ID, "ok", out))
				mu.Lock()
				codes[c.ID] = append(codes[c.ID], code)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for _, c := range cs {
		got := codes[c.ID]
		slices.Sort(got)
		rec, _ := s.Get(c.ID)
		first := string(rec.Result.Output)
		want := []int{200, 201, 409} // "same" stored first
		if first == "other" {
			want = []int{201, 409, 409}
		}
		if !slices.Equal(got, want) || rec.Replays+rec.Conflicts != 2 {
			t.Fatalf("call %s: codes %v, want %v; stored %q, replays %d, conflicts %d", c.ID, got, want, first, rec.Replays, rec.Conflicts)
		}
	}
}
