package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// TestLoopingTaskLeavesWorkers: with the default workers and task
// concurrency, six calls of a task that loops until its timeout do not
// keep an unrelated call from starting at once.
func TestLoopingTaskLeavesWorkers(t *testing.T) {
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
tasks:
  - {name: loop, module: ` + wasmtest.WAT(t, "../runtime/testdata/loop.wat", "") + `, limits: {timeout: 20s}}
  - {name: echo, module: builtin:echo}
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	for range 6 {
		if err := c.sched.Submit(calls.New("loop", nil, calls.Source{Kind: "test"})); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.sched.Stats().Running < min(tasks.DefaultConcurrency, cfg.Scheduler.Workers) {
		if time.Now().After(deadline) {
			t.Fatalf("loop calls not running: %+v", c.sched.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	r, err := c.Call(ctx, calls.New("echo", []byte("hi"), calls.Source{Kind: "test"}))
	if err != nil || !r.OK() || string(r.Output) != "hi" {
		t.Fatalf("echo beside six looping calls: %+v %v after %v (scheduler %+v)", r, err, time.Since(start), c.sched.Stats())
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("echo took %v beside six looping calls", took)
	}
	// Stop the looping calls now rather than at their timeout.
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer dcancel()
	_ = c.sched.Drain(dctx)
}
