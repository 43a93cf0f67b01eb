package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/syncbuf"
)

// A rule that fails to evaluate does not match and is logged, also after
// calls whose rules evaluated fine (they do not use up the log's rate).
func TestPlacementEvalErrorLogged(t *testing.T) {
	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
tasks:
  - {name: fine, module: builtin:echo}
  - name: broken
    module: builtin:echo
    placement: [{name: no-such-env, when: "envs['peer:nowhere'].healthy", run: [process]}]
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	c := startCoordinatorLog(t, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	for _, task := range []string{"fine", "broken"} {
		r, err := c.Call(context.Background(), calls.New(task, []byte("x"), calls.Source{Kind: "test"}))
		if err != nil || !r.OK() || r.Env != "local" || r.Rule != "default" {
			t.Fatalf("%s: %+v %v, want ok in local by the default rule", task, r, err)
		}
	}
	if !strings.Contains(logs.String(), `msg="placement rule failed to evaluate; skipped" task=broken`) || !strings.Contains(logs.String(), "rule no-such-env") {
		t.Errorf("no warning for the rule that failed:\n%s", logs.String())
	}
}

// The cloud environment is healthy only while the link is up and the
// control plane advertises a free worker: against one that runs nothing
// itself (no --run-workers) a rule's fallback runs the call here, and a
// rule without one refuses it, naming why.
func TestCloudEnvironmentFallback(t *testing.T) {
	cfg, err := configs.Parse([]byte(cloudNodeConfig(t, server.Options{Dir: t.TempDir()})+`
tasks:
  - name: fallback
    module: builtin:echo
    placement: [{name: cloud-first, run: [cloud, local]}]
  - name: only-cloud
    module: builtin:echo
    placement: [{name: cloud-only, run: [cloud]}]
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	deadline := time.Now().Add(20 * time.Second)
	for c.cloud.link.State() != remote.StateUp {
		if time.Now().After(deadline) {
			t.Fatalf("cloud link %s, never up", c.cloud.link.State())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if runs, up := c.cloud.link.CloudRuns(); !up || runs != (remote.Runs{}) {
		t.Fatalf("advertised pool %+v (link up %v), want 0/0", runs, up)
	}
	r, err := c.Call(context.Background(), calls.New("fallback", []byte("x"), calls.Source{Kind: "test"}))
	if err != nil || !r.OK() || r.Env != "local" || r.Rule != "cloud-first" {
		t.Errorf("fallback: %+v %v, want ok in local by cloud-first", r, err)
	}
	r, err = c.Call(context.Background(), calls.New("only-cloud", []byte("x"), calls.Source{Kind: "test"}))
	if err != nil || r.Status != calls.StatusRejected || r.Rule != "cloud-only" || !strings.Contains(r.Error, "cloud: unhealthy") {
		t.Errorf("only-cloud: %+v %v, want rejected: cloud unhealthy", r, err)
	}
}

// A process-only task (artifacts, no module) is never loaded by the wasm
// runtime, yet the node lists it, inspects it and places its calls in
// process; with the sandbox down the call is refused, saying why. A
// deploy without a module or an artifact is refused naming the task and
// the key.
func TestProcessOnlyTask(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "nat")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\ncat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Parse([]byte("data_dir: "+dir+`/data
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
placement: {process: {bwrap: /nonexistent/bwrap}}
tasks:
  - {name: echo, module: builtin:echo}
  - name: nat
    limits: {max_input: 1KiB, concurrency: 3}
    artifacts: [{arch: `+goruntime.GOARCH+`, executable: `+exe+`}]
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	if _, ok := c.engine.Task("nat"); ok {
		t.Error("the wasm runtime loaded a process-only task")
	}
	if n, ok := c.MaxInput("nat"); !ok || n != 1<<10 {
		t.Errorf("MaxInput = %d, %v", n, ok)
	}
	if n, ok := (&objectExecutor{executor: executor{c.engine}, c: c}).Concurrency("nat"); !ok || n != 3 {
		t.Errorf("Concurrency = %d, %v", n, ok)
	}
	if ts := c.Tasks(); len(ts) != 2 || ts[1].Name != "nat" || ts[1].Module != "" {
		t.Errorf("Tasks = %+v", ts)
	}
	if h := c.Health(); h.Tasks != 2 {
		t.Errorf("health counts %d tasks, want 2", h.Tasks)
	}
	det, ok := c.Inspect("nat")
	if !ok || len(det.Artifacts) != 1 || det.Artifacts[0].Env != "process" || det.Artifacts[0].Location != exe || det.MaxInput != 1<<10 {
		t.Errorf("Inspect = %+v, %v", det, ok)
	}
	r, err := c.Call(context.Background(), calls.New("nat", []byte("x"), calls.Source{Kind: "test"}))
	if err != nil || r.Status != calls.StatusRejected || r.Rule != "default" || !strings.Contains(r.Error, "rule default: process: unhealthy") {
		t.Errorf("call: %+v %v; want rejected by the default rule, process unhealthy", r, err)
	}
	_, err = c.Deploy(context.Background(), "nothing", admin.Upload{Manifest: []byte("limits: {timeout: 1s}\n")})
	if !errors.Is(err, admin.ErrInvalid) || !strings.Contains(err.Error(), `module: task "nothing" needs a module`) {
		t.Errorf("deploy without code: %v", err)
	}
}

// Rules see the node's memory budget and use, its cloud link state (false
// without a link) and the task's labels: a rule on them places the call.
func TestPlacementSeesNodeMemoryAndLink(t *testing.T) {
	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
scheduler: {memory_budget: 512MiB}
tasks:
  - name: budget
    module: builtin:echo
    labels: {tier: batch}
    placement: [{name: within-budget, when: "node.memory_budget == 536870912 && node.memory_used <= node.memory_budget && !node.cloud_up && task.labels.tier == 'batch'", run: [local]}]
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	r, err := c.Call(context.Background(), calls.New("budget", []byte("x"), calls.Source{Kind: "test"}))
	if err != nil || !r.OK() || r.Rule != "within-budget" {
		t.Fatalf("%+v %v, want ok by the rule within-budget", r, err)
	}
}

// BenchmarkTaskLookup finds a task of a node with 1,000 config tasks by
// name, as placement does for every call: the first, the middle and the
// last of the config's list.
func BenchmarkTaskLookup(b *testing.B) {
	var yaml strings.Builder
	yaml.WriteString("data_dir: " + b.TempDir() + "\ntasks:\n")
	for i := range 1000 {
		fmt.Fprintf(&yaml, "  - {name: t%04d, module: builtin:echo}\n", i)
	}
	cfg, err := configs.Parse([]byte(yaml.String()), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	c := New(cfg, quiet, "bench")
	for _, name := range []string{"t0000", "t0500", "t0999"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if t, ok := c.envs.task(name); !ok || t.Name != name {
					b.Fatal(name, ok)
				}
			}
		})
	}
}

// cloudNodeConfig starts a control plane with opts and returns the start
// of a node's config that polls it: data_dir, node edge-1, admin and
// broker on free ports, the cloud link.
func cloudNodeConfig(t *testing.T, opts server.Options) string {
	t.Helper()
	srv, err := server.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); _ = srv.Close() })
	return "data_dir: " + t.TempDir() + `
node: {id: edge-1}
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
cloud: {url: "` + hs.URL + `", poll_wait: 200ms}`
}
