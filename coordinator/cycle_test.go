package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// counterValue is the value of the counter name (without labels) in reg.
func counterValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestCallCycle: real wasm tasks calling each other (testdata/relay.wat).
// A call that could never start because the calling chain holds every
// slot of its task fails at once with the chain in the message; a self
// call that leaves a slot free succeeds.
func TestCallCycle(t *testing.T) {
	mod := wasmtest.WAT(t, "testdata/relay.wat", "")
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
scheduler: {workers: 2}
tasks:
  - {name: a, module: ` + mod + `, limits: {concurrency: 1, timeout: 30s}, permissions: {call: ["*"]}}
  - {name: b, module: ` + mod + `, limits: {concurrency: 1, timeout: 30s}, permissions: {call: ["*"]}}
  - {name: c, module: ` + mod + `, limits: {concurrency: 2, timeout: 30s}, permissions: {call: ["*"]}}
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	tests := []struct {
		name, task, input string
		want              string // "" = succeeds with "leaf"
	}{
		{"self call, concurrency 1", "a", "sa", "call cycle would deadlock: a -> a (a has concurrency 1, all held by this chain)"},
		{"a -> b -> a", "a", "sb,a", "call cycle would deadlock: a -> b -> a (a has concurrency 1, all held by this chain)"},
		{"async self call, concurrency 1", "a", "aa", "call cycle would deadlock: a -> a (a has concurrency 1, all held by this chain)"},
		{"async a -> b -> a", "a", "ab,a", "call cycle would deadlock: a -> b -> a (a has concurrency 1, all held by this chain)"},
		{"self call once, concurrency 2", "c", "sc", ""},
		{"async self call once, concurrency 2", "c", "ac", ""},
		{"self call twice, concurrency 2", "c", "sc,c", "call cycle would deadlock: c -> c -> c (c has concurrency 2, all held by this chain)"},
		{"a -> b -> c -> c", "a", "sb,c,c", ""},
	}
	refused := 0.0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The deadline is far: a refused wait must not run into it.
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			start := time.Now()
			r, err := c.Call(ctx, calls.New(tt.task, []byte(tt.input), calls.Source{Kind: "test"}))
			if err != nil {
				t.Fatalf("call: %v after %v", err, time.Since(start))
			}
			if tt.want == "" {
				if !r.OK() || string(r.Output) != "leaf" {
					t.Fatalf("got %+v, want leaf", r)
				}
			} else {
				refused++
				t.Logf("refused after %v: %s", time.Since(start), r.Error)
				if r.Status != calls.StatusFailed || !strings.Contains(r.Error, tt.want) {
					t.Fatalf("got %s %q, want failed with %q", r.Status, r.Error, tt.want)
				}
			}
			if n := counterValue(t, c.reg, "outpost_calls_cycle_refused_total"); n != refused {
				t.Errorf("outpost_calls_cycle_refused_total = %v, want %v", n, refused)
			}
		})
	}
}

// TestMaxParkedFromConfig: scheduler.max_parked reaches the scheduler, and
// its default is the scheduler's own (16 × workers, at least 64).
func TestMaxParkedFromConfig(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want int
	}{
		{"scheduler: {workers: 3, max_parked: 5}", 5},
		{"scheduler: {workers: 3}", 64},
		{"scheduler: {workers: 10}", 160},
	} {
		t.Run(tt.yaml, func(t *testing.T) {
			cfg, err := configs.Parse([]byte(tt.yaml+"\ndata_dir: "+t.TempDir()), "test.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if got := New(cfg, quiet, "test").sched.Stats().MaxParked; got != tt.want {
				t.Errorf("scheduler MaxParked = %d, want %d", got, tt.want)
			}
		})
	}
}
