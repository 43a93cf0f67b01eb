package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
)

// buildProbe builds the sandbox tests' native task (it echoes "echo:INPUT",
// or dials, reads, allocates or sleeps as its input says) as a static
// executable.
func buildProbe(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command("go", "build", "-o", exe, "../../runtime/sandbox/testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
	return exe
}

const placementConfig = `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
placement:
  rules:
    - name: devices-stay
      when: task.devices
      run: [local]
    - name: large-input
      when: call.input_size > 1024
      run: [process, local]
`

// deployProbe deploys task name: the wasm echo module and the probe
// executable for this host, with timeout and extra manifest lines.
func deployProbe(t *testing.T, d *daemon, name, probe, timeout, extra string) string {
	t.Helper()
	dir := t.TempDir()
	man := filepath.Join(dir, "manifest.yaml")
	body := "limits: {memory: 64MiB, timeout: " + timeout + "}\nabi: reactor\nartifacts:\n  - {env: process, os: linux, arch: " + goruntime.GOARCH + ", executable: " + probe + "}\n" + extra
	if err := os.WriteFile(man, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "task", "deploy", name, wasm(t, "dualecho"), "--manifest", man, "--config", d.cfg)
	if code != 0 {
		t.Fatalf("deploy %s: exit %d\n%s", name, code, out)
	}
	return out
}

// callJSON calls task through the CLI with -o json and returns its answer.
func callJSON(t *testing.T, d *daemon, task, input string) (map[string]any, int) {
	t.Helper()
	cmd := exec.Command(binPath, "call", task, "--config", d.cfg, "-o", "json")
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("call %s: %v: %s", task, err, out)
	}
	return m, code
}

