package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Names of the ABI (docs/abi.md).
const (
	hostModule        = "outpost"
	wasiModule        = wasi_snapshot_preview1.ModuleName
	exportAlloc       = "outpost_alloc"
	exportInputBuffer = "outpost_input_buffer"
	exportHandle      = "outpost_handle"
	exportResume      = "outpost_resume"
	exportInit        = "_initialize"
	exportStart       = "_start"
	exportMemory      = "memory"

	// maxFailMessage caps the message a guest reports with outpost.fail, and
	// the stderr kept as the message of a failed command.
	maxFailMessage = 4096
)

// codeKey identifies a code object: the same bytes compiled for the same
// memory limit (a per-Runtime setting in wazero) and ABI.
type codeKey struct {
	digest [32]byte
	pages  uint32
	abi    string // requested ABI
	libs   string // the resolved libraries (libsKey)
}

// code is a compiled module in its own wazero.Runtime (with WASI and the
// outpost host module instantiated), shared by the tasks that use it.
type code struct {
	e        *Engine
	key      codeKey
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	abi      string // resolved: reactor or command
	hasInit  bool
	// inputBuffer: the reactor exports outpost_input_buffer, used instead of
	// outpost_alloc (docs/abi.md "Reactor").
	inputBuffer bool
	// hasResume: the reactor exports outpost_resume, so its calls may
	// suspend (docs/abi.md "Suspending a call").
	hasResume bool
	// wasi and host: the runtime has WASI and the outpost host module (the
	// module or a library imports them). Without WASI an instance needs no
	// stdio; without the host module no host function looks it up.
	wasi, host bool
	size       int
	refs       atomic.Int32 // tasks using it
	libs       []linked     // libraries, dependencies first

	mu    sync.Mutex
	insts map[api.Module]*instance // live instances, for host functions
}

func (e *Engine) runtimeConfig(pages uint32) wazero.RuntimeConfig {
	var cfg wazero.RuntimeConfig
	if compilerSupported() {
		cfg = wazero.NewRuntimeConfigCompiler()
	} else {
		cfg = wazero.NewRuntimeConfig()
	}
	return cfg.
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(pages).
		WithCompilationCache(e.cache)
}

// compile builds a new code object for n, validating its imports and exports.
// The returned code holds one reference.
func (e *Engine) compile(ctx context.Context, n normalized) (_ *code, err error) {
	rt := wazero.NewRuntimeWithConfig(ctx, e.runtimeConfig(n.pages))
	c := &code{e: e, key: n.key(), rt: rt, size: len(n.bin),
		insts: make(map[api.Module]*instance)}
	defer func() {
		if err != nil {
			_ = c.closeRuntime(context.WithoutCancel(ctx))
			c.releaseLibs()
		}
	}()
	// WASI and the host module only where the module imports them:
	// instantiating them costs more than a tiny module's compile. With
	// libraries both are always there: without them, linking a library
	// compiled in the library runtime fails with a signature mismatch
	// (wazero numbers function types per runtime). Bytes that do not parse
	// get both; the compile names the error.
	c.wasi, c.host = true, true
	if imps, err := parseImports(n.bin); err == nil && len(n.libs) == 0 {
		c.wasi, c.host = importsModule(imps, wasiModule), importsModule(imps, hostModule)
	}
	if c.wasi {
		if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
			return nil, fmt.Errorf("instantiate wasi: %w", err)
		}
	}
	if c.host {
		if err := c.instantiateHostModule(ctx); err != nil {
			return nil, fmt.Errorf("instantiate host module: %w", err)
		}
	}

	if err := e.link(ctx, c, n); err != nil {
		return nil, err
	}

	start := time.Now()
	compiled, err := rt.CompileModule(ctx, n.bin)
	if err != nil {
		return nil, fmt.Errorf("compile module: %w", err)
	}
	e.metrics.compileSeconds.Observe(time.Since(start).Seconds())
	c.compiled = compiled
	if err := c.validate(n.abi, n.bin); err != nil {
		return nil, err
	}
	c.refs.Store(1)
	e.codesMu.Lock()
	e.codes[c] = struct{}{}
	e.codesMu.Unlock()
	return c, nil
}

// release drops one reference; the last one closes the runtime.
func (c *code) release() {
	if c.refs.Add(-1) != 0 {
		return
	}
	c.e.codesMu.Lock()
	_, open := c.e.codes[c]
	delete(c.e.codes, c)
	c.e.codesMu.Unlock()
	if open { // else Engine.Close already closed it
		_ = c.closeRuntime(context.Background())
	}
	c.releaseLibs()
}

