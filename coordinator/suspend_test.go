package coordinator

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// workflowConfig runs examples/tasks/c/workflow as "workflow" (it may call
// "square") and as "square".
func workflowConfig(tb testing.TB, dataDir string) *configs.Config {
	tb.Helper()
	mod, err := filepath.Abs("../examples/tasks/build/c-workflow.wasm")
	if err != nil {
		tb.Fatal(err)
	}
	exampleModule(tb, "c-workflow")
	cfg, err := configs.Parse([]byte("data_dir: "+dataDir+`
admin: {listen: "`+mqtttest.FreeAddr(tb)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(tb)+`"}}
tasks:
  - {name: workflow, module: `+mod+`, permissions: {call: [square]}, limits: {concurrency: 4}}
  - {name: square, module: `+mod+`, limits: {concurrency: 4}}
`), "test.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// waitFinished polls the journal until call id is finished and returns its record.
func waitFinished(tb testing.TB, c *Coordinator, id string, within time.Duration) *calls.Record {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		r, err := c.cloud.journal.Get(id)
		if err != nil {
			tb.Fatal(err)
		}
		if r != nil && r.State >= calls.Finished {
			return r
		}
		if time.Now().After(deadline) {
			tb.Fatalf("call %s not finished after %s: %+v", id, within, r)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A journaled call of the example workflow fans out to 100 calls of square
// in two steps, suspended between them: it holds no instance while
// suspended, and its output is the sum of the squares. A synchronous call
// of the same task cannot suspend and awaits instead, with the same output.
func TestWorkflowSuspends(t *testing.T) {
	c := startCoordinator(t, workflowConfig(t, t.TempDir()))
	call := calls.New("workflow", []byte("100"), calls.Source{})
	call.Effect = calls.Idempotent
	if err := c.CallAsync(call); err != nil {
		t.Fatal(err)
	}
	r := waitFinished(t, c, call.ID, 20*time.Second)
	if r.Result.Status != calls.StatusOK || string(r.Result.Output) != "sum=338350 steps=2" {
		t.Fatalf("workflow: %+v", r.Result)
	}
	if r.Runs != 3 {
		t.Errorf("workflow ran %d times, want 3 (start and two resumes)", r.Runs)
	}
	if n := c.cloud.durable.SuspendedCount(); n != 0 {
		t.Errorf("%d calls still suspended", n)
	}
	sync, err := c.Call(context.Background(), calls.New("workflow", []byte("100"), calls.Source{Kind: "test"}))
	if err != nil || string(sync.Output) != "sum=338350 steps=2" {
		t.Fatalf("synchronous workflow: %+v, %v", sync, err)
	}
}

// A dependency that fails reaches the resumed step, which fails the call
// with the dependency's error.
func TestWorkflowDependencyFails(t *testing.T) {
	c := startCoordinator(t, workflowConfig(t, t.TempDir()))
	call := calls.New("workflow", []byte("60 55"), calls.Source{})
	call.Effect = calls.Idempotent
	if err := c.CallAsync(call); err != nil {
		t.Fatal(err)
	}
	r := waitFinished(t, c, call.ID, 20*time.Second)
	if r.Result.Status != calls.StatusFailed || !strings.Contains(r.Result.Error, "square of 55 refused") {
		t.Fatalf("workflow: %+v", r.Result)
	}
}

// A call_async_by needed sooner than its task's recent runs take is refused
// at once with too_late, through the host API.
func TestNeedByRefusedThroughHost(t *testing.T) {
	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
tasks:
  - {name: caller, module: `+wasmtest.WAT(t, "testdata/needby.wat", "")+`, permissions: {call: [slow]}}
  - {name: slow, module: `+wasmtest.WAT(t, "../runtime/testdata/sleep.wat", "")+`}
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	if r, err := c.Call(context.Background(), calls.New("slow", nil, calls.Source{Kind: "test"})); err != nil || !r.OK() {
		t.Fatalf("slow: %+v, %v", r, err) // its run time (30 ms) is now known
	}
	start := time.Now()
	r, err := c.Call(context.Background(), calls.New("caller", []byte("slow"), calls.Source{Kind: "test"}))
	if err != nil || !r.OK() || len(r.Output) < 4 {
		t.Fatalf("caller: %+v, %v", r, err)
	}
	code, msg := int32(binary.LittleEndian.Uint32(r.Output)), string(r.Output[4:])
	if code != -8 || !strings.Contains(msg, "need-by time cannot be met: slow is needed in") || time.Since(start) > 5*time.Second {
		t.Fatalf("call_async_by: code %d %q after %s, want too_late at once", code, msg, time.Since(start))
	}
}
