package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/outpost-edge/outpost/runtime/builtin"
)

// BenchmarkCall compares Engine.Call with the same export of builtin:echo
// called directly through wazero, the way a careful host would: compiler
// engine, CloseOnContextDone, a deadline per call, CallWithStack with a reused
// stack, the input buffer asked once from outpost_input_buffer, input written
// with memory.Write, outpost_handle called, the output copied out.
func BenchmarkCall(b *testing.B) {
	input := []byte("0123456789abcdef") // 16 bytes
	ctx := context.Background()

	b.Run("raw-wazero", func(b *testing.B) {
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(true))
		defer rt.Close(ctx)
		wasi_snapshot_preview1.MustInstantiate(ctx, rt)
		bin, _ := builtin.Lookup("echo")
		mod, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithName("").WithRandSource(rand.Reader))
		if err != nil {
			b.Fatal(err)
		}
		handle, mem := mod.ExportedFunction("outpost_handle"), mod.Memory()
		stack := []uint64{uint64(len(input)), 0}
		if err := mod.ExportedFunction("outpost_input_buffer").CallWithStack(ctx, stack); err != nil {
			b.Fatal(err)
		}
		ptr := uint32(stack[0] >> 32)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if !mem.Write(ptr, input) {
				b.Fatal("write")
			}
			stack[0], stack[1] = uint64(ptr), uint64(len(input))
			if err := handle.CallWithStack(cctx, stack); err != nil {
				b.Fatal(err)
			}
			view, ok := mem.Read(uint32(stack[0]>>32), uint32(stack[0]))
			if !ok {
				b.Fatal("read")
			}
			out := make([]byte, len(view))
			copy(out, view)
			cancel()
			if len(out) != len(input) {
				b.Fatal("short output")
			}
		}
	})

	b.Run("engine", func(b *testing.B) {
		e := newEngine(b, Spec{Name: "echo", Module: "builtin:echo"})
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			out, err := e.Call(ctx, "echo", input)
			if err != nil {
				b.Fatal(err)
			}
			if len(out) != len(input) {
				b.Fatal("short output")
			}
		}
	})

	b.Run("engine-parallel", func(b *testing.B) {
		e := newEngine(b, Spec{Name: "echo", Module: "builtin:echo"})
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := e.Call(ctx, "echo", input); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkCommand measures a command call (a fresh instance per call,
// input on stdin, output from stdout) against reactor calls of the same
// module (testdata/dualecho.wat exports both ABIs): on a fresh instance per
// call, the same isolation as the command, and on a pooled instance.
func BenchmarkCommand(b *testing.B) {
	mod := fixture(b, "dualecho")
	ctx := context.Background()
	input := []byte("0123456789abcdef")
	for _, v := range []struct {
		name string
		spec Spec
	}{
		{"reactor", Spec{Name: "t", Module: mod, ABI: ABIReactor}},
		{"reactor-fresh", Spec{Name: "t", Module: mod, ABI: ABIReactor, FreshInstance: true}},
		{"command", Spec{Name: "t", Module: mod, ABI: ABICommand}},
	} {
		b.Run(v.name, func(b *testing.B) {
			e := newEngine(b, v.spec)
			b.ReportAllocs()
			for b.Loop() {
				out, err := e.Call(ctx, "t", input)
				if err != nil {
					b.Fatal(err)
				}
				if !bytes.Equal(out, input) {
					b.Fatalf("out %q", out)
				}
			}
		})
	}
}

// BenchmarkFreshInstance measures one call on a fresh instance of
// builtin:echo (instantiate, the input buffer, outpost_handle, close): the
// cost of a fresh_instance task or a command; two guest calls either way (the
// engine asks outpost_input_buffer, raw-wazero outpost_alloc). raw-wazero does
// the same directly with wazero's defaults (compiler, CloseOnContextDone, a
// deadline); raw-wazero-tuned, the baseline of the headline, adds what the
// engine does: WithRandSource(crypto/rand), the reusing off-heap memory
// allocator and a compilation cache. engine-default is the engine
// with both tunings off, engine-tuned as it runs. Besides wall time each
// reports its CPU time per call (cpu-ns/op), steadier on a shared machine.
func BenchmarkFreshInstance(b *testing.B) {
	input := []byte("0123456789abcdef")
	ctx := context.Background()
	bin, _ := builtin.Lookup("echo")

	raw := func(tuned bool) func(b *testing.B) {
		return func(b *testing.B) {
			rc := wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(true)
			if tuned {
				rc = rc.WithCompilationCache(wazero.NewCompilationCache())
			}
			rt := wazero.NewRuntimeWithConfig(ctx, rc)
			defer rt.Close(ctx)
			wasi_snapshot_preview1.MustInstantiate(ctx, rt)
			compiled, err := rt.CompileModule(ctx, bin)
			if err != nil {
				b.Fatal(err)
			}
			cfg := wazero.NewModuleConfig().WithName("")
			ictx := ctx
			if tuned {
				pool := newMemPool()
				defer pool.close(false)
				cfg = cfg.WithRandSource(rand.Reader)
				ictx = experimental.WithMemoryAllocator(ctx, pool)
			}
			stack := make([]uint64, 2)
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			for b.Loop() {
				cpu.ops++
				cctx, cancel := context.WithTimeout(ictx, 5*time.Second)
				mod, err := rt.InstantiateModule(cctx, compiled, cfg)
				if err != nil {
					b.Fatal(err)
				}
				stack[0] = uint64(len(input))
				if err := mod.ExportedFunction("outpost_alloc").CallWithStack(cctx, stack); err != nil {
					b.Fatal(err)
				}
				ptr := api.DecodeU32(stack[0])
				mem := mod.Memory()
				if !mem.Write(ptr, input) {
					b.Fatal("write")
				}
				stack[0], stack[1] = uint64(ptr), uint64(len(input))
				if err := mod.ExportedFunction("outpost_handle").CallWithStack(cctx, stack); err != nil {
					b.Fatal(err)
				}
				view, ok := mem.Read(uint32(stack[0]>>32), uint32(stack[0]))
				if !ok || len(view) != len(input) {
					b.Fatal("read")
				}
				out := make([]byte, len(view))
				copy(out, view)
				_ = mod.Close(cctx)
				cancel()
			}
		}
	}
	b.Run("raw-wazero", raw(false))
	b.Run("raw-wazero-tuned", raw(true))

	engine := func(tuned bool) func(b *testing.B) {
		return func(b *testing.B) {
			e := New(Options{Logger: testLogger(b)})
			e.heapMemory, e.defaultRand = !tuned, !tuned
			if err := e.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer e.Close(ctx)
			set, err := e.Load(ctx, []Spec{{Name: "echo", Module: "builtin:echo", FreshInstance: true}})
			if err != nil {
				b.Fatal(err)
			}
			e.Activate(set)
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			for b.Loop() {
				cpu.ops++
				out, err := e.Call(ctx, "echo", input)
				if err != nil {
					b.Fatal(err)
				}
				if len(out) != len(input) {
					b.Fatal("short output")
				}
			}
		}
	}
	b.Run("engine-default", engine(false))
	b.Run("engine-tuned", engine(true))
}