// closeRuntime closes the compiled module and the code's runtime. The
// compiled module needs its own Close: closing a runtime that shares the
// engine's compilation cache keeps its compiled code (executable memory) in
// the cache's engine until the engine closes, so every replaced version of
// a task would stay mapped (TestReplacedCodeIsUnmapped).
func (c *code) closeRuntime(ctx context.Context) error {
	var errs []error
	if c.compiled != nil {
		errs = append(errs, c.compiled.Close(ctx))
	}
	errs = append(errs, c.rt.Close(ctx))
	return errors.Join(errs...)
}

// releaseLibs drops the code's references on its libraries.
func (c *code) releaseLibs() {
	for _, l := range c.libs {
		c.e.releaseLibrary(l.lib)
	}
	c.libs = nil
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

type signature struct{ params, results []api.ValueType }

func (s signature) String() string {
	return fmt.Sprintf("(%s) -> (%s)", typeList(s.params), typeList(s.results))
}

func typeList(ts []api.ValueType) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = api.ValueTypeName(t)
	}
	return strings.Join(names, ", ")
}

func sigOf(d api.FunctionDefinition) signature {
	return signature{params: d.ParamTypes(), results: d.ResultTypes()}
}

func (s signature) equal(o signature) bool {
	return string(s.params) == string(o.params) && string(s.results) == string(o.results)
}

var (
	sigAlloc  = signature{params: []api.ValueType{i32}, results: []api.ValueType{i32}}
	sigHandle = signature{params: []api.ValueType{i32, i32}, results: []api.ValueType{i64}}
	// sigInputBuffer: (size) -> (ptr << 32) | capacity.
	sigInputBuffer = signature{params: []api.ValueType{i32}, results: []api.ValueType{i64}}
	sigVoid        = signature{}
)

// importsModule reports whether imps has an import from module.
func importsModule(imps []wasmImport, module string) bool {
	for _, imp := range imps {
		if imp.module == module {
			return true
		}
	}
	return false
}

// validate checks the module's imports and exports against the ABI and sets
// the resolved ABI.
func (c *code) validate(requested string, bin []byte) error {
	// Imports: every kind (functions, memories, tables, globals) must come
	// from wasi_snapshot_preview1, outpost or a library, and exist there.
	imps, err := parseImports(bin)
	if err != nil {
		return fmt.Errorf("read imports: %w", err)
	}
	libs := make(map[string]*libCode, len(c.libs))
	for _, l := range c.libs {
		libs[l.name] = l.lib
	}
	if err := checkImports(c.rt, c.compiled, imps, libs, true); err != nil {
		return err
	}

	exports := c.compiled.ExportedFunctions()
	_, hasHandle := exports[exportHandle]
	_, hasStart := exports[exportStart]
	abi := requested
	if abi == ABIAuto {
		switch {
		case hasHandle:
			abi = ABIReactor
		case hasStart:
			abi = ABICommand
		default:
			return fmt.Errorf("module exports neither %s nor %s", exportHandle, exportStart)
		}
	}
	checkExport := func(name string, want signature, required bool) error {
		d, ok := exports[name]
		if !ok {
			if required {
				return fmt.Errorf("%s module does not export %s", abi, name)
			}
			return nil
		}
		if got := sigOf(d); !got.equal(want) {
			return fmt.Errorf("export %s has signature %s, want %s", name, got, want)
		}
		return nil
	}
	switch abi {
	case ABIReactor:
		if err := errors.Join(
			checkExport(exportHandle, sigHandle, true),
			checkExport(exportAlloc, sigAlloc, true),
			checkExport(exportInputBuffer, sigInputBuffer, false),
			checkExport(exportResume, sigHandle, false),
			checkExport(exportInit, sigVoid, false),
		); err != nil {
			return err
		}
		if _, ok := c.compiled.ExportedMemories()[exportMemory]; !ok {
			return fmt.Errorf("reactor module does not export its memory as %q", exportMemory)
		}
		_, c.hasInit = exports[exportInit]
		_, c.inputBuffer = exports[exportInputBuffer]
		_, c.hasResume = exports[exportResume]
	case ABICommand:
		if err := checkExport(exportStart, sigVoid, true); err != nil {
			return err
		}
	}
	c.abi = abi
	return nil
}
