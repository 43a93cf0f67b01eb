package runtime

// Lock order (outermost first): Engine.mu, task.mu, Engine.codesMu, code.mu.
// Engine.mu serializes Load, Activate, Set.Close and Close (never held during
// a call); task.mu guards a task's pool and in-flight count; Engine.codesMu
// guards the registry of open code objects; code.mu guards the map of live
// instances used by host functions.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"

	"github.com/outpost-edge/outpost/runtime/builtin"
)

// Defaults applied to zero fields of a Spec.
const (
	DefaultMemoryLimit = 16 << 20 // bytes
	DefaultTimeout     = 5 * time.Second
	DefaultConcurrency = 2
	DefaultMaxInput    = 1 << 20 // bytes
	DefaultMaxOutput   = 4 << 20 // bytes
	DefaultLogRate     = 100     // lines a second
	DefaultLogBurst    = 1000    // lines

	pageSize = 65536
	maxPages = 65536
)

// ABI names accepted in Spec.ABI and reported in TaskInfo.ABI.
const (
	ABIAuto    = "auto"
	ABIReactor = "reactor"
	ABICommand = "command"
)

// Options configures an Engine.
type Options struct {
	// CacheDir is the on-disk compilation cache directory; "" keeps compiled
	// code in memory only.
	CacheDir string
	// Logger receives engine events and the guests' stderr lines (with the
	// task name); nil discards them.
	Logger *slog.Logger
	// Registerer, when set, receives the outpost_runtime_* metrics.
	Registerer prometheus.Registerer
	// Host serves the host functions of ABI v1 (publish, call, kv); nil
	// makes them return the "unavailable" code.
	Host Host
	// MemoryBudget bounds the linear memory of all instances together (every
	// task's pool, fresh instances and commands): each live instance counts
	// for the most its memory may reach (the task's memory limit, or the
	// module's declared maximum if lower). An instance that would pass the
	// budget is not created: the call fails with kind memory (a Load fails,
	// naming the task). 0: no budget.
	MemoryBudget uint64
	// MaxPublish is the largest MQTT message a task may publish, in bytes
	// of the whole packet: the broker's limit (the coordinator gives
	// devices.MQTTConfig.MessageLimit). A payload over it is refused with
	// too_large before it is copied; a Host refuses a packet over it
	// (topic and header included) with an error wrapping ErrTooLarge.
	// 0: only the Host's check.
	MaxPublish int
}

// Spec describes one task to load.
type Spec struct {
	Name        string
	Module      string        // a file path, or "builtin:echo"
	ABI         string        // "auto" (or ""), "reactor" or "command"
	MemoryLimit uint64        // bytes, rounded down to 64 KiB pages (min 1 page); 0 = 16 MiB
	Timeout     time.Duration // wall-clock limit per call; 0 = 5s
	Concurrency int           // max simultaneous calls and pool size; 0 = 2
	MaxInput    uint64        // largest input in bytes; 0 = 1 MiB
	MaxOutput   uint64        // largest output in bytes; 0 = 4 MiB
	// LogRate and LogBurst bound the lines the task writes to the log
	// (outpost.log, stderr and stdout lines): LogBurst at once, then LogRate
	// a second; more are dropped and counted. 0 = 100 and 1000.
	LogRate  int
	LogBurst int
	// Permissions grant host API access (publish, call, kv); zero: none.
	Permissions Permissions
	// FreshInstance gives every call of a reactor a new instance, closed
	// after the call: no state survives between calls (as for a command).
	// Commands always run fresh.
	FreshInstance bool
	// Libraries are the modules the task (and its libraries) import by
	// module name (docs/abi.md "Dependencies").
	Libraries []Library
	// Files are mounted read-only in the task's WASI filesystem; none: the
	// task sees no filesystem.
	Files []File
}

// Limits are the effective limits of a loaded task.
type Limits struct {
	Concurrency int
	Timeout     time.Duration
	MemoryLimit uint64 // bytes, a whole number of 64 KiB pages
	MaxInput    uint64 // bytes
	MaxOutput   uint64 // bytes
	LogRate     int    // lines a second
	LogBurst    int    // lines
}

