package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/runtime/builtin"
)

// BenchmarkDeploy measures deploy-to-first-call: the module's bytes stored as
// a blob, deployed through the admin Registry (Coordinator.Deploy: manifest,
// registry, compile, validate, warm instance, persist, activate), then the
// first call through the scheduler; once with an empty compilation cache
// (cold) and once with the module in the on-disk cache (warm-disk: a daemon
// that compiled it before, for example before a restart). Between iterations
// the task is removed (which drops its compiled code from memory) and, for
// cold, the cache directory's files are deleted (its directories stay, on
// both sides).
//
// The baseline, raw-wazero, does the same with wazero alone: a new runtime
// with the daemon's runtime config (compiler, CloseOnContextDone, the task's
// memory limit, one compilation cache in a directory for the whole
// benchmark, its files deleted for cold), WASI if
// the module imports it, compile, instantiate (running _initialize), and the
// call of outpost_alloc and outpost_handle.
//
// Modules: tiny (builtin:echo with a custom section, 148 bytes) and go (examples/tasks go-echo, a
// Go wasip1 reactor of about 1.9 MB; scripts/build-examples.sh builds it).
func BenchmarkDeploy(b *testing.B) {
	echo, _ := builtin.Lookup("echo")
	// The config's echo task already holds builtin:echo's code: a custom
	// section makes other bytes (a new digest) for the same module, so the
	// deploy compiles.
	tiny := append(append([]byte(nil), echo...), 0, 7, 5, 'b', 'e', 'n', 'c', 'h', 0)
	goEcho, err := os.ReadFile(filepath.Join("..", "examples", "tasks", "build", "go-echo.wasm"))
	if err != nil {
		b.Fatalf("%v (run scripts/build-examples.sh)", err)
	}
	input := []byte("0123456789abcdef")
	for _, m := range []struct {
		name string
		bin  []byte
	}{{"tiny", tiny}, {"go", goEcho}} {
		for _, warm := range []bool{false, true} {
			cache := "cold"
			if warm {
				cache = "warm-disk"
			}
			b.Run("raw-wazero/"+m.name+"/"+cache, func(b *testing.B) {
				dir := b.TempDir()
				cache, err := wazero.NewCompilationCacheWithDir(dir)
				if err != nil {
					b.Fatal(err)
				}
				defer cache.Close(context.Background())
				rawDeploy(b, cache, m.bin, input) // fills the disk cache (warm)
				for b.Loop() {
					if !warm {
						b.StopTimer()
						emptyCache(b, dir)
						b.StartTimer()
					}
					rawDeploy(b, cache, m.bin, input)
				}
			})
			b.Run("outpost/"+m.name+"/"+cache, func(b *testing.B) {
				cfg := testConfig(b)
				c := startCoordinator(b, cfg)
				cacheDir := filepath.Join(cfg.DataDir, "cache", "wasm")
				ctx := context.Background()
				deploy := func() {
					digest, size, err := c.StoreBlob(ctx, bytes.NewReader(m.bin))
					if err != nil {
						b.Fatal(err)
					}
					if _, err := c.Deploy(ctx, "bench", admin.Upload{Module: digest, Size: size}); err != nil {
						b.Fatal(err)
					}
					r, err := c.Call(ctx, calls.New("bench", input, calls.Source{Kind: "bench"}))
					if err != nil || !r.OK() || !bytes.Equal(r.Output, input) {
						b.Fatalf("first call: %+v %v", r, err)
					}
				}
				deploy() // fills the disk cache (warm) and the blob store
				for b.Loop() {
					b.StopTimer()
					if err := c.Remove(ctx, "bench"); err != nil {
						b.Fatal(err)
					}
					if !warm {
						emptyCache(b, cacheDir)
					}
					b.StartTimer()
					deploy()
				}
			})
		}
	}
}

// rawDeploy compiles, instantiates and calls bin with wazero alone in a new
// runtime sharing cache (as the daemon's runtimes share one), then closes the
// compiled module and the runtime: the code leaves the cache's memory, and
// stays on its disk.
func rawDeploy(b *testing.B, cache wazero.CompilationCache, bin []byte, input []byte) {
	ctx := context.Background()
	pages := uint32(tasks.Defaults.Limits.Memory / 65536)
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(true).
		WithMemoryLimitPages(pages).WithCompilationCache(cache))
	defer rt.Close(ctx)
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		b.Fatal(err)
	}
	defer compiled.Close(ctx)
	for _, imp := range compiled.ImportedFunctions() {
		if mod, _, _ := imp.Import(); mod == wasi_snapshot_preview1.ModuleName {
			wasi_snapshot_preview1.MustInstantiate(ctx, rt)
			break
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	mod, err := rt.InstantiateModule(cctx, compiled, wazero.NewModuleConfig().WithName("").
		WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader).WithStartFunctions())
	if err != nil {
		b.Fatal(err)
	}
	if init := mod.ExportedFunction("_initialize"); init != nil {
		if err := init.CallWithStack(cctx, nil); err != nil {
			b.Fatal(err)
		}
	}
	stack := []uint64{uint64(len(input)), 0}
	if err := mod.ExportedFunction("outpost_alloc").CallWithStack(cctx, stack); err != nil {
		b.Fatal(err)
	}
	ptr := api.DecodeU32(stack[0])
	if !mod.Memory().Write(ptr, input) {
		b.Fatal("write input")
	}
	stack[0], stack[1] = uint64(ptr), uint64(len(input))
	if err := mod.ExportedFunction("outpost_handle").CallWithStack(cctx, stack); err != nil {
		b.Fatal(err)
	}
	out, ok := mod.Memory().Read(uint32(stack[0]>>32), uint32(stack[0]))
	if !ok || !bytes.Equal(out, input) {
		b.Fatalf("output %q", out)
	}
}

// emptyCache deletes the files of a compilation cache directory, keeping its
// directories (wazero creates them only when it opens the cache).
func emptyCache(b *testing.B, dir string) {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Remove(path)
	})
	if err != nil {
		b.Fatal(err)
	}
}