// The same task runs in the environment the rules choose: small inputs in
// the wasm runtime, large ones as its native executable in the sandbox, a
// task with device permissions stays local; the sandbox refuses what it
// forbids; each call records where it ran and which rule chose it.
func TestPlacementEnvironments(t *testing.T) {
	probe := buildProbe(t)
	d := startDaemon(t, placementConfig)
	out := deployProbe(t, d, "probe", probe, "3s", "")
	deployProbe(t, d, "devprobe", probe, "3s", "permissions: {publish: [\"dev/+\"]}\n")
	deployProbe(t, d, "native", probe, "3s", "placement:\n  - {name: always-native, run: [process]}\n")
	if !regexp.MustCompile(`(?m)^  process\s+linux/`+goruntime.GOARCH+`\s+[0-9a-f]{12}\s+\S+ \S+\s+\S+/blobs/sha256/[0-9a-f]{64}\.wasm$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^  local\s+wasm\s+[0-9a-f]{12}`).MatchString(out) {
		t.Errorf("deploy does not list both artifacts:\n%s", out)
	}
	large := strings.Repeat("x", 2000)
	for _, tc := range []struct {
		task, input, env, rule, output string
	}{
		{"probe", "small", "local", "default", "small"},
		{"probe", large, "process", "large-input", "echo:" + large},
		{"devprobe", large, "local", "devices-stay", large},
		{"native", "small", "process", "always-native", "echo:small"},
	} {
		m, code := callJSON(t, d, tc.task, tc.input)
		if code != 0 || m["env"] != tc.env || m["rule"] != tc.rule {
			t.Errorf("call %s with %d bytes: exit %d, env %v rule %v; want %s by %s", tc.task, len(tc.input), code, m["env"], m["rule"], tc.env, tc.rule)
		}
	}
	// What the sandbox forbids: the network (the daemon's own admin API
	// on loopback), files outside its dir (the daemon's token), more
	// memory than limits.memory.
	token := filepath.Join(filepath.Dir(d.cfg), "data", "admin.token")
	for _, tc := range []struct{ input, code, msg string }{
		{"dial " + d.addr, "failed", "connection refused"},
		{"read " + token, "failed", "no such file or directory"},
		{"alloc", "memory", "over its memory limit"},
	} {
		m, code := callJSON(t, d, "native", tc.input)
		e, _ := m["error"].(map[string]any)
		if code != 1 || e["code"] != tc.code || !strings.Contains(e["message"].(string), tc.msg) {
			t.Errorf("native %q: exit %d %v; want %s saying %q", tc.input, code, m, tc.code, tc.msg)
		}
	}
	// A journaled call records its environment and rule.
	id, code := runCLI(t, "call", "native", "--async", "--config", d.cfg, "--data", "journaled")
	if code != 0 {
		t.Fatalf("call --async: exit %d %s", code, id)
	}
	show, code := runCLI(t, "calls", "show", strings.TrimSpace(id), "--wait", "--timeout", "20s", "--config", d.cfg)
	if code != 0 || !regexp.MustCompile(`(?m)^ran in: +process \(placement rule always-native\)$`).MatchString(show) || !strings.Contains(show, "echo:journaled") {
		t.Errorf("calls show: exit %d\n%s", code, show)
	}
	inspect, _ := runCLI(t, "task", "inspect", "native", "--config", d.cfg, "-o", "json")
	var det admin.TaskDetail
	if err := json.Unmarshal([]byte(inspect), &det); err != nil || len(det.Artifacts) != 2 || det.Artifacts[1].Env != "process" ||
		len(det.Artifacts[1].Digest) != 64 || len(det.Placement) != 1 {
		t.Errorf("inspect: %v\n%s", err, inspect)
	}
	resp := d.get("/metrics")
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`outpost_placement_calls_total{env="process",rule="large-input"} 1`,
		`outpost_placement_calls_total{env="local",rule="devices-stay"} 1`,
		`outpost_placement_calls_total{env="process",rule="always-native"} 5`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// Without bubblewrap the process environment is down: a rule's fallback
// runs the call locally, a rule without one refuses it and says why.
func TestPlacementFallback(t *testing.T) {
	probe := buildProbe(t)
	d := startDaemon(t, placementConfig+"  process: {bwrap: /nonexistent/bwrap}\n")
	d.waitLog(`process environment unavailable`, 10*time.Second)
	deployProbe(t, d, "probe", probe, "3s", "placement:\n  - {name: only-native, when: \"call.input_size < 10\", run: [process]}\n")
	large := strings.Repeat("y", 2000)
	if m, code := callJSON(t, d, "probe", large); code != 0 || m["env"] != "local" || m["rule"] != "large-input" {
		t.Errorf("large input with the sandbox down: exit %d %v; want local by large-input", code, m)
	}
	m, code := callJSON(t, d, "probe", "tiny")
	e, _ := m["error"].(map[string]any)
	if code != 1 || e["code"] != "rejected" || !strings.Contains(e["message"].(string), "rule only-native: process: unhealthy") {
		t.Errorf("only-native with the sandbox down: exit %d %v", code, m)
	}
}

// A call running in the sandbox when the daemon is killed: its process dies
// with the daemon, and after the restart the journal reports it once (an
// at-most-once call that was running is interrupted, not run again). While
// it runs, the sandbox is full (max_running 1): a rule's fallback runs
// another call locally.
func TestPlacementKillWhileProcessRuns(t *testing.T) {
	probe := buildProbe(t)
	d := startDaemon(t, placementConfig+"  process: {max_running: 1}\n")
	deployProbe(t, d, "native", probe, "60s", "placement:\n  - {name: always-native, run: [process]}\n")
	deployProbe(t, d, "probe", probe, "3s", "")
	id, code := runCLI(t, "call", "native", "--async", "--config", d.cfg, "--data", "sleep")
	id = strings.TrimSpace(id)
	if code != 0 {
		t.Fatalf("call --async: exit %d %s", code, id)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, err := d.admin.GetCall(context.Background(), id)
		if err == nil && rec.State.String() == "started" && sandboxed(probe) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("call not started in the sandbox: %v %v", rec, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m, code := callJSON(t, d, "probe", strings.Repeat("z", 2000)); code != 0 || m["env"] != "local" || m["rule"] != "large-input" {
		t.Errorf("large input while the sandbox is full: exit %d %v; want local by large-input", code, m)
	}
	killed := d.cmd.Process.Pid
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	for deadline := time.Now().Add(10 * time.Second); sandboxed(probe) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sandboxed process outlived the daemon")
		}
	}
	d.start()
	// The killed run's memory cgroup is removed by the restart.
	if left, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/memory/outpost-sandbox/run-%d-*", killed)); len(left) > 0 {
		t.Errorf("cgroups of the killed daemon left: %v", left)
	}
	show, code := runCLI(t, "calls", "show", id, "--wait", "--timeout", "20s", "--config", d.cfg, "-o", "json")
	if !strings.Contains(show, `"status": "interrupted"`) || !strings.Contains(show, `"runs": 1`) {
		t.Errorf("calls show after the kill: exit %d\n%s", code, show)
	}
}

// sandboxed counts running processes whose executable has probe's bytes
// (the sandbox mounts the deployed blob at /task).
func sandboxed(probe string) int {
	want, err := os.Stat(probe)
	if err != nil {
		return 0
	}
	n := 0
	pids, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range pids {
		if st, err := os.Stat(p); err == nil && st.Size() == want.Size() {
			if cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline")); strings.HasPrefix(string(cmdline), "/task/") {
				n++
			}
		}
	}
	return n
}