// TaskInfo describes a task of the active set.
type TaskInfo struct {
	Name   string
	ABI    string // "reactor" or "command" (resolved)
	Module string // as given in the Spec
	Digest string // sha256 of the module bytes, hex
	Size   int    // module size in bytes
	Limits Limits
	// FreshInstance: every call gets a new instance (Spec.FreshInstance,
	// and always for commands).
	FreshInstance bool
}

// Engine runs task modules. Its methods are safe for concurrent use.
type Engine struct {
	opts      Options
	log       *slog.Logger
	metrics   *metrics
	hostCalls hostCounters // set by Start
	static    bool         // Check mode: compile and validate only, never instantiate

	active   atomic.Pointer[Set]
	closing  atomic.Bool
	inflight atomic.Int64
	memUsed  atomic.Uint64 // bytes reserved by live instances (Options.MemoryBudget)

	// mem allocates the guests' linear memories off the Go heap and reuses
	// them (memalloc.go); heapMemory and defaultRand turn the instantiation
	// tunings off, for benchmarks.
	mem         *memPool
	heapMemory  bool
	defaultRand bool

	mu      sync.Mutex
	started bool
	closed  bool
	cache   wazero.CompilationCache

	codesMu sync.Mutex
	codes   map[*code]struct{}

	libsMu      sync.Mutex
	libs        map[libKey]*libCode
	libRTs      map[uint32]wazero.Runtime // library runtimes by memory limit
	libCompiles atomic.Int64
}

// Set is a compiled, validated task set returned by Load, made active by
// Activate. A Set that is never activated should be released with Close.
type Set struct {
	e         *Engine
	tasks     map[string]*task
	activated bool // guarded by Engine.mu
	released  bool // guarded by Engine.mu
}

// New returns an Engine; it has no side effects. Call Start before Load.
func New(opts Options) *Engine {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{opts: opts, log: log, codes: make(map[*code]struct{}), mem: newMemPool(),
		libs: make(map[libKey]*libCode), libRTs: make(map[uint32]wazero.Runtime)}
	e.active.Store(&Set{})
	return e
}

// Start opens the compilation cache (creating CacheDir if needed) and
// registers the metrics.
// Memory returns the linear memory live instances hold and the engine's
// budget for it (Options.MemoryBudget; 0: none).
func (e *Engine) Memory() (used, budget uint64) {
	return e.memUsed.Load(), e.opts.MemoryBudget
}

func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.started {
		return nil
	}
	if e.opts.CacheDir != "" {
		if err := os.MkdirAll(e.opts.CacheDir, 0o750); err != nil {
			return fmt.Errorf("create compilation cache dir: %w", err)
		}
		c, err := wazero.NewCompilationCacheWithDir(e.opts.CacheDir)
		if err != nil {
			return fmt.Errorf("open compilation cache %s: %w", e.opts.CacheDir, err)
		}
		e.cache = c
	} else {
		e.cache = wazero.NewCompilationCache()
	}
	m, err := newMetrics(e.opts.Registerer)
	if err != nil {
		_ = e.cache.Close(ctx)
		e.cache = nil
		return err
	}
	e.metrics = m
	e.hostCalls = newHostCounters(m.hostCalls)
	if !compilerSupported() {
		e.log.Warn("wazero compiler not supported on this platform, using the interpreter",
			"goos", goruntime.GOOS, "goarch", goruntime.GOARCH)
	}
	e.started = true
	return nil
}

func compilerSupported() bool {
	return goruntime.GOARCH == "amd64" || goruntime.GOARCH == "arm64"
}

// normalized is a Spec with defaults applied and its module bytes read.
type normalized struct {
	spec   Spec
	abi    string // requested: auto, reactor, command
	limits Limits
	pages  uint32
	bin    []byte
	digest [32]byte
	libs   []*libSource // resolved, dependencies first
	files  *filesFS     // nil: no filesystem
}

