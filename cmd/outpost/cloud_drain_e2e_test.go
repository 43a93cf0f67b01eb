package main

import (
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// SIGTERM while cloud calls still run, and scheduler.drain_timeout passes:
// the calls cut by the daemon's own shutdown are treated like a crash, not
// a cancellation. Nothing is uploaded for them at the stop; the journal
// keeps them STARTED (or RECEIVED, for one still queued); the next start
// runs the idempotent one again (attempt 2, same idempotency key), reports
// the at-most-once one interrupted, and runs the queued one. The server
// records exactly one result for each.
func TestCloudDrainDeadlineCut(t *testing.T) {
	c := startCloudProc(t)
	// Two workers: "idem" and "amo" run (4.5 s each, past the 1 s drain
	// deadline), "queued" waits behind them. The log lines and attempts
	// below show the cut; a wall-clock bound would only measure the host.
	d := cloudDaemon(t, c, "scheduler: {workers: 2, drain_timeout: 1s}\n")
	c.enqueue(
		server.Call{ID: "idem", Node: "edge-1", Task: "spin", Input: []byte("9 idem"), Effect: "idempotent", Key: "key-idem"},
		server.Call{ID: "amo", Node: "edge-1", Task: "spin", Input: []byte("9 amo"), Effect: "at_most_once"},
	)
	d.waitState("idem", calls.Started, 10*time.Second)
	d.waitState("amo", calls.Started, 10*time.Second)
	c.enqueue(server.Call{ID: "queued", Node: "edge-1", Task: "spin", Input: []byte("1 queued"), Effect: "at_most_once"})
	if r := d.waitState("queued", calls.Received, 10*time.Second); r.State != calls.Received {
		t.Fatalf("queued call %s, want it received and waiting for a worker", r.State)
	}

	if code := d.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after a drain cut short", code)
	}
	logs := d.logs.String()
	if !strings.Contains(logs, "drain incomplete") {
		t.Errorf("no drain incomplete in the log:\n%s", logs)
	}
	for _, id := range []string{"idem", "amo", "queued"} {
		if !regexp.MustCompile(`msg="call cut by the drain deadline: left in the journal for the next start" .*call=` + id + ` `).MatchString(logs) {
			t.Errorf("no log line for %s cut by the drain deadline", id)
		}
		// Nothing uploaded at the stop: the server still holds the lease.
		if got := c.get(id); got.Result != nil || got.State != "leased" {
			t.Errorf("%s on the server after the stop: state %s, result %+v (want leased, none)", id, got.State, got.Result)
		}
	}
	if strings.Contains(logs, "canceled: shutdown deadline") {
		t.Errorf("a cut call was finished as canceled:\n%s", logs)
	}

	d.start()
	idem := c.waitDone("idem", 30*time.Second)
	amo := c.waitDone("amo", 30*time.Second)
	queued := c.waitDone("queued", 30*time.Second)
	if idem.Result.Status != "ok" || string(idem.Result.Output) != "9 idem" || idem.Result.Attempt != 2 {
		t.Errorf("idempotent call: %+v (want ok from attempt 2)", idem.Result)
	}
	if amo.Result.Status != "interrupted" || amo.Result.Attempt != 1 {
		t.Errorf("at-most-once call: %+v (want interrupted, attempt 1)", amo.Result)
	}
	if queued.Result.Status != "ok" || string(queued.Result.Output) != "1 queued" {
		t.Errorf("queued call: %+v", queued.Result)
	}
	for _, got := range []server.Call{idem, amo, queued} {
		if got.Replays != 0 || got.Conflicts != 0 {
			t.Errorf("%s: %d replays, %d conflicts: want exactly one recorded result", got.ID, got.Replays, got.Conflicts)
		}
	}
	ri := d.waitState("idem", calls.Reported, 10*time.Second)
	if ri.Runs != 2 || ri.Attempt != 2 || ri.Key != "key-idem" {
		t.Errorf("idempotent: runs %d attempt %d key %q, want 2, 2, key-idem (cut once, run again)", ri.Runs, ri.Attempt, ri.Key)
	}
	if ra := d.waitState("amo", calls.Reported, 10*time.Second); ra.Runs != 1 {
		t.Errorf("at-most-once ran %d times", ra.Runs)
	}
	if rq := d.waitState("queued", calls.Reported, 10*time.Second); rq.Runs != 1 || rq.Attempt != 1 {
		t.Errorf("queued: runs %d attempt %d, want 1 and 1", rq.Runs, rq.Attempt)
	}
}