// outpost check type-checks placement rules and names the file, line and
// key of each problem.
func TestPlacementCheck(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte(`placement:
  rules:
    - name: large
      when: call.input_sise > 1024
      run: [process]
    - name: sized
      when: call.input_size
      run: [moon]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "check", "--config", bad)
	for _, want := range []string{
		bad + `:4: placement.rules[0].when: ERROR: <input>:1:5: undefined field 'input_sise'`,
		bad + `:7: placement.rules[1].when: is of type int, want bool`,
		bad + `:8: placement.rules[1].run[0]: "moon" is not an environment (local, process, cloud, peer, peer:NAME)`,
		"3 problems",
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("check: exit %d, output lacks %q:\n%s", code, want, out)
		}
	}
}

// A rule that says wait holds a call until one of its environments can
// take it: here the sandbox's one slot, held by a call that times out.
func TestPlacementWait(t *testing.T) {
	probe := buildProbe(t)
	d := startDaemon(t, placementConfig+"  process: {max_running: 1}\n")
	deployProbe(t, d, "native", probe, "2s", "placement:\n  - {name: native-or-wait, run: [process], wait: true}\n")
	id, code := runCLI(t, "call", "native", "--async", "--config", d.cfg, "--data", "sleep")
	if code != 0 {
		t.Fatalf("call --async: exit %d %s", code, id)
	}
	for deadline := time.Now().Add(20 * time.Second); sandboxed(probe) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first call never ran in the sandbox")
		}
	}
	m, code := callJSON(t, d, "native", "after")
	if code != 0 || m["env"] != "process" || m["rule"] != "native-or-wait" {
		t.Errorf("the waiting call: exit %d %v; want it run in process once the slot is free", code, m)
	}
	show, _ := runCLI(t, "calls", "show", strings.TrimSpace(id), "--wait", "--timeout", "20s", "--config", d.cfg)
	if !regexp.MustCompile(`(?m)^status: +timeout$`).MatchString(show) {
		t.Errorf("the first call:\n%s", show)
	}
}

// A task whose only code is a native executable (no module) runs in the
// process environment, from the config file and deployed: with no rule
// (or none matching) it runs there by default, a rule that places it only
// where it has no artifact refuses the call naming the task and the
// missing artifact, and task ls and inspect list it and its artifact.
func TestPlacementProcessOnly(t *testing.T) {
	probe := buildProbe(t)
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - name: cfgnative
    limits: {memory: 64MiB, timeout: 3s}
    artifacts: [{arch: `+goruntime.GOARCH+`, executable: `+probe+`}]
`)
	man := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(man, []byte("limits: {memory: 64MiB, timeout: 3s}\nartifacts:\n  - {arch: "+goruntime.GOARCH+", executable: "+probe+
		"}\nplacement:\n  - {name: large-local, when: \"call.input_size > 100\", run: [local]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "task", "deploy", "depnative", "--manifest", man, "--config", d.cfg)
	if code != 0 || !strings.Contains(out, "deployed depnative version 1 (none: process only)") ||
		!regexp.MustCompile(`(?m)^  process\s+linux/`+goruntime.GOARCH+`\s+[0-9a-f]{12}\s`).MatchString(out) {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}
	for _, task := range []string{"cfgnative", "depnative"} {
		m, code := callJSON(t, d, task, "hi")
		if code != 0 || m["env"] != "process" || m["rule"] != "default" || m["output"] != base64.StdEncoding.EncodeToString([]byte("echo:hi")) {
			t.Errorf("call %s: exit %d %v; want echo:hi in process by default", task, code, m)
		}
	}
	m, code := callJSON(t, d, "depnative", strings.Repeat("x", 200))
	e, _ := m["error"].(map[string]any)
	if msg, _ := e["message"].(string); code != 1 || e["code"] != "rejected" || !strings.Contains(msg, "rule large-local: local: task depnative has no wasm module (module)") {
		t.Errorf("depnative placed local: exit %d %v", code, m)
	}
	inspect, _ := runCLI(t, "task", "inspect", "depnative", "--config", d.cfg, "-o", "json")
	var det admin.TaskDetail
	if err := json.Unmarshal([]byte(inspect), &det); err != nil || det.Module != "" || det.Digest != "" || len(det.Artifacts) != 1 ||
		det.Artifacts[0].Env != "process" || len(det.Artifacts[0].Digest) != 64 || len(det.Versions) != 1 || len(det.Placement) != 1 {
		t.Errorf("inspect: %v\n%s", err, inspect)
	}
	ls, code := runCLI(t, "task", "ls", "--config", d.cfg)
	for _, task := range []string{"cfgnative", "depnative"} {
		if code != 0 || !regexp.MustCompile(`(?m)^`+task+`\s+-\s+64MiB\s+3s\s+\d+\s+-\s+none: process only$`).MatchString(ls) {
			t.Errorf("task ls lacks %s:\n%s", task, ls)
		}
	}
	// Without a module or an artifact the CLI refuses the manifest, naming
	// the task and the key.
	if err := os.WriteFile(man, []byte("limits: {timeout: 3s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "task", "deploy", "nothing", "--manifest", man, "--config", d.cfg); code == 0 ||
		!strings.Contains(out, `module: task "nothing" needs a module (a .wasm file or builtin:NAME) or a process artifact`) {
		t.Errorf("deploy without code: exit %d\n%s", code, out)
	}
}

// A call labelled on the command line (outpost call --label) is placed by
// a rule on its labels: a batch call runs as the native executable, an
// unlabelled one in the wasm runtime. The journal keeps the labels across
// a restart: calls show prints them with where the call ran, and calls ls
// selects by them. A bad label is a usage error.
func TestPlacementByCallLabels(t *testing.T) {
	probe := buildProbe(t)
	d := startDaemon(t, placementConfig)
	deployProbe(t, d, "probe", probe, "3s", "placement:\n  - {name: batch-native, when: \"'tier' in call.labels && call.labels.tier == 'batch'\", run: [process]}\n")
	call := func(args ...string) (map[string]any, int) {
		t.Helper()
		out, code := runCLI(t, append([]string{"call", "probe", "--config", d.cfg, "-o", "json", "--data", "small"}, args...)...)
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("call %v: exit %d: %v: %s", args, code, err, out)
		}
		return m, code
	}
	for _, tc := range []struct {
		labels         []string
		env, rule, out string
	}{
		{[]string{"--label", "tier=batch"}, "process", "batch-native", "echo:small"},
		{[]string{"--label", "tier=interactive"}, "local", "default", "small"},
		{nil, "local", "default", "small"},
	} {
		m, code := call(tc.labels...)
		out, _ := base64.StdEncoding.DecodeString(fmt.Sprint(m["output"]))
		if code != 0 || m["env"] != tc.env || m["rule"] != tc.rule || string(out) != tc.out {
			t.Errorf("call %v: exit %d %v; want %q in %s by %s", tc.labels, code, m, tc.out, tc.env, tc.rule)
		}
	}
	id, code := runCLI(t, "call", "probe", "--async", "--config", d.cfg, "--data", "journaled", "--label", "tier=batch", "--label", "site=north 1")
	id = strings.TrimSpace(id)
	if code != 0 {
		t.Fatalf("call --async: exit %d %s", code, id)
	}
	showRE := regexp.MustCompile(`(?m)^labels: +site=north 1, tier=batch\n(.|\n)*^ran in: +process \(placement rule batch-native\)$`)
	show, code := runCLI(t, "calls", "show", id, "--wait", "--timeout", "20s", "--config", d.cfg)
	if code != 0 || !showRE.MatchString(show) || !strings.Contains(show, "echo:journaled") {
		t.Fatalf("calls show: exit %d\n%s", code, show)
	}
	if code := d.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	d.start()
	if show, code := runCLI(t, "calls", "show", id, "--config", d.cfg); code != 0 || !showRE.MatchString(show) {
		t.Errorf("calls show after a restart: exit %d\n%s", code, show)
	}
	for _, tc := range []struct {
		label string
		want  bool
	}{{"tier=batch", true}, {"site=north 1", true}, {"tier=interactive", false}} {
		ls, code := runCLI(t, "calls", "ls", "--label", tc.label, "--config", d.cfg, "-o", "json")
		if code != 0 || strings.Contains(ls, id) != tc.want {
			t.Errorf("calls ls --label %s: exit %d, lists %s: %v, want %v\n%s", tc.label, code, id, !tc.want, tc.want, ls)
		}
	}
	for _, bad := range []string{"tier", "bad key=x"} {
		if out, code := runCLI(t, "call", "probe", "--config", d.cfg, "--data", "x", "--label", bad); code != 2 || !strings.Contains(out, "--label") {
			t.Errorf("call --label %q: exit %d %s, want a usage error", bad, code, out)
		}
	}
}
