package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Library is a module a task (or another library) imports by module name
// (docs/abi.md "Dependencies").
type Library struct {
	Name   string // the import module name
	Module string // file path
	Digest string // sha256 of the module bytes, hex; "" = not checked
}

// libSource is a library of a Spec read from disk.
type libSource struct {
	Library
	index   int // position in Spec.Libraries
	bin     []byte
	digest  [32]byte
	imports []string // module names imported besides WASI, in order
}

func (l *libSource) hexDigest() string { return hex.EncodeToString(l.digest[:]) }

// importedModules lists the distinct module names bin imports, in order,
// except WASI.
func importedModules(bin []byte) ([]string, []wasmImport, error) {
	imps, err := parseImports(bin)
	if err != nil {
		return nil, nil, fmt.Errorf("read imports: %w", err)
	}
	var out []string
	seen := map[string]bool{}
	for _, imp := range imps {
		if imp.module == wasiModule || seen[imp.module] {
			continue
		}
		seen[imp.module] = true
		out = append(out, imp.module)
	}
	return out, imps, nil
}

// resolveLibraries reads the libraries of a task and orders those its import
// graph reaches, dependencies first. It refuses a module no library
// provides, a cycle and two versions of one library, naming the chain.
func resolveLibraries(task string, bin []byte, libs []Library) ([]*libSource, error) {
	if len(libs) == 0 {
		return nil, nil
	}
	byName := map[string][]*libSource{}
	for i, l := range libs {
		switch {
		case l.Name == "":
			return nil, fmt.Errorf("library #%d: no name", i+1)
		case l.Name == wasiModule || l.Name == hostModule:
			return nil, fmt.Errorf("library %q: the name is reserved", l.Name)
		case l.Module == "":
			return nil, fmt.Errorf("library %q: no module given", l.Name)
		}
		b, err := os.ReadFile(l.Module)
		if err != nil {
			return nil, fmt.Errorf("library %q: read module: %w", l.Name, err)
		}
		src := &libSource{Library: l, index: i, bin: b, digest: sha256.Sum256(b)}
		if l.Digest != "" && !strings.EqualFold(strings.TrimPrefix(l.Digest, "sha256:"), src.hexDigest()) {
			return nil, fmt.Errorf("library %q: module %s has digest %s, want %s", l.Name, l.Module, src.hexDigest(), l.Digest)
		}
		if src.imports, _, err = importedModules(b); err != nil {
			return nil, fmt.Errorf("library %q: %w", l.Name, err)
		}
		dup := false
		for _, o := range byName[l.Name] {
			dup = dup || o.digest == src.digest
		}
		if !dup {
			byName[l.Name] = append(byName[l.Name], src)
		}
	}
	taskImports, _, err := importedModules(bin)
	if err != nil {
		return nil, err
	}

	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	chains := map[string][]string{} // every chain reaching a library
	var order []*libSource
	var visit func(chain []string) error
	visit = func(chain []string) error {
		name := chain[len(chain)-1]
		path := strings.Join(chain, " -> ")
		chains[name] = append(chains[name], path)
		switch state[name] {
		case visiting:
			return fmt.Errorf("import cycle: %s", path)
		case done:
			return nil
		}
		vs := byName[name]
		if len(vs) == 0 {
			if len(chain) == 2 {
				return fmt.Errorf("imports module %q which no library provides", name)
			}
			return fmt.Errorf("imports module %q which no library provides (%s)", name, path)
		}
		state[name] = visiting
		l := vs[0]
		for _, imp := range l.imports {
			if imp == hostModule {
				return fmt.Errorf("library %q (%s) imports module %s: libraries may import only %s and other libraries",
					name, path, hostModule, wasiModule)
			}
			if err := visit(append(chain[:len(chain):len(chain)], imp)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, l)
		return nil
	}
	for _, imp := range taskImports {
		if imp == hostModule {
			continue
		}
		if err := visit([]string{task, imp}); err != nil {
			return nil, err
		}
	}
	// Version conflicts: a library of the graph given with two digests.
	var errs []error
	for _, l := range order {
		vs := byName[l.Name]
		if len(vs) < 2 {
			continue
		}
		desc := make([]string, len(vs))
		for i, v := range vs {
			desc[i] = fmt.Sprintf("sha256:%.12s (libraries[%d], module %s)", v.hexDigest(), v.index, v.Module)
		}
		errs = append(errs, fmt.Errorf("version conflict: library %q is given as %s; required by %s",
			l.Name, strings.Join(desc, " and "), strings.Join(chains[l.Name], " and ")))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return order, nil
}

// libsKey identifies a resolved library list for codeKey.
func libsKey(libs []*libSource) string {
	var b strings.Builder
	for _, l := range libs {
		fmt.Fprintf(&b, "%s=%s;", l.Name, l.hexDigest())
	}
	return b.String()
}

// libKey identifies a compiled library: its bytes and the memory limit it
// was compiled for.
type libKey struct {
	digest [32]byte
	pages  uint32
}

// libCode is a compiled library, shared by every code object that links it.
// It is compiled in a library Runtime of the engine (one per memory limit,
// sharing the compilation cache and so the wazero engine) and instantiated
// in the Runtime of each code object that links it.
type libCode struct {
	key      libKey
	compiled wazero.CompiledModule
	exports  map[string]api.FunctionDefinition
	hasInit  bool
	memory   bool // defines a linear memory
	refs     int  // guarded by Engine.libsMu
}

// linked is a library of a code object, in instantiation order.
type linked struct {
	name string
	lib  *libCode
}

// libRuntime returns the library Runtime for pages; libsMu is held.
func (e *Engine) libRuntimeLocked(ctx context.Context, pages uint32) (wazero.Runtime, error) {
	if rt := e.libRTs[pages]; rt != nil {
		return rt, nil
	}
	rt := wazero.NewRuntimeWithConfig(ctx, e.runtimeConfig(pages))
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("instantiate wasi: %w", err)
	}
	e.libRTs[pages] = rt
	return rt, nil
}

// library returns the compiled library for src, compiling it on first use.
// The caller holds one reference; release it with releaseLibrary.
func (e *Engine) library(ctx context.Context, src *libSource, pages uint32) (*libCode, error) {
	e.libsMu.Lock()
	defer e.libsMu.Unlock()
	key := libKey{digest: src.digest, pages: pages}
	if l := e.libs[key]; l != nil {
		l.refs++
		return l, nil
	}
	rt, err := e.libRuntimeLocked(ctx, pages)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	compiled, err := rt.CompileModule(ctx, src.bin)
	if err != nil {
		return nil, fmt.Errorf("compile library %q: %w", src.Name, err)
	}
	e.metrics.compileSeconds.Observe(time.Since(start).Seconds())
	e.libCompiles.Add(1)
	e.metrics.libCompiles.Inc()
	l := &libCode{key: key, compiled: compiled, exports: compiled.ExportedFunctions(), refs: 1, memory: definesMemory(src.bin)}
	if d, ok := l.exports[exportInit]; ok && sigOf(d).equal(sigVoid) {
		l.hasInit = true
	}
	e.libs[key] = l
	return l, nil
}

func (e *Engine) releaseLibrary(l *libCode) {
	e.libsMu.Lock()
	l.refs--
	closeIt := l.refs == 0 && e.libs[l.key] == l
	if closeIt {
		delete(e.libs, l.key)
	}
	e.libsMu.Unlock()
	if closeIt {
		_ = l.compiled.Close(context.Background())
	}
}

// closeLibraries closes the library runtimes at Engine.Close.
func (e *Engine) closeLibraries(ctx context.Context) error {
	e.libsMu.Lock()
	rts := e.libRTs
	e.libRTs = map[uint32]wazero.Runtime{}
	e.libs = map[libKey]*libCode{}
	e.libsMu.Unlock()
	var errs []error
	for _, rt := range rts {
		if err := rt.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close library runtime: %w", err))
		}
	}
	return errors.Join(errs...)
}

