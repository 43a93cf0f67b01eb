package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// exampleWasm compiles examples/tasks/wat/NAME.wat.
func exampleWasm(t *testing.T, name string) string {
	t.Helper()
	return wasmtest.WAT(t, filepath.Join("..", "..", "examples", "tasks", "wat", name+".wat"), "")
}

// cli runs the CLI of d's binary against d and returns stdout, stderr
// and the exit code.
func (d *daemon) cli(args ...string) (string, string, int) {
	d.t.Helper()
	return d.cliOf(d.bin, args...)
}

// cliOf is cli with the CLI of another outpost binary.
func (d *daemon) cliOf(bin string, args ...string) (string, string, int) {
	d.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "OUTPOST_ADMIN="+d.addr)
	cmd.Dir = d.dir // the CLI finds the token in ./data, as the daemon's user in its directory does
	return runCmd(d.t, cmd)
}

// runCmd runs cmd and returns its stdout, stderr and exit code; a command
// that cannot run at all fails the test.
func runCmd(t testing.TB, cmd *exec.Cmd) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// Deploy, call, update under load with no failed call, rollback, restart
// with the deployed tasks ready, remove: all through the real binary.
func TestTaskDeployLifecycle(t *testing.T) {
	echo, upper := exampleWasm(t, "echo"), exampleWasm(t, "upper")
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks: [{name: cfgecho, module: builtin:echo}]
`)
	manifest := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(manifest, []byte("limits: {concurrency: 8, timeout: 2s}\npermissions: {kv_quota: 1KiB}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := d.cli("task", "deploy", "svc", echo, "--manifest", manifest)
	if code != 0 || !strings.Contains(errOut, "deployed svc version 1") {
		t.Fatalf("deploy: code %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	// Off a terminal: one line per phase, sizes in one unit system, nothing redrawn.
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^uploading \S+echo\S*\.wasm \(\d+ B\)$`).MatchString(lines[0]) ||
		lines[1] != "compiling and warming svc..." || !strings.HasPrefix(lines[2], "deployed svc version 1 (") || strings.ContainsAny(errOut, "\r%") {
		t.Fatalf("deploy progress off a terminal:\n%s", errOut)
	}
	if got, err := d.call("svc", "hello"); err != nil || got != "hello" {
		t.Fatalf("call v1: %q %v", got, err)
	}

	// Update under load: every call succeeds, on the old or the new version.
	var failures, served atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := d.call("svc", "hello")
				served.Add(1)
				if err != nil || (got != "hello" && got != "HELLO") {
					failures.Add(1)
					t.Errorf("call during update: %q %v", got, err)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if _, errOut, code := d.cli("task", "deploy", "svc", upper); code != 0 {
		t.Fatalf("update: %s", errOut)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || served.Load() < 10 {
		t.Fatalf("%d of %d calls failed during the update", failures.Load(), served.Load())
	}
	if got, err := d.call("svc", "hello"); err != nil || got != "HELLO" {
		t.Fatalf("call v2: %q %v", got, err)
	}

	// ls shows config and deployed tasks; inspect shows both versions.
	out, _, code = d.cli("task", "ls")
	if code != 0 || !strings.Contains(out, "cfgecho") || !strings.Contains(out, "svc") {
		t.Fatalf("ls: %s", out)
	}
	out, _, _ = d.cli("task", "inspect", "svc")
	if !strings.Contains(out, "versions (the last one runs)") || strings.Count(out, "  1  ")+strings.Count(out, "  2  ") < 2 {
		t.Fatalf("inspect: %s", out)
	}

	// Rollback returns to echo; a second rollback has nothing to go back to.
	if _, errOut, code := d.cli("task", "rollback", "svc"); code != 0 || !strings.Contains(errOut, "rolled back to version 1") {
		t.Fatalf("rollback: %d %s", code, errOut)
	}
	if got, err := d.call("svc", "hello"); err != nil || got != "hello" {
		t.Fatalf("call after rollback: %q %v", got, err)
	}
	if _, errOut, code := d.cli("task", "rollback", "svc"); code != 1 || !strings.Contains(errOut, "no previous version") {
		t.Fatalf("second rollback: %d %s", code, errOut)
	}

	// Refusals: a config task, a bad module, a bad manifest.
	if _, errOut, code := d.cli("task", "deploy", "cfgecho", echo); code != 1 || !strings.Contains(errOut, "defined in the config file") {
		t.Fatalf("deploy over a config task: %d %s", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.wasm")
	_ = os.WriteFile(bad, []byte("not wasm"), 0o644)
	if _, errOut, code := d.cli("task", "deploy", "broken", bad); code != 1 || !strings.Contains(errOut, `task "broken"`) {
		t.Fatalf("deploy of a bad module: %d %s", code, errOut)
	}
	_ = os.WriteFile(manifest, []byte("limits: {colour: red}\n"), 0o644)
	if _, errOut, code := d.cli("task", "deploy", "x", echo, "--manifest", manifest); code != 1 || !strings.Contains(errOut, "colour") {
		t.Fatalf("deploy with a bad manifest: %d %s", code, errOut)
	}

	// Deploy 20 tasks, restart: all are ready for calls.
	for i := range 20 {
		name := "t" + string(rune('a'+i))
		if _, errOut, code := d.cli("task", "deploy", name, upper); code != 0 {
			t.Fatalf("deploy %s: %s", name, errOut)
		}
	}
	if code := d.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	d.start()
	for i := range 20 {
		name := "t" + string(rune('a'+i))
		if got, err := d.call(name, "abc"); err != nil || got != "ABC" {
			t.Fatalf("after restart, %s: %q %v", name, got, err)
		}
	}
	if got, err := d.call("svc", "hello"); err != nil || got != "hello" {
		t.Fatalf("after restart, svc (rolled back): %q %v", got, err)
	}

	// rm
	if _, errOut, code := d.cli("task", "rm", "svc"); code != 0 {
		t.Fatalf("rm: %s", errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.admin.Call(ctx, "svc", nil, admin.CallOptions{}); err == nil || !strings.Contains(err.Error(), "unknown_task") {
		t.Fatalf("call after rm: %v", err)
	}
	if _, errOut, code := d.cli("task", "rm", "svc"); code != 1 || !strings.Contains(errOut, "no deployed task") {
		t.Fatalf("second rm: %d %s", code, errOut)
	}
}