func (n normalized) key() codeKey {
	return codeKey{digest: n.digest, pages: n.pages, abi: n.abi, libs: libsKey(n.libs)}
}

func normalize(s Spec) (normalized, error) {
	n := normalized{spec: s}
	switch strings.ToLower(s.ABI) {
	case "", ABIAuto:
		n.abi = ABIAuto
	case ABIReactor, ABICommand:
		n.abi = strings.ToLower(s.ABI)
	default:
		return n, fmt.Errorf("unknown abi %q (want auto, reactor or command)", s.ABI)
	}
	if s.Timeout < 0 {
		return n, fmt.Errorf("negative timeout %s", s.Timeout)
	}
	if s.Concurrency < 0 {
		return n, fmt.Errorf("negative concurrency %d", s.Concurrency)
	}
	if err := s.Permissions.check(); err != nil {
		return n, err
	}
	if s.LogRate < 0 || s.LogBurst < 0 {
		return n, fmt.Errorf("negative log rate %d or burst %d", s.LogRate, s.LogBurst)
	}
	n.limits = Limits{Concurrency: s.Concurrency, Timeout: s.Timeout, MemoryLimit: s.MemoryLimit, MaxInput: s.MaxInput, MaxOutput: s.MaxOutput,
		LogRate: s.LogRate, LogBurst: s.LogBurst}
	if n.limits.LogRate == 0 {
		n.limits.LogRate = DefaultLogRate
	}
	if n.limits.LogBurst == 0 {
		n.limits.LogBurst = DefaultLogBurst
	}
	if n.limits.MaxInput == 0 {
		n.limits.MaxInput = DefaultMaxInput
	}
	if n.limits.MaxOutput == 0 {
		n.limits.MaxOutput = DefaultMaxOutput
	}
	if n.limits.Concurrency == 0 {
		n.limits.Concurrency = DefaultConcurrency
	}
	if n.limits.Timeout == 0 {
		n.limits.Timeout = DefaultTimeout
	}
	if n.limits.MemoryLimit == 0 {
		n.limits.MemoryLimit = DefaultMemoryLimit
	}
	pages := min(max(n.limits.MemoryLimit/pageSize, 1), maxPages)
	n.pages = uint32(pages)
	n.limits.MemoryLimit = pages * pageSize

	switch {
	case s.Module == "":
		return n, errors.New("no module given")
	case strings.HasPrefix(s.Module, builtin.Prefix):
		name := strings.TrimPrefix(s.Module, builtin.Prefix)
		b, ok := builtin.Lookup(name)
		if !ok {
			return n, fmt.Errorf("unknown builtin module %q (have %s)", s.Module, strings.Join(builtin.Names(), ", "))
		}
		n.bin = b
	default:
		b, err := os.ReadFile(s.Module)
		if err != nil {
			return n, fmt.Errorf("read module: %w", err)
		}
		n.bin = b
	}
	n.digest = sha256.Sum256(n.bin)
	libs, err := resolveLibraries(s.Name, n.bin, s.Libraries)
	if err != nil {
		return n, err
	}
	n.libs = libs
	if n.files, err = newFilesFS(s.Files); err != nil {
		return n, err
	}
	return n, nil
}

