package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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
permissions: {publish: ["out/#", "alerts/+"], call: [cfgecho], kv_quota: 1KiB, telemetry: true}
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
		"pool:            1 warm, 0 in use",
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
		p.KVQuota != 1024 || !p.Telemetry || det.Pool != (admin.TaskPool{Warm: 1}) {
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
		"kv quota:        none (no kv access)", "telemetry:       no", "pool:            a fresh instance per call, 0 in use",
	} {
		if code != 0 || !strings.Contains(out, want+"\n") {
			t.Errorf("inspect cfgecho: no line %q in\n%s", want, out)
		}
	}
}