// LibraryCompiles reports how many library modules the engine compiled
// (a library shared by tasks is compiled once per memory limit).
func (e *Engine) LibraryCompiles() int64 { return e.libCompiles.Load() }

// definesMemory reports whether bin has a memory section with a memory.
func definesMemory(bin []byte) bool {
	if len(bin) < 8 {
		return false
	}
	r := &reader{b: bin[8:]}
	for r.more() {
		id := r.byte()
		size := r.u32()
		if r.err != nil || uint64(size) > uint64(len(r.b)) {
			return true // be conservative
		}
		body := r.b[:size]
		r.b = r.b[size:]
		if id == 5 {
			s := &reader{b: body}
			return s.u32() > 0
		}
	}
	return false
}

// checkLibraryImports validates the function imports of compiled against
// WASI (in rt) and the libraries linked so far.
func checkImports(rt wazero.Runtime, compiled wazero.CompiledModule, imps []wasmImport, libs map[string]*libCode, allowHost bool) error {
	for _, imp := range imps {
		_, isLib := libs[imp.module]
		switch {
		case imp.module != wasiModule && !isLib && !(allowHost && imp.module == hostModule):
			if allowHost {
				return fmt.Errorf("module imports %s %s.%s: only %s and %s imports are allowed",
					imp.kind, imp.module, imp.name, wasiModule, hostModule)
			}
			return fmt.Errorf("module imports %s %s.%s: only %s and library imports are allowed",
				imp.kind, imp.module, imp.name, wasiModule)
		case imp.kind != "function":
			return fmt.Errorf("module imports %s %s.%s: only functions can be imported", imp.kind, imp.module, imp.name)
		}
	}
	for _, f := range compiled.ImportedFunctions() {
		mod, name, _ := f.Import()
		var have api.FunctionDefinition
		if l := libs[mod]; l != nil {
			have = l.exports[name]
		} else if host := rt.Module(mod); host != nil {
			have = host.ExportedFunctionDefinitions()[name]
		}
		if have == nil {
			return fmt.Errorf("module imports unknown function %s.%s", mod, name)
		}
		if want, got := sigOf(have), sigOf(f); !want.equal(got) {
			return fmt.Errorf("module imports %s.%s with signature %s, want %s", mod, name, got, want)
		}
	}
	return nil
}