// Load compiles and validates every spec and returns the resulting Set
// (not yet active). Code objects of the active set with the same digest,
// memory limit and ABI are reused, and a task of the active set with the same
// name, code and limits is carried over with its warm instances. The error
// names every failing task.
func (e *Engine) Load(ctx context.Context, specs []Spec) (*Set, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	if !e.started {
		e.mu.Unlock()
		return nil, ErrNotStarted
	}
	set := &Set{e: e, tasks: make(map[string]*task, len(specs))}
	old := e.active.Load()
	// Code objects available for reuse: the active set's and this load's.
	avail := make(map[codeKey]*code)
	for _, t := range old.tasks {
		avail[t.code.key] = t.code
	}

	var errs []error
	seen := make(map[string]bool, len(specs))
	for i, s := range specs {
		if s.Name == "" {
			errs = append(errs, fmt.Errorf("task #%d: no name", i+1))
			continue
		}
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("task %q: defined more than once", s.Name))
			continue
		}
		seen[s.Name] = true
		n, err := normalize(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("task %q: %w", s.Name, err))
			continue
		}
		key := n.key()
		if t := old.tasks[s.Name]; t != nil && t.code.key == key && t.limits == n.limits && t.module == s.Module && t.grants.equal(s.Permissions) && t.fresh == s.FreshInstance && t.files.equal(n.files) {
			t.refs++ // carried over: same code, same limits, warm pool kept
			set.tasks[s.Name] = t
			continue
		}
		c := avail[key]
		if c == nil {
			c, err = e.compile(ctx, n)
			if err != nil {
				errs = append(errs, fmt.Errorf("task %q: %w", s.Name, err))
				continue
			}
			avail[key] = c
		} else {
			c.refs.Add(1)
		}
		t := newTask(e, c, n)
		t.refs = 1
		set.tasks[s.Name] = t
		if !e.static && c.abi == ABIReactor {
			if err := t.warm(ctx); err != nil {
				errs = append(errs, fmt.Errorf("task %q: %w", s.Name, err))
			}
		}
	}
	if len(errs) > 0 {
		// Undo: drop this set's references; carried-over tasks stay alive
		// through the active set.
		var retire []*task
		for _, t := range set.tasks {
			t.refs--
			if t.refs == 0 {
				retire = append(retire, t)
			}
		}
		set.released = true
		e.mu.Unlock()
		for _, t := range retire {
			t.retire()
		}
		return nil, errors.Join(errs...)
	}
	e.mu.Unlock()
	return set, nil
}

// Activate makes set the active task set. Calls in flight finish on the
// instances of the previous set; tasks that are no longer used are closed
// once idle. Activating a set twice, a released set or after Close is a no-op.
func (e *Engine) Activate(set *Set) {
	if set == nil {
		return
	}
	e.mu.Lock()
	if e.closed || set.activated || set.released {
		e.mu.Unlock()
		e.log.Warn("ignoring activation of a task set that was already activated or released")
		return
	}
	set.activated = true
	old := e.active.Swap(set)
	retire := e.releaseLocked(old)
	e.mu.Unlock()
	for _, t := range retire {
		t.retire()
	}
	e.log.Info("task set activated", "tasks", len(set.tasks))
}

// Close releases a Set returned by Load that was never activated. It is a
// no-op for an activated set.
func (s *Set) Close() {
	if s == nil || s.e == nil {
		return
	}
	e := s.e
	e.mu.Lock()
	if s.activated || s.released {
		e.mu.Unlock()
		return
	}
	retire := e.releaseLocked(s)
	e.mu.Unlock()
	for _, t := range retire {
		t.retire()
	}
}

// releaseLocked drops the set's reference on its tasks and returns those no
// longer referenced by any set; the caller retires them after unlocking.
func (e *Engine) releaseLocked(s *Set) []*task {
	if s.released {
		return nil
	}
	s.released = true
	var retire []*task
	for _, t := range s.tasks {
		t.refs--
		if t.refs == 0 {
			retire = append(retire, t)
		}
	}
	return retire
}

// Call runs one call of task with input and returns its output. The deadline
// of the guest's run is the earlier of ctx's and the task's timeout. Failures
// are *CallError values; an unknown task gives an error wrapping
// ErrUnknownTask.
func (e *Engine) Call(ctx context.Context, task string, input []byte) ([]byte, error) {
	return e.run(ctx, task, input, false)
}

// Resume runs the next step of a call that suspended (a *Suspended error of
// Call or Resume): the reactor's outpost_resume with the resume document
// (EncodeResume: the state the guest kept and the results it waited for),
// on any instance of the task. It returns as Call does, and may suspend
// again.
func (e *Engine) Resume(ctx context.Context, task string, doc []byte) ([]byte, error) {
	return e.run(ctx, task, doc, true)
}

