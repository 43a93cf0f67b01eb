package server

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

func put(t *testing.T, hs *httptest.Server, node string, r remote.Result) int {
	t.Helper()
	b, _ := json.Marshal(r)
	req, _ := http.NewRequest("PUT", hs.URL+"/edge/v1/nodes/"+node+"/calls/"+r.CallID+"/attempts/1/result", bytes.NewReader(b))
	req.Header.Set(remote.HeaderProtocol, remote.Protocol)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func result(id, status, out string) remote.Result {
	return remote.Result{CallID: id, Attempt: 1, Status: status, Output: []byte(out), Hash: remote.ResultHash(status, []byte(out), "")}
}

// First result wins; a replay with the same hash is 200, another hash 409;
// unknown calls 404, a bad hash 400, a cancelled call 410.
func TestResults(t *testing.T) { forEngines(t, testResults) }

func testResults(t *testing.T, e *engine) {
	s := e.open(Options{})
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	if _, err := s.Enqueue([]Call{{ID: "a", Node: "n1", Task: "t"}, {ID: "b", Node: "n1", Task: "t"}}); err != nil {
		t.Fatal(err)
	}
	bad := result("a", "ok", "x")
	bad.Hash = "00"
	tests := []struct {
		name string
		node string
		r    remote.Result
		want int
	}{
		{"bad hash", "n1", bad, 400},
		{"unknown call", "n1", result("zz", "ok", "x"), 404},
		{"another node's call", "n2", result("a", "ok", "x"), 404},
		{"first", "n1", result("a", "ok", "first"), 201},
		{"replay", "n1", result("a", "ok", "first"), 200},
		{"different output", "n1", result("a", "ok", "second"), 409},
	}
	tests[3].r.Env, tests[3].r.Rule = "process", "large-input" // where it ran, outside the hash
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := put(t, hs, tt.node, tt.r); got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
		})
	}
	if c, _ := s.Get("a"); string(c.Result.Output) != "first" || c.Replays != 1 || c.Conflicts != 1 {
		t.Errorf("record %+v", c)
	}
	req, _ := http.NewRequest("DELETE", hs.URL+"/api/v1/calls/b", nil)
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	if got := put(t, hs, "n1", result("b", "ok", "late")); got != 410 {
		t.Errorf("result of a cancelled call: %d, want 410", got)
	}
	// State survives a restart.
	_ = s.Close()
	s2 := e.open(Options{})
	defer s2.Close()
	if c, _ := s2.Get("a"); c.State != "done" || string(c.Result.Output) != "first" || c.Result.Env != "process" || c.Result.Rule != "large-input" {
		t.Errorf("after restart %+v", c)
	}
	if c, _ := s2.Get("b"); c.State != "cancelled" {
		t.Errorf("after restart %+v", c)
	}
}

func TestEnqueueValidation(t *testing.T) { forEngines(t, testEnqueueValidation) }

func testEnqueueValidation(t *testing.T, e *engine) {
	s, _ := e.serve(Options{})
	items, err := s.Enqueue([]Call{{ID: "", Node: "n", Task: "t"}, {ID: "a/b", Node: "n", Task: "t"}, {ID: "x", Task: "t"}, {ID: "y", Node: "n", Task: "t", Effect: "twice"}, {ID: "ok", Node: "n", Task: "t"}, {ID: "ok", Node: "n", Task: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range items[:4] {
		if it.Error == "" {
			t.Errorf("item %d accepted: %+v", i, it)
		}
	}
	if !items[4].Created || items[5].Created || items[5].State != "pending" {
		t.Errorf("duplicate id: %+v %+v", items[4], items[5])
	}
}

// A call input over remote.MaxInput is refused at enqueue; a poll response
// carries calls up to its byte budget, the rest go in later polls, each
// response under remote.MaxResponseBody.
func TestPollBodyBudget(t *testing.T) { forEngines(t, testPollBodyBudget) }

func testPollBodyBudget(t *testing.T, e *engine) {
	s, hs := e.serve(Options{})
	in := bytes.Repeat([]byte{'x'}, remote.MaxInput)
	items, err := s.Enqueue([]Call{{ID: "too-big", Node: "n", Task: "t", Input: append(in, 'x')}})
	if err != nil || items[0].Error == "" || !strings.Contains(items[0].Error, "at most") {
		t.Fatalf("input over the limit: %+v %v", items, err)
	}
	var cs []Call
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		cs = append(cs, Call{ID: id, Node: "n", Task: "t", Input: in})
	}
	if _, err := s.Enqueue(cs); err != nil {
		t.Fatal(err)
	}
	got, ack := 0, uint64(0)
	for polls := 0; got < len(cs); polls++ {
		if polls > len(cs) {
			t.Fatalf("%d calls after %d polls", got, polls)
		}
		b, _ := json.Marshal(remote.PollRequest{BootID: "b", AckThrough: ack, Capacity: 100})
		req, _ := http.NewRequest("POST", hs.URL+"/edge/v1/nodes/n/poll", bytes.NewReader(b))
		req.Header.Set(remote.HeaderProtocol, remote.Protocol)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if body.Len() > remote.MaxResponseBody {
			t.Fatalf("poll response of %d bytes", body.Len())
		}
		pr, err := remote.ParsePollResponse(body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if len(pr.Calls) == 0 || len(pr.Calls) == len(cs) {
			t.Fatalf("poll %d carried %d calls of %d bytes each", polls, len(pr.Calls), len(in))
		}
		got += len(pr.Calls)
		ack = pr.Calls[len(pr.Calls)-1].Seq
	}
}

// A call's labels are checked at enqueue, kept across a restart and handed
// to the node with the call.
func TestCallLabels(t *testing.T) { forEngines(t, testCallLabels) }

func testCallLabels(t *testing.T, e *engine) {
	s := e.open(Options{})
	labels := map[string]string{"tier": "batch", "gpu": ""}
	items, err := s.Enqueue([]Call{{ID: "l", Node: "n", Task: "t", Labels: labels}, {ID: "p", Node: "n", Task: "t"},
		{ID: "bad", Node: "n", Task: "t", Labels: map[string]string{"no space": "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !items[0].Created || !items[1].Created || !strings.Contains(items[2].Error, `labels: key "no space": want 1 to 63 letters`) {
		t.Fatalf("enqueue %+v", items)
	}
	_ = s.Close()
	s, hs := e.serve(Options{})
	if c, _ := s.Get("l"); !maps.Equal(c.Labels, labels) {
		t.Fatalf("labels after a restart %v, want %v", c.Labels, labels)
	}
	got := poll(t, hs, "n", remote.PollRequest{BootID: "b", Capacity: 2})
	if len(got.Calls) != 2 || !maps.Equal(got.Calls[0].Labels, labels) || len(got.Calls[1].Labels) != 0 {
		t.Fatalf("delivered %+v", got.Calls)
	}
}
