package main

// The cloud execution environment end to end: the real outpost daemon
// places calls on the real outpost-cloud's worker pool by its rules.

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// cloudEnvDaemon runs the daemon against c with tasks whose rules use the
// cloud environment: upper (large inputs to the cloud), upper-here (the
// same module, no rules), spin and publish (always in the cloud),
// publish-here (the same module, local), and upper-if-held and
// echo-if-held (in the cloud once it holds their module).
func cloudEnvDaemon(t *testing.T, c *cloudProc) *daemon {
	t.Helper()
	upper := wasmtest.WAT(t, "../../examples/tasks/wat/upper.wat", "")
	publish := wasmtest.WAT(t, "testdata/publish.wat", "")
	return startDaemon(t, fmt.Sprintf(`
node: {id: edge-1}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - name: upper
    module: %[1]s
    placement: [{name: large-to-cloud, when: "call.input_size > 100 && envs['cloud'].healthy", run: [cloud, local]}]
  - {name: upper-here, module: %[1]s}
  - name: spin
    module: %[2]s
    limits: {timeout: 30s}
    placement: [{name: spin-in-cloud, run: [cloud]}]
  - name: publish
    module: %[3]s
    permissions: {publish: ["out/#"]}
    placement: [{name: publish-in-cloud, run: [cloud]}]
  - {name: publish-here, module: %[3]s, permissions: {publish: ["out/#"]}}
  - name: upper-if-held
    module: %[1]s
    placement: [{name: cloud-holds-it, when: "envs.cloud.healthy && envs.cloud.provision_seconds == 0.0", run: [cloud]}]
  - name: echo-if-held
    module: builtin:echo
    placement: [{name: cloud-holds-it, when: "envs.cloud.healthy && envs.cloud.provision_seconds == 0.0", run: [cloud]}]
cloud:
  url: %[4]q
  poll_wait: 500ms
  backoff_base: 50ms
  backoff_max: 500ms
`, upper, spinWasm(t), publish, c.proxy))
}

