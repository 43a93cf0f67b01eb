package coordinator

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// TestCallDeadlineStopsGuest runs guests that never return through the
// scheduler and the real engine, with a caller's deadline or a max run far
// below the task's timeout: the scheduler's deadline timer (calls.runCtx,
// one timer for all running calls) must stop each at its own deadline, and
// the result must say whose deadline passed.
func TestCallDeadlineStopsGuest(t *testing.T) {
	ctx := context.Background()
	e := outpostrt.New(outpostrt.Options{Logger: quiet})
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	set, err := e.Load(ctx, []outpostrt.Spec{{Name: "loop", Module: wasmtest.WAT(t, "../runtime/testdata/loop.wat", ""),
		Timeout: 5 * time.Minute, Concurrency: 4}})
	if err != nil {
		t.Fatal(err)
	}
	e.Activate(set)
	s := calls.NewScheduler(executor{e}, calls.Options{Workers: 4, QueueSize: 16}, quiet, nil)
	defer s.Drain(ctx)

	tests := []struct {
		name             string
		deadline, maxRun time.Duration
	}{
		{"caller's deadline", 600 * time.Millisecond, 0},
		{"max run", 0, 300 * time.Millisecond},
		{"max run before the caller's deadline", 2 * time.Minute, 450 * time.Millisecond},
	}
	var wg sync.WaitGroup
	for _, tt := range tests {
		wg.Add(1)
		go func() { // at once: the scheduler's timer serves them all
			defer wg.Done()
			start := time.Now() // before the deadline's clock starts: the bound below is a lower one
			cctx := ctx
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				cctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			c := calls.New("loop", nil, calls.Source{Kind: "test"})
			c.MaxRun = tt.maxRun
			r, err := s.Do(cctx, c)
			took := time.Since(start)
			want := min(tt.deadline, tt.maxRun)
			if tt.deadline == 0 || tt.maxRun == 0 {
				want = max(tt.deadline, tt.maxRun)
			}
			switch {
			case err != nil:
				t.Errorf("%s: %v", tt.name, err)
			case r.Status != calls.StatusTimeout || !strings.Contains(r.Error, "outpost_handle did not finish before the caller's deadline"):
				t.Errorf("%s: result %+v, want a timeout at the call's deadline", tt.name, r)
			case took < want || took > want+30*time.Second:
				t.Errorf("%s: stopped after %v, want %v", tt.name, took, want)
			}
		}()
	}
	wg.Wait()
}

// TestCallerDeadlineInHostCall: a guest waiting in outpost.call or
// outpost.await when its caller's deadline passes, and failing with the
// error it got, timed out: its result's kind is timeout, not failed.
func TestCallerDeadlineInHostCall(t *testing.T) {
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
tasks:
  - {name: relay, module: ` + wasmtest.WAT(t, "testdata/relay.wat", "") + `, limits: {timeout: 30s}, permissions: {call: [loop]}}
  - {name: loop, module: ` + wasmtest.WAT(t, "../runtime/testdata/loop.wat", "") + `, limits: {timeout: 30s}}
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	for _, tt := range []struct{ name, input string }{{"await", "aloop"}, {"call", "sloop"}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			r, err := c.Call(ctx, calls.New("relay", []byte(tt.input), calls.Source{Kind: "test"}))
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != calls.StatusTimeout || !strings.Contains(r.Error, "caller's deadline") {
				t.Fatalf("result %+v, want a timeout at the caller's deadline", r)
			}
		})
	}
}
