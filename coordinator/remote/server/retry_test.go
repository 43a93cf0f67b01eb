package server

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// A job's retry policy on each engine, through a server restart while
// retries wait for their backoff: of 60 items, a quarter time out on every
// attempt (3 attempts, then given up), a quarter time out once and then
// succeed, a quarter fail (a status the policy does not retry), a quarter
// succeed. A second job over the same source runs nothing and counts the
// same from the stored calls.
func TestJobRetry(t *testing.T) { forEngines(t, testJobRetry) }

func testJobRetry(t *testing.T, e *engine) {
	src := t.TempDir() + "/items.jsonl"
	writeLines(t, src, 60)
	opts := Options{Lease: time.Minute}
	var mu sync.Mutex
	cur := e.open(opts)
	hs := httptest.NewServer(cur.Handler())
	urls := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return []string{hs.URL}
	}
	var runs atomic.Int64
	status := func(c remote.WireCall) string {
		var in struct{ I int }
		if err := json.Unmarshal(c.Input, &in); err != nil {
			t.Errorf("input %q: %v", c.Input, err)
		}
		switch in.I % 4 {
		case 0:
			return "timeout"
		case 1:
			if !strings.HasSuffix(c.ID, ".2") {
				return "timeout"
			}
		case 2:
			return "failed"
		}
		return "ok"
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b"} {
		n := &fleetNode{id: id, urls: urls, hc: &http.Client{Timeout: 10 * time.Second}, capacity: 8, waitMS: 300, status: status,
			ran: func(remote.WireCall) { runs.Add(1) }}
		wg.Go(func() { n.run(ctx) })
	}
	defer func() { stop(); wg.Wait() }()
	retry := &RetryPolicy{MaxAttempts: 3, BackoffMS: 300}
	if code := createJob(t, hs, JobSpec{ID: "r1", Task: "t", Nodes: []string{"a", "b"}, Source: "jsonl:" + src, Retry: retry}); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	if code := createJob(t, hs, JobSpec{Task: "t", Nodes: []string{"a"}, Source: "jsonl:" + src, Retry: &RetryPolicy{MaxAttempts: 0}}); code != http.StatusBadRequest {
		t.Fatalf("max_attempts 0: %d", code)
	}
	// Restart once the first retries are out.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if j, _ := cur.st.getJob(t.Context(), "r1"); j.Retried > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no retry")
		}
	}
	hs.Close()
	_ = cur.Close()
	cur = e.open(opts)
	mu.Lock()
	hs = httptest.NewServer(cur.Handler())
	mu.Unlock()
	defer func() { hs.Close(); _ = cur.Close() }()
	j, _ := waitJob(t, hs, "r1")
	want := func(j Job) {
		t.Helper()
		if j.State != "done" || j.Items != 60 || j.Done != 60 || j.Failed != 30 || j.GaveUp != 15 || j.Retried != 45 {
			t.Fatalf("job %+v: want 60 done, 30 failed, 15 given up, 45 retried", j)
		}
	}
	want(j)
	if n := runs.Load(); n != 105 {
		t.Fatalf("%d runs, want 60 + 45 retries", n)
	}
	got, _ := cur.Get(attemptID(itemCallID(&JobSpec{Task: "t"}, item{key: "1", data: []byte(`{"i":0}`)}), 3))
	if got.State != "done" || got.Result.Status != "timeout" {
		t.Fatalf("third attempt of item 0: %+v", got)
	}
	if code := createJob(t, hs, JobSpec{ID: "r2", Task: "t", Nodes: []string{"a", "b"}, Source: "jsonl:" + src, Retry: retry}); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	j, _ = waitJob(t, hs, "r2")
	want(j)
	if j.Cached != 60 || runs.Load() != 105 {
		t.Fatalf("second job %+v after %d runs", j, runs.Load())
	}
}

