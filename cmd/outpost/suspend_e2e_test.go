package main

import (
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// journal lists the daemon's journaled calls with `outpost calls ls`.
func (d *daemon) journal() []calls.Record {
	d.t.Helper()
	out, err := exec.Command(binPath, "calls", "ls", "-o", "json", "--config", d.cfg).Output()
	if err != nil {
		d.t.Fatalf("calls ls: %v", err)
	}
	var recs []calls.Record
	if err := json.Unmarshal(out, &recs); err != nil {
		d.t.Fatalf("calls ls -o json: %v\n%s", err, out)
	}
	return recs
}

// The example workflow (examples/tasks/c/workflow), started by a QoS 1
// message on a journaled route, fans out to 100 calls of square in two
// steps and suspends between them. The daemon is killed with SIGKILL while
// the workflow is suspended, then three more times at random moments; each
// restart resumes it from its snapshot (with fresh_instance, every step
// runs on a new instance: nothing of the instance that suspended is left),
// and its one result is the sum of the squares.
func TestWorkflowSurvivesKill(t *testing.T) {
	skipShort(t, "four kills of a workflow")
	mod, err := filepath.Abs("../../examples/tasks/build/c-workflow.wasm")
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, `
node: {id: edge-w}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - {name: workflow, module: `+mod+`, fresh_instance: true, permissions: {call: [square]}}
  - {name: square, module: `+mod+`, limits: {concurrency: 2}}
routes: [{topic: "wf/in", task: workflow, reply: "wf/out", qos: 1}]
`)
	// 100 squares of 15 ms each, two at a time: about 0.4 s per step.
	mqtttest.Pub(t, d.mqtt, "wf/in", "100 0 15", 1)
	workflow := func() *calls.Record {
		for _, r := range d.journal() {
			if r.Task == "workflow" {
				return &r
			}
		}
		return nil
	}
	waitUntil(t, 20*time.Second, "the workflow suspended", func() bool {
		r := workflow()
		return r != nil && r.State == calls.Suspended
	})
	r := workflow()
	if len(r.Waits) != 50 || r.Snapshot == "" {
		t.Fatalf("suspended workflow waits for %d calls, snapshot %q", len(r.Waits), r.Snapshot)
	}
	table, err := exec.Command(binPath, "calls", "ls", "--config", d.cfg).Output()
	if err != nil || !regexp.MustCompile(`suspended .* \d+ of 50 calls \(square\) since \d{4}-`).Match(table) {
		t.Errorf("calls ls does not show what the workflow waits on (%v):\n%s", err, table)
	}
	d.kill9()
	for i := range 3 {
		d.start()
		if i < 2 {
			time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond)
			d.kill9()
		}
	}
	waitUntil(t, 60*time.Second, "the workflow reported", func() bool {
		r := workflow()
		return r != nil && r.State == calls.Reported
	})
	r = workflow()
	if r.Result == nil || !r.Result.OK() || string(r.Result.Output) != "sum=338350 steps=2" {
		t.Fatalf("workflow result %+v", r.Result)
	}
	deps, finished := 0, 0
	for _, rec := range d.journal() {
		if rec.Parent != r.ID {
			continue
		}
		deps++
		if rec.State == calls.Reported {
			finished++
		}
	}
	if finished != deps || deps < 100 {
		t.Errorf("%d dependencies, %d reported; want at least 100, all reported", deps, finished)
	}
	t.Logf("workflow: %d runs, attempt %d; %d dependency calls (100 needed; re-runs after kills make the rest)", r.Runs, r.Attempt, deps)
}

// An asynchronous call's --timeout is the deadline of the whole call: the
// example workflow, suspended on squares that take longer, ends timed out
// at it without resuming, and the squares it waited for are canceled.
func TestSuspendedWorkflowTimeout(t *testing.T) {
	mod, err := filepath.Abs("../../examples/tasks/build/c-workflow.wasm")
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - {name: workflow, module: `+mod+`, permissions: {call: [square]}}
  - {name: square, module: `+mod+`, limits: {concurrency: 1}}
`)
	// 50 squares of 200 ms, one at a time: 10 s for the first step.
	id, code := runCLI(t, "call", "workflow", "--async", "--timeout", "1s", "--config", d.cfg, "--data", "100 0 200")
	id = strings.TrimSpace(id)
	if code != 0 {
		t.Fatalf("call --async --timeout: exit %d %s", code, id)
	}
	show, code := runCLI(t, "calls", "show", id, "--wait", "--timeout", "20s", "--config", d.cfg)
	if code == 0 || !strings.Contains(show, "timeout") || !strings.Contains(show, "deadline passed while suspended") {
		t.Fatalf("calls show: exit %d\n%s", code, show)
	}
	waitUntil(t, 20*time.Second, "every square finished", func() bool {
		for _, r := range d.journal() {
			if r.Parent == id && r.State < calls.Finished {
				return false
			}
		}
		return true
	})
	ok, canceled := 0, 0
	for _, r := range d.journal() {
		if r.Parent != id {
			continue
		}
		switch r.Result.Status {
		case calls.StatusOK:
			ok++
		case calls.StatusCanceled:
			canceled++
		}
	}
	if ok+canceled != 50 || canceled < 40 {
		t.Errorf("squares: %d ok, %d canceled; want 50, most of them canceled", ok, canceled)
	}
}
