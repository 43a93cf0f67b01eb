package extismbench

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// BenchmarkNoopThroughput measures calls per second of a no-op call on all
// cores (run it with -cpu 2 for the 2-core figure), with the same 16-byte
// input and a 5 s deadline per call on both sides:
//
//   - outpost: testdata/noop.wasm as a task of a running daemon (the real
//     coordinator, started as `outpost run` starts it), called through
//     Coordinator.Call: the scheduler, the task's pool of warm instances,
//     input into and output out of the guest's memory.
//   - outpost-engine: the same task in the runtime engine alone (its pool,
//     no scheduler), called with Engine.Call.
//   - extism: testdata/noop-extism.wasm compiled once as an Extism plugin with
//     the same wazero runtime config (compiler, CloseOnContextDone), one plugin
//     instance per goroutine (they are not safe for concurrent use), called
//     with Plugin.CallWithContext.
func BenchmarkNoopThroughput(b *testing.B) {
	input := []byte("0123456789abcdef")

	b.Run("extism", func(b *testing.B) {
		ctx := context.Background()
		bin := readFile(b, "testdata/noop-extism.wasm")
		compiled, err := extism.NewCompiledPlugin(ctx, extism.Manifest{Wasm: []extism.Wasm{extism.WasmData{Data: bin}}},
			extism.PluginConfig{RuntimeConfig: wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(true)}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer compiled.Close(ctx)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			p, err := compiled.Instance(ctx, extism.PluginInstanceConfig{})
			if err != nil {
				b.Error(err)
				return
			}
			defer p.Close(ctx)
			for pb.Next() {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				rc, _, err := p.CallWithContext(cctx, "run", input)
				cancel()
				if err != nil || rc != 0 {
					b.Errorf("extism call: rc %d, %v", rc, err)
					return
				}
			}
		})
		reportRate(b)
	})

	b.Run("outpost-engine", func(b *testing.B) {
		ctx := context.Background()
		e := outpostrt.New(outpostrt.Options{})
		if err := e.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer e.Close(ctx)
		set, err := e.Load(ctx, []outpostrt.Spec{{Name: "noop", Module: "testdata/noop.wasm", Concurrency: 2}})
		if err != nil {
			b.Fatal(err)
		}
		e.Activate(set)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := e.Call(cctx, "noop", input)
				cancel()
				if err != nil {
					b.Errorf("engine call: %v", err)
					return
				}
			}
		})
		reportRate(b)
	})

	b.Run("outpost", func(b *testing.B) {
		c := startDaemon(b)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r, err := c.Call(cctx, calls.New("noop", input, calls.Source{Kind: "bench"}))
				cancel()
				if err != nil || !r.OK() {
					b.Errorf("outpost call: %+v %v", r, err)
					return
				}
			}
		})
		reportRate(b)
	})
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

// startDaemon runs a coordinator with the no-op task (concurrency 2: one
// instance per core) until the benchmark ends.
func startDaemon(b *testing.B) *coordinator.Coordinator {
	b.Helper()
	module, err := filepath.Abs("testdata/noop.wasm")
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := configs.Parse([]byte(`data_dir: `+b.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(b)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(b)+`"}}
tasks: [{name: noop, module: "`+module+`", limits: {concurrency: 2}}]
`), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	c := coordinator.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "bench")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, nil) }()
	select {
	case <-c.Ready():
	case err := <-done:
		b.Fatalf("daemon failed to start: %v", err)
	case <-time.After(30 * time.Second):
		b.Fatal("daemon not ready after 30s")
	}
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("daemon stop: %v", err)
		}
	})
	return c
}

func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// The committed .wasm files are what wat2wasm makes of the .wat sources.
func TestModulesMatchSources(t *testing.T) {
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		t.Fatal("wat2wasm not found (Debian package wabt)")
	}
	for _, name := range []string{"noop", "noop-extism"} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), name+".wasm")
			if b, err := exec.Command("wat2wasm", "testdata/"+name+".wat", "-o", out).CombinedOutput(); err != nil {
				t.Fatalf("wat2wasm: %v: %s", err, b)
			}
			if !bytes.Equal(readFile(t, out), readFile(t, "testdata/"+name+".wasm")) {
				t.Fatalf("testdata/%s.wasm differs from wat2wasm testdata/%s.wat: rebuild it", name, name)
			}
		})
	}
}
