package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

func poll(t *testing.T, hs *httptest.Server, node string, req remote.PollRequest) remote.PollResponse {
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
	switch resp.StatusCode {
	case http.StatusNoContent:
	case http.StatusOK:
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("poll: %s", resp.Status)
	}
	return out
}

// A renewal that arrives after its lease ran out (a node paused or cut
// off for longer than the lease) does not revive the lease: the call is
// lost to the node and delivered again as the next attempt. A renewal in
// time keeps it.
func TestLeaseRenewedTooLate(t *testing.T) { forEngines(t, testLeaseRenewedTooLate) }

func testLeaseRenewedTooLate(t *testing.T, e *engine) {
	const lease = time.Second
	s, hs := e.serve(Options{Lease: lease})
	if _, err := s.Enqueue([]Call{{ID: "c", Node: "n", Task: "t"}}); err != nil {
		t.Fatal(err)
	}
	got := poll(t, hs, "n", remote.PollRequest{BootID: "b", Capacity: 1})
	if len(got.Calls) != 1 || got.Calls[0].Attempt != 1 {
		t.Fatalf("first poll: %+v", got)
	}
	seq := got.Calls[0].Seq
	poll(t, hs, "n", remote.PollRequest{BootID: "b", AckThrough: seq}) // acknowledged: leased
	// Renewed in time, several times over a span longer than the lease.
	for range 5 {
		time.Sleep(lease / 4)
		if got := poll(t, hs, "n", remote.PollRequest{BootID: "b", AckThrough: seq, Renew: []string{"c"}}); len(got.Lost) != 0 || len(got.Calls) != 0 {
			t.Fatalf("renewal in time: %+v", got)
		}
	}
	time.Sleep(lease + lease/2) // the node is silent longer than the lease
	got = poll(t, hs, "n", remote.PollRequest{BootID: "b", AckThrough: seq, Renew: []string{"c"}, Capacity: 1})
	if !slices.Equal(got.Lost, []string{"c"}) || len(got.Calls) != 1 || got.Calls[0].ID != "c" || got.Calls[0].Attempt != 2 {
		t.Fatalf("late renewal: %+v; want c lost and delivered again as attempt 2", got)
	}
	if c, _ := s.Get("c"); c.Deliveries != 2 || c.Attempt != 2 {
		t.Errorf("server record %+v", c)
	}
}