// A job's labels (JobSpec.Labels, job create --label) go with every call
// it enqueues, each item's first attempt and its retries, are handed to the
// node with them, and GET /api/v1/calls?label= selects them. A job with a
// bad label, and a listing with one, are refused naming it.
func TestJobLabels(t *testing.T) { forEngines(t, testJobLabels) }

func testJobLabels(t *testing.T, e *engine) {
	src := t.TempDir() + "/items.jsonl"
	writeLines(t, src, 20)
	s, hs := e.serve(Options{})
	labels := map[string]string{"tier": "batch", "site": "north"}
	var mu sync.Mutex
	delivered := map[string]map[string]string{} // call id → labels
	n := &fleetNode{id: "a", urls: func() []string { return []string{hs.URL} }, hc: &http.Client{Timeout: 10 * time.Second}, capacity: 8, waitMS: 300,
		status: func(c remote.WireCall) string { // even items time out on their first attempt
			var in struct{ I int }
			_ = json.Unmarshal(c.Input, &in)
			if in.I%2 == 0 && !strings.HasSuffix(c.ID, ".2") {
				return "timeout"
			}
			return "ok"
		},
		delivered: func(c remote.WireCall) { mu.Lock(); delivered[c.ID] = c.Labels; mu.Unlock() }}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { n.run(ctx) })
	defer func() { stop(); wg.Wait() }()
	if _, err := s.Enqueue([]Call{{ID: "plain", Node: "a", Task: "t"}}); err != nil {
		t.Fatal(err)
	}
	var refused struct{ Error string }
	b, _ := json.Marshal(JobSpec{Task: "t", Nodes: []string{"a"}, Source: "jsonl:" + src, Labels: map[string]string{"bad key": "x"}})
	resp, err := http.Post(hs.URL+"/api/v1/jobs", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&refused)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(refused.Error, `labels: key "bad key": want 1 to 63 letters`) {
		t.Fatalf("a job with a bad label: %s %q", resp.Status, refused.Error)
	}
	spec := JobSpec{ID: "l1", Task: "t", Nodes: []string{"a"}, Source: "jsonl:" + src, Labels: labels, Retry: &RetryPolicy{MaxAttempts: 2, BackoffMS: 50}}
	if code := createJob(t, hs, spec); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	if j, _ := waitJob(t, hs, "l1"); j.State != "done" || j.Done != 20 || j.Failed != 0 || j.Retried != 10 || !maps.Equal(j.Labels, labels) {
		t.Fatalf("job %+v: want 20 done, 10 retried, with labels %v", j, labels)
	}
	mu.Lock()
	if len(delivered) != 31 { // 20 items, 10 retries, plain
		t.Errorf("%d calls delivered, want 31", len(delivered))
	}
	for id, got := range delivered {
		if want := labels; id == "plain" && len(got) != 0 || id != "plain" && !maps.Equal(got, want) {
			t.Errorf("call %s delivered with labels %v", id, got)
		}
	}
	mu.Unlock()
	var list struct{ Calls []Call }
	getJSON(t, hs.URL+"/api/v1/calls?label=tier%3Dbatch&label=site%3Dnorth", http.StatusOK, &list)
	retries := 0
	for _, c := range list.Calls {
		if strings.HasSuffix(c.ID, ".2") {
			retries++
		}
	}
	if len(list.Calls) != 30 || retries != 10 {
		t.Fatalf("calls with tier=batch and site=north: %d (%d retries), want 30 (10)", len(list.Calls), retries)
	}
	list.Calls = nil
	getJSON(t, hs.URL+"/api/v1/calls?label=tier%3Dother", http.StatusOK, &list)
	if len(list.Calls) != 0 {
		t.Fatalf("calls with tier=other: %d, want none", len(list.Calls))
	}
	list.Calls = nil
	getJSON(t, hs.URL+"/api/v1/calls?node=a", http.StatusOK, &list)
	if len(list.Calls) != 31 {
		t.Fatalf("calls of a without a label filter: %d, want 31", len(list.Calls))
	}
	getJSON(t, hs.URL+"/api/v1/calls?label=tier", http.StatusBadRequest, nil)
}
