package main

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// A monotonic pause longer than the lease: the real daemon is stopped
// (SIGSTOP) while two calls run, one idempotent and one at-most-once, for
// longer than outpost-cloud's 4 s lease, then continued. The daemon's
// first poll after the pause renews leases that already ran out: the
// server refuses to revive them, tells the node they are lost and delivers
// the calls again as attempt 2. The node still runs them and only
// acknowledges the redelivery (its journal has the ids, not finished):
// each call runs once whatever its effect (a pause is not a crash, so
// neither is re-run nor interrupted), nothing runs twice at once, and the
// server records one result per call.
func TestCloudPauseLongerThanLease(t *testing.T) {
	skipShort(t, "a 7 s pause past the lease")
	const pause = 7 * time.Second // the lease is 4 s (startCloudProc)
	c := startCloudProc(t)
	d := cloudDaemon(t, c)
	// spin.wat spins on the WASI monotonic clock for 500 ms per unit of its
	// first byte minus '0': 'F' is 22 units, 11 s; the pause counts, so the
	// calls are still running when the daemon continues.
	c.enqueue(
		server.Call{ID: "pause-idem", Node: "edge-1", Task: "spin", Input: []byte("F pause-idem"), Effect: "idempotent"},
		server.Call{ID: "pause-amo", Node: "edge-1", Task: "spin", Input: []byte("F pause-amo"), Effect: "at_most_once"},
	)
	d.waitState("pause-idem", calls.Started, 10*time.Second)
	d.waitState("pause-amo", calls.Started, 10*time.Second)

	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	time.Sleep(pause) // the pause itself, not an assertion
	if err := d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("daemon stopped for %v", time.Since(stopped))

	for _, id := range []string{"pause-idem", "pause-amo"} {
		got := c.waitDone(id, 30*time.Second)
		if got.Result == nil || got.Result.Status != "ok" || string(got.Result.Output) != "F "+id || got.Conflicts != 0 {
			t.Errorf("%s: server record %+v, result %+v", id, got, got.Result)
		}
		// The lease ran out during the pause: the server delivered the call
		// again, as attempt 2.
		if got.Deliveries != 2 || got.Attempt != 2 {
			t.Errorf("%s: %d deliveries, attempt %d; want 2 and 2 (redelivered after the lease expired)", id, got.Deliveries, got.Attempt)
		}
		r := d.waitState(id, calls.Reported, 10*time.Second)
		// Runs counts STARTED writes, an upper bound on executions: one
		// means the redelivery was not run, neither at once nor later.
		if r.Runs != 1 || r.Attempt != 1 || r.Result == nil || r.Result.Status != calls.StatusOK {
			t.Errorf("%s: journal runs %d attempt %d result %+v; want one run of attempt 1, ok", id, r.Runs, r.Attempt, r.Result)
		}
	}
	if !strings.Contains(c.logs.String(), "lease expired: redelivering") {
		t.Errorf("outpost-cloud did not log the expired leases:\n%s", c.logs.String())
	}
	if n := strings.Count(d.logs.String(), "cloud lease lost"); n != 2 {
		t.Errorf("the daemon logged %d lost leases, want 2", n)
	}
	// Both redeliveries reached the node and were recognised as running.
	if n := d.metric(`outpost_journal_duplicates_total{action="running",match="id"}`); n != 2 {
		t.Errorf("duplicates of running calls: %v, want 2", n)
	}
}

// metric reads one sample from the daemon's /metrics (0 when absent).
func (d *daemon) metric(series string) float64 {
	d.t.Helper()
	resp, err := http.Get("http://" + d.addr + "/metrics")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		d.t.Fatalf("metric %s: %v", series, err)
	}
	return v
}
