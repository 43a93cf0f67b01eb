package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
)

// TestTaskInspectDetail: `outpost task inspect` shows what a task runs
// with: size limits, fresh_instance, permissions and its pool, in the
// human output and in --json, for a deployed task and a config task.
func TestTaskInspectDetail(t *testing.T) {
	echo := exampleWasm(t, "echo")
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks: [{name: cfgecho, module: builtin:echo, fresh_instance: true}]
`)
	manifest := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(manifest, []byte(`limits: {concurrency: 3, max_input: 2KiB, max_output: 8KiB}
permissions: {publish: ["out/#", "alerts/+"], call: [cfgecho], kv_quota: 1KiB, telemetry: true, shadows: ["lamp-*", d1]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := d.cli("task", "deploy", "svc", echo, "--manifest", manifest); code != 0 {
		t.Fatalf("deploy: %s", errOut)
	}
	if got, err := d.call("svc", "hi"); err != nil || got != "hi" {
		t.Fatalf("call: %q %v", got, err)
	}

	out, errOut, code := d.cli("task", "inspect", "svc")
	if code != 0 {
		t.Fatalf("inspect: %d %s", code, errOut)
	}
	for _, want := range []string{
		"max input:       2KiB", "max output:      8KiB", "fresh instance:  no",
		"publish:         out/#, alerts/+", "call:            cfgecho", "kv quota:        1KiB", "telemetry:       yes",
		"shadows:         lamp-*, d1", "pool:            1 warm, 0 in use",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("inspect svc: no line %q in\n%s", want, out)
		}
	}
	out, errOut, code = d.cli("task", "inspect", "svc", "--json")
	if code != 0 {
		t.Fatalf("inspect --json: %d %s", code, errOut)
	}
	var det admin.TaskDetail
	if err := json.Unmarshal([]byte(out), &det); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}
	p := det.Permissions
	if det.MaxInput != 2048 || det.MaxOutput != 8192 || det.FreshInstance || det.Concurrency != 3 ||
		!slices.Equal(p.Publish, []string{"out/#", "alerts/+"}) || !slices.Equal(p.Call, []string{"cfgecho"}) ||
		p.KVQuota != 1024 || !p.Telemetry || !slices.Equal(p.Shadows, []string{"lamp-*", "d1"}) || det.Pool != (admin.TaskPool{Warm: 1}) {
		t.Errorf("inspect --json svc: %+v", det)
	}
	for _, key := range []string{`"fresh_instance": false`, `"max_input": 2048`, `"kv_quota": 1024`, `"telemetry": true`, `"warm": 1`, `"in_use": 0`} {
		if !strings.Contains(out, key) {
			t.Errorf("inspect --json svc: no %s in\n%s", key, out)
		}
	}

	// A config task: defaults, no permissions, a fresh instance per call.
	out, _, code = d.cli("task", "inspect", "cfgecho")
	for _, want := range []string{
		"max input:       1MiB", "max output:      4MiB", "fresh instance:  yes", "publish:         none", "call:            none",
		"kv quota:        none (no kv access)", "telemetry:       no", "shadows:         none", "pool:            a fresh instance per call, 0 in use",
	} {
		if code != 0 || !strings.Contains(out, want+"\n") {
			t.Errorf("inspect cfgecho: no line %q in\n%s", want, out)
		}
	}
}

// TestTaskRemoveDeletesBlobs: through the real binary, `task rm` deletes
// the blobs nothing else uses (a module shared with another task stays),
// and the daemon counts them in /metrics.
func TestTaskRemoveDeletesBlobs(t *testing.T) {
	echo, upper := exampleWasm(t, "echo"), exampleWasm(t, "upper")
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
`)
	for _, dep := range [][2]string{{"one", echo}, {"two", echo}, {"two", upper}} {
		if _, errOut, code := d.cli("task", "deploy", dep[0], dep[1]); code != 0 {
			t.Fatalf("deploy %s: %s", dep[0], errOut)
		}
	}
	if n := d.blobCount(); n != 2 {
		t.Fatalf("%d blobs after the deploys, want 2", n)
	}
	if _, errOut, code := d.cli("task", "rm", "two"); code != 0 {
		t.Fatalf("rm two: %s", errOut)
	}
	if n := d.blobCount(); n != 1 {
		t.Fatalf("%d blobs after rm two, want 1 (echo, still one's)", n)
	}
	if got, err := d.call("one", "hi"); err != nil || got != "hi" {
		t.Fatalf("call one: %q %v", got, err)
	}
	if _, errOut, code := d.cli("task", "rm", "one"); code != 0 {
		t.Fatalf("rm one: %s", errOut)
	}
	if n := d.blobCount(); n != 0 {
		t.Fatalf("%d blobs after removing every task, want 0", n)
	}
	d.waitLog(`blob gc: deleted unreferenced blobs.*after=remove.*objects=1`, 5*time.Second)
	resp, err := http.Get("http://" + d.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "\noutpost_registry_blobs_reclaimed_total 2\n") {
		t.Fatalf("metrics: no outpost_registry_blobs_reclaimed_total 2 in\n%s", body)
	}
}