func (e *Engine) run(ctx context.Context, task string, input []byte, resume bool) ([]byte, error) {
	e.inflight.Add(1)
	defer e.inflight.Add(-1)
	if e.closing.Load() {
		return nil, ErrClosed
	}
	// A task retired between loading the set and entering it has already been
	// replaced in the active set: look again.
	for range 100 {
		t := e.active.Load().tasks[task]
		if t == nil {
			break
		}
		if !t.enter() {
			continue
		}
		out, err := t.call(ctx, input, resume)
		t.exit()
		return out, err
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownTask, task)
}

// Limits returns the effective limits of a task of the active set.
func (e *Engine) Limits(task string) (Limits, bool) {
	t := e.active.Load().tasks[task]
	if t == nil {
		return Limits{}, false
	}
	return t.limits, true
}

// Tasks describes the tasks of the active set, sorted by name.
func (e *Engine) Tasks() []TaskInfo {
	s := e.active.Load()
	out := make([]TaskInfo, 0, len(s.tasks))
	for _, t := range s.tasks {
		out = append(out, t.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Task describes one task of the active set.
func (e *Engine) Task(name string) (TaskInfo, bool) {
	t := e.active.Load().tasks[name]
	if t == nil {
		return TaskInfo{}, false
	}
	return t.info(), true
}

func (t *task) info() TaskInfo {
	return TaskInfo{
		Name:   t.name,
		ABI:    t.code.abi,
		Module: t.module,
		Digest: hex.EncodeToString(t.code.key.digest[:]),
		Size:   t.code.size,
		Limits: t.limits,

		FreshInstance: t.fresh || t.code.abi == ABICommand,
	}
}

// reserveMemory counts n bytes of a new instance against the memory budget;
// it fails, changing nothing, when they do not fit.
func (e *Engine) reserveMemory(n uint64) bool {
	for {
		used := e.memUsed.Load()
		if b := e.opts.MemoryBudget; b > 0 && used+n > b {
			return false
		}
		if e.memUsed.CompareAndSwap(used, used+n) {
			e.metrics.memReserved.Add(float64(n))
			return true
		}
	}
}

func (e *Engine) releaseMemory(n uint64) {
	e.memUsed.Add(-n)
	e.metrics.memReserved.Sub(float64(n))
}

// Close stops accepting calls, waits for calls in flight until ctx is done,
// then closes every instance, runtime and the compilation cache. Calls still
// running when ctx is done are stopped.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.closing.Store(true)
	old := e.active.Swap(&Set{activated: true})
	retire := e.releaseLocked(old)
	cache := e.cache
	e.mu.Unlock()
	for _, t := range retire {
		t.retire()
	}

	var errs []error
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
wait:
	for e.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("wait for calls in flight: %w", ctx.Err()))
			break wait
		case <-tick.C:
		}
	}
	// From here freed memories are unmapped (or, with guests still running,
	// only released: one may still be leaving its memory).
	e.mem.close(e.inflight.Load() > 0)
	e.codesMu.Lock()
	codes := make([]*code, 0, len(e.codes))
	for c := range e.codes {
		codes = append(codes, c)
	}
	e.codes = map[*code]struct{}{}
	e.codesMu.Unlock()
	closeCtx := context.WithoutCancel(ctx)
	for _, c := range codes {
		if err := c.closeRuntime(closeCtx); err != nil {
			errs = append(errs, fmt.Errorf("close runtime: %w", err))
		}
	}
	if err := e.closeLibraries(closeCtx); err != nil {
		errs = append(errs, err)
	}
	if cache != nil {
		if err := cache.Close(closeCtx); err != nil {
			errs = append(errs, fmt.Errorf("close compilation cache: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Check compiles and validates specs in memory (no disk writes, no guest code
// run) and reports every failing task, in the same format as Load.
func Check(ctx context.Context, specs []Spec) error {
	e := New(Options{})
	e.static = true
	if err := e.Start(ctx); err != nil {
		return err
	}
	_, err := e.Load(ctx, specs)
	if cerr := e.Close(ctx); err == nil {
		err = cerr
	}
	return err
}
