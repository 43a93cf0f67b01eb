package main

// End-to-end tests of the calls that are durable besides the cloud's: MQTT
// QoS 1 routes and asynchronous admin calls, and a kill -9 cloud test that
// counts executions with a real side effect (the kvcount task's kv counter).

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// A burst of QoS 1 messages on a qos: 1 route, the daemon killed with
// SIGKILL in the middle of it, and restarted. The broker (an external
// Mosquitto, which outlives the daemon) acknowledged every message to the
// device; the daemon acknowledges a message to the broker only once its
// call is journaled, and keeps a persistent session, so every message is
// either journaled (and run, or run again, after the restart) or still
// held by the broker (and delivered after the restart). Every message gets
// a reply; duplicates are allowed (at least once) and counted.
func TestMQTTQoS1KillMidBurst(t *testing.T) {
	const n = 400
	mq := mqtttest.StartMosquitto(t)
	d := startDaemon(t, fmt.Sprintf(`
node: {id: edge-q}
admin: {listen: "{{admin}}"}
mqtt: {url: %q}
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out", qos: 1}]
`, mq))
	d.mqtt = mq
	sub := mqtttest.Sub(t, mq, "devices/+/out", 0)
	var (
		mu      sync.Mutex
		replies = map[string]int{}
		total   int
	)
	go func() {
		for l := range sub.Lines() {
			mu.Lock()
			replies[strings.TrimPrefix(l, "devices/d1/out ")]++
			total++
			mu.Unlock()
		}
	}()
	seen := func() (unique, all int) {
		mu.Lock()
		defer mu.Unlock()
		return len(replies), total
	}

	// One mosquitto_pub -q 1 -l: one message per line of its input,
	// written a little at a time so the kill lands mid-burst.
	u, _ := url.Parse(mq)
	pub := exec.Command("mosquitto_pub", "-h", u.Hostname(), "-p", u.Port(), "-V", "mqttv311", "-q", "1", "-t", "devices/d1/in", "-l")
	stdin, err := pub.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var pubOut strings.Builder
	pub.Stdout, pub.Stderr = &pubOut, &pubOut
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	for i := range n {
		if i == n/2 && !killed {
			// A loaded host answers slower than the burst is written: the
			// second half waits until a quarter was answered, so the kill
			// always lands mid-burst.
			for wait := time.Now().Add(20 * time.Second); time.Now().Before(wait); time.Sleep(5 * time.Millisecond) {
				if u, _ := seen(); u >= n/4 {
					break
				}
			}
		}
		if u, _ := seen(); !killed && u >= n/4 {
			d.kill9()
			killed = true
			t.Logf("killed the daemon after %d of %d messages were sent, %d replies seen", i, n, u)
		}
		if _, err := fmt.Fprintf(stdin, "m-%04d\n", i); err != nil {
			t.Fatalf("write to mosquitto_pub: %v\n%s", err, pubOut.String())
		}
		time.Sleep(time.Millisecond)
	}
	_ = stdin.Close()
	if err := pub.Wait(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, pubOut.String())
	}
	if !killed {
		t.Fatalf("the burst ended before the daemon was killed (%d replies)", len(replies))
	}
	d.start()

	deadline := time.Now().Add(20 * time.Second)
	for {
		if u, _ := seen(); u == n {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			var missing []string
			for i := range n {
				if replies[fmt.Sprintf("m-%04d", i)] == 0 {
					missing = append(missing, fmt.Sprintf("m-%04d", i))
				}
			}
			mu.Unlock()
			t.Fatalf("no reply for %d of %d acknowledged messages: %v\n%s", len(missing), n, missing, d.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The journal: every call of the route is there, and every one has
	// been answered (reported). Redelivered messages are new calls.
	recs := d.mqttCallsReported(10 * time.Second)
	inputs := map[string]bool{}
	reruns := 0
	for _, r := range recs {
		if r.Source.Kind != "mqtt" || r.ReplyTo != "devices/d1/out" || r.Effect != calls.Idempotent {
			t.Errorf("journal record %+v", r)
		}
		if r.Result != nil {
			inputs[string(r.Result.Output)] = true
		}
		if r.Attempt > 1 {
			reruns++
		}
	}
	_, all := seen()
	t.Logf("%d messages, %d replies (%d duplicates), %d journal records, %d run again after the restart", n, all, all-n, len(recs), reruns)
	// Some calls were journaled before the kill and answered from the
	// journal after it (their input is in a record made before the kill).
	if len(recs) < n/4 {
		t.Errorf("only %d MQTT calls in the journal", len(recs))
	}
}

func waitUntil(t testing.TB, timeout time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// outpost call --async prints the id once the call is journaled; outpost
// calls show --wait waits for the result (progress on stderr). A kill -9
// while an async call runs: it is at most once, so it ends interrupted,
// and the kv counter says it ran exactly once.
func TestAsyncAdminCall(t *testing.T) {
	d := startDaemon(t, fmt.Sprintf(`
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - {name: echo, module: builtin:echo}
  - {name: count, module: %s, limits: {timeout: 30s}, permissions: {kv_quota: 4KiB}}
`, wasm(t, "kvcount")))
	out, code := runCLI(t, "call", "echo", "--data", "hello async", "--async", "--config", d.cfg)
	id := strings.TrimSpace(out)
	if code != 0 || len(id) != 20 {
		t.Fatalf("call --async: exit %d, %q", code, out)
	}
	cmd := exec.Command(binPath, "calls", "show", id, "--wait", "--timeout", "10s", "--config", d.cfg, "-o", "json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	var rec calls.Record
	if err != nil || json.Unmarshal(stdout, &rec) != nil || rec.Result == nil || string(rec.Result.Output) != "hello async" || rec.Source.Kind != "admin" {
		t.Fatalf("calls show --wait: %v %s\nstderr: %s", err, stdout, stderr.String())
	}
	// Unknown task: refused before anything is journaled.
	if out, code := runCLI(t, "call", "nope", "--async", "--config", d.cfg); code != 1 || !strings.Contains(out, "unknown_task") {
		t.Fatalf("call --async of an unknown task: exit %d %q", code, out)
	}

	// A 3 s call, killed while it runs.
	out, code = runCLI(t, "call", "count", "--data", "6 amo", "--async", "--config", d.cfg)
	id = strings.TrimSpace(out)
	if code != 0 {
		t.Fatalf("call --async: exit %d, %q", code, out)
	}
	d.waitState(id, calls.Started, 10*time.Second)
	waitCount(t, d, "amo", "1") // it runs (STARTED is written just before)
	d.kill9()
	d.start()
	cmd = exec.Command(binPath, "calls", "show", id, "--wait", "--timeout", "10s", "--config", d.cfg, "-o", "json")
	stdout, err = cmd.Output()
	rec = calls.Record{}
	if json.Unmarshal(stdout, &rec) != nil || rec.Result == nil || rec.Result.Status != calls.StatusInterrupted {
		t.Fatalf("calls show --wait of the interrupted call: %v %s", err, stdout)
	}
	if err == nil {
		t.Error("calls show --wait of an interrupted call: exit 0, want 1")
	}
	if got, err := d.call("count", "?amo"); err != nil || got != "1" {
		t.Errorf("kv counter of the interrupted call: %q %v, want 1 execution", got, err)
	}
}

// TestCloudKillCountedByTask is TestCloudKillWhileRunning with executions
// counted by the task itself in kv (a real side effect that survives the
// kill), not by the journal's Runs: the idempotent call ran twice (once
// cut by the kill, once to the end), the at-most-once call once.
func TestCloudKillCountedByTask(t *testing.T) {
	c := startCloudProc(t)
	d := startDaemon(t, fmt.Sprintf(`
node: {id: edge-1}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - {name: count, module: %s, limits: {timeout: 30s, concurrency: 4}, permissions: {kv_quota: 4KiB}} # the counts are read while both calls run
cloud:
  url: %q
  poll_wait: 500ms
  backoff_base: 50ms
  backoff_max: 500ms
`, wasm(t, "kvcount"), c.proxy))
	c.enqueue(
		server.Call{ID: "idem", Node: "edge-1", Task: "count", Input: []byte("6 idem"), Effect: "idempotent"},
		server.Call{ID: "amo", Node: "edge-1", Task: "count", Input: []byte("6 amo"), Effect: "at_most_once"},
	)
	waitCount(t, d, "idem", "1")
	waitCount(t, d, "amo", "1")
	d.kill9()
	d.start()
	if r := c.waitDone("idem", 20*time.Second).Result; r.Status != "ok" || string(r.Output) != "6 idem" {
		t.Errorf("idempotent call: %+v", r)
	}
	if r := c.waitDone("amo", 20*time.Second).Result; r.Status != "interrupted" {
		t.Errorf("at-most-once call: %+v", r)
	}
	for key, want := range map[string]string{"idem": "2", "amo": "1"} {
		if got, err := d.call("count", "?"+key); err != nil || got != want {
			t.Errorf("executions of %s counted by the task: %q %v, want %s", key, got, err, want)
		}
	}
	if code := d.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// waitCount waits until the kvcount task has counted want executions of key.
func waitCount(t *testing.T, d *daemon, key, want string) {
	t.Helper()
	var got string
	waitUntil(t, 10*time.Second, "kv counter of "+key+" at "+want, func() bool {
		got, _ = d.call("count", "?"+key)
		return got == want
	})
}

// mqttCallsReported waits until every MQTT call in the daemon's journal is
// reported (answered) and returns the journal, read through `outpost calls
// ls --json`.
func (d *daemon) mqttCallsReported(timeout time.Duration) []calls.Record {
	t := d.t
	t.Helper()
	var recs []calls.Record
	waitUntil(t, timeout, "every MQTT call reported", func() bool {
		out, err := exec.Command(binPath, "calls", "ls", "--json", "--config", d.cfg).Output()
		if err != nil {
			t.Fatalf("calls ls: %v", err)
		}
		recs = nil
		if err := json.Unmarshal(out, &recs); err != nil {
			t.Fatalf("calls ls --json: %v\n%s", err, out)
		}
		for _, r := range recs {
			if r.Source.Kind == "mqtt" && r.State != calls.Reported {
				return false
			}
		}
		return true
	})
	return recs
}