// waitCloudHealthy waits until the daemon has polled the control plane, so
// its rules see envs.cloud healthy.
func waitCloudHealthy(t *testing.T, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, code := callJSON(t, d, "upper", strings.Repeat("a", 200))
		if code == 0 && m["env"] == "cloud" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cloud environment never ran a call: %v\n%s", m, d.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A rule sends large inputs to the cloud: the call records env cloud and
// its output is the local run's of the same module; small inputs stay
// local. A rule on envs.cloud.provision_seconds sends a call there only
// once the control plane holds its module. A host function only an edge
// host has answers unavailable there.
func TestCloudEnvironment(t *testing.T) {
	c := startCloudProcArgs(t, "--data", filepath.Join(t.TempDir(), "cloud"), "--run-workers", "2")
	d := cloudEnvDaemon(t, c)
	waitCloudHealthy(t, d)

	large := strings.Repeat("hello, wörld ", 40)
	inCloud, code := callJSON(t, d, "upper", large)
	here, code2 := callJSON(t, d, "upper-here", large)
	if code != 0 || code2 != 0 || inCloud["env"] != "cloud" || inCloud["rule"] != "large-to-cloud" || here["env"] != "local" {
		t.Fatalf("upper: exit %d %v; upper-here: exit %d %v", code, inCloud, code2, here)
	}
	if inCloud["output"] != here["output"] || inCloud["output"] != base64.StdEncoding.EncodeToString([]byte(strings.Repeat("HELLO, WöRLD ", 40))) {
		t.Errorf("cloud output %v, local output %v", inCloud["output"], here["output"])
	}
	if small, code := callJSON(t, d, "upper", "small"); code != 0 || small["env"] != "local" || small["rule"] != "default" {
		t.Errorf("small input: exit %d %v, want local by default", code, small)
	}
	// A rule on the expected provisioning time: the control plane ran
	// upper's module, so a task of the same module goes there; it never
	// had the echo module, which it would take time to upload.
	for _, tc := range []struct{ task, env, rule string }{
		{"upper-if-held", "cloud", "cloud-holds-it"},
		{"echo-if-held", "local", "default"},
	} {
		if m, code := callJSON(t, d, tc.task, "x"); code != 0 || m["env"] != tc.env || m["rule"] != tc.rule {
			t.Errorf("%s: exit %d %v, want %s by %s", tc.task, code, m, tc.env, tc.rule)
		}
	}
	// The module reached the control plane from the node, content-addressed.
	var objs struct{ Objects []server.ObjectInfo }
	c.api("GET", "/api/v1/objects", nil, &objs)
	if len(objs.Objects) != 1 {
		t.Errorf("objects on the control plane: %+v, want the module uploaded once", objs.Objects)
	}

	// publish: 0 here (the embedded broker), unavailable (-7) in the cloud.
	for _, tc := range []struct {
		task, env string
		code      int32
		msg       string
	}{
		{"publish-here", "local", 0, ""},
		{"publish", "cloud", -7, "no host services"},
	} {
		m, exit := callJSON(t, d, tc.task, "payload")
		out, _ := base64.StdEncoding.DecodeString(fmt.Sprint(m["output"]))
		if exit != 0 || m["env"] != tc.env || len(out) < 4 || int32(binary.LittleEndian.Uint32(out)) != tc.code || !strings.Contains(string(out[4:]), tc.msg) {
			t.Errorf("%s: exit %d %v (output %q); want code %d in %s", tc.task, exit, m, out, tc.code, tc.env)
		}
	}
}

// outpost-cloud killed with -9 while it runs two calls for a node: after
// its restart the idempotent one runs again and ends ok, the at-most-once
// one ends interrupted; each is reported once, neither is lost, and the
// node ran neither itself.
func TestCloudEnvironmentKill9(t *testing.T) {
	skipShort(t, "two kills of outpost-cloud")
	dir := filepath.Join(t.TempDir(), "cloud")
	c := startCloudProcArgs(t, "--data", dir, "--run-workers", "2")
	d := cloudEnvDaemon(t, c)
	waitCloudHealthy(t, d)

	c.enqueue(server.Call{ID: "idem", Node: "edge-1", Task: "spin", Input: []byte("9 idempotent"), Effect: "idempotent"},
		server.Call{ID: "once", Node: "edge-1", Task: "spin", Input: []byte("9 at most once"), Effect: "at_most_once"})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if len(unfinishedRuns(dir)) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cloud never started both runs\n%s\n%s", d.logs.String(), c.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
	if n := len(unfinishedRuns(dir)); n != 2 {
		t.Fatalf("%d runs unfinished at the kill, want both", n)
	}
	u, _ := url.Parse(c.url)
	c2 := startCloudProcArgs(t, "--data", dir, "--run-workers", "2", "--listen", u.Host)

	want := map[string]struct{ status, output string }{
		"idem": {"ok", "9 idempotent"},
		"once": {"interrupted", ""},
	}
	for id, w := range want {
		got := c2.waitDone(id, 60*time.Second)
		if got.Result == nil || got.Result.Status != w.status || string(got.Result.Output) != w.output || got.Result.Env != "cloud" || got.Conflicts != 0 {
			t.Errorf("call %s: %+v result %+v; want %s %q in the cloud", id, got, got.Result, w.status, w.output)
		}
		rec := d.waitState(id, calls.Reported, 30*time.Second)
		if rec.Runs != 1 || rec.Result == nil || string(rec.Result.Status) != w.status || rec.Result.Env != "cloud" || rec.Result.Rule != "spin-in-cloud" {
			t.Errorf("node journal of %s: runs %d result %+v, want one run ending %s in the cloud", id, rec.Runs, rec.Result, w.status)
		}
	}
	if !strings.Contains(c2.logs.String(), "cloud run interrupted by a restart: running it again (idempotent)") ||
		!strings.Contains(c2.logs.String(), "cloud run interrupted by a restart: not run again (at most once)") {
		t.Errorf("the restarted control plane did not say how it answered the interrupted runs:\n%s", c2.logs.String())
	}
	if n := len(unfinishedRuns(dir)); n != 0 {
		t.Errorf("%d runs left unfinished", n)
	}
}

// unfinishedRuns lists the control plane's runs started and not done.
func unfinishedRuns(dir string) []string {
	started, _ := filepath.Glob(filepath.Join(dir, "runs", "*.started"))
	var out []string
	for _, s := range started {
		if _, err := os.Stat(strings.TrimSuffix(s, ".started") + ".done"); err != nil {
			out = append(out, s)
		}
	}
	return out
}