// link compiles (or reuses) the libraries of n for c, checking each one's
// imports.
func (e *Engine) link(ctx context.Context, c *code, n normalized) error {
	byName := map[string]*libCode{}
	for _, src := range n.libs {
		l, err := e.library(ctx, src, n.pages)
		if err != nil {
			return err
		}
		c.libs = append(c.libs, linked{name: src.Name, lib: l})
		_, imps, err := importedModules(src.bin)
		if err != nil {
			return fmt.Errorf("library %q: %w", src.Name, err)
		}
		if err := checkImports(c.rt, l.compiled, imps, byName, false); err != nil {
			return fmt.Errorf("library %q: %w", src.Name, err)
		}
		byName[src.Name] = l
	}
	return nil
}

// libReserve is what the library instances of one task instance count
// against the memory budget: the limit for each library with a memory, or
// its declared maximum if lower.
func (c *code) libReserve(limit uint64) uint64 {
	var n uint64
	for _, l := range c.libs {
		if !l.lib.memory {
			continue
		}
		r := limit
		for _, m := range l.lib.compiled.ExportedMemories() {
			if mx, ok := m.Max(); ok {
				r = min(r, uint64(mx)*pageSize)
			}
		}
		n += r
	}
	return n
}

// instantiate creates an instance of the task's module with cfg, preceded
// by one instance of each library (anonymous, private to this instance:
// library state is never shared between task instances). Imports of library
// names resolve to these instances through wazero's import resolver.
func (t *task) instantiate(ctx context.Context, cfg wazero.ModuleConfig) (api.Module, []api.Module, error) {
	c := t.code
	if len(c.libs) == 0 {
		mod, err := c.rt.InstantiateModule(ctx, c.compiled, cfg)
		return mod, nil, err
	}
	byName := make(map[string]api.Module, len(c.libs))
	rctx := experimental.WithImportResolver(ctx, func(name string) api.Module { return byName[name] })
	libs := make([]api.Module, 0, len(c.libs))
	fail := func(err error) (api.Module, []api.Module, error) {
		closeModules(libs)
		return nil, nil, err
	}
	for _, l := range c.libs {
		m, err := c.rt.InstantiateModule(rctx, l.lib.compiled, cfg.WithName(""))
		if err != nil {
			return fail(fmt.Errorf("library %q: %w", l.name, err))
		}
		libs = append(libs, m)
		if l.lib.hasInit {
			if err := m.ExportedFunction(exportInit).CallWithStack(ctx, nil); err != nil {
				return fail(fmt.Errorf("library %q: %s: %w", l.name, exportInit, err))
			}
		}
		byName[l.name] = m
	}
	mod, err := c.rt.InstantiateModule(rctx, c.compiled, cfg)
	if err != nil {
		return fail(err)
	}
	return mod, libs, nil
}

// closeModules closes library instances, last linked first.
func closeModules(mods []api.Module) {
	for i := len(mods) - 1; i >= 0; i-- {
		_ = mods[i].Close(context.Background())
	}
}
