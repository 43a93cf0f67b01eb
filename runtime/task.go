package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// task is one named task of one or more sets: a code object, its limits and
// its pool of reactor instances.
type task struct {
	e      *Engine
	name   string
	module string
	code   *code
	limits Limits
	perms  perms
	grants Permissions // as given, to tell whether a reload changes them
	fresh  bool        // a new reactor instance per call (Spec.FreshInstance)
	files  *filesFS    // mounted read-only; nil: no filesystem
	// memReserve is what one instance counts against the memory budget.
	memReserve uint64
	log        *slog.Logger
	logs       *logLimiter // the guest's lines in log
	base       wazero.ModuleConfig
	sem        chan struct{} // one token per call running
	refs       int           // sets holding the task; guarded by Engine.mu

	instancesCreated prometheus.Counter
	calls            prometheus.Counter

	mu       sync.Mutex
	idle     []*instance
	stdio    []*stdio // kept for the next instance (fresh instances come and go)
	inflight int
	retired  bool
	closed   bool
}

// instance is one reactor instance, used by one call at a time.
type instance struct {
	task   *task
	mod    api.Module
	mem    api.Memory
	alloc  api.Function
	handle api.Function
	resume api.Function // outpost_resume; nil when not exported
	// inbuf is outpost_input_buffer (nil: the module uses outpost_alloc);
	// [bufPtr, bufPtr+bufCap) is the input buffer it last gave, valid once
	// hasBuf is set.
	inbuf          api.Function
	bufPtr, bufCap uint32
	hasBuf         bool
	stack          []uint64
	limit          uint64 // bytes its memory may reach
	io             *stdio
	libs           []api.Module // this instance's library instances

	// Set by host functions during a call.
	failed  bool
	failMsg string
	hostErr error
	held    []byte     // the value outpost.result returns
	async   handles    // outpost.call_async handles of the current call
	suspend *Suspended // set by outpost.suspend in the current call
}

func newTask(e *Engine, c *code, n normalized) *task {
	t := &task{
		e:      e,
		name:   n.spec.Name,
		module: n.spec.Module,
		code:   c,
		limits: n.limits,
		perms:  compilePerms(n.spec.Permissions),
		grants: n.spec.Permissions,
		fresh:  n.spec.FreshInstance,
		files:  n.files,
		log:    e.log.With("task", n.spec.Name),
		sem:    make(chan struct{}, n.limits.Concurrency),
	}
	t.logs = newLogLimiter(t.log, t.limits.LogRate, t.limits.LogBurst, e.metrics.logDropped.WithLabelValues(t.name))
	t.base = wazero.NewModuleConfig().
		WithName("").
		WithArgs(t.name).
		WithSysWalltime().
		WithSysNanotime().
		WithStartFunctions()
	if n.files != nil {
		t.base = t.base.WithFSConfig(n.files.config())
	}
	if !e.defaultRand {
		// wazero's default seeds a math/rand source per instance: a quarter
		// of an instantiation's cost (DESIGN.md "Runtime facts").
		t.base = t.base.WithRandSource(rand.Reader)
	}
	t.memReserve = t.limits.MemoryLimit
	for _, m := range c.compiled.ExportedMemories() {
		if mx, ok := m.Max(); ok {
			t.memReserve = min(t.memReserve, uint64(mx)*pageSize)
		}
	}
	t.memReserve += c.libReserve(t.limits.MemoryLimit)
	t.instancesCreated = e.metrics.instancesCreated.WithLabelValues(t.name)
	t.calls = e.metrics.calls.WithLabelValues(t.name)
	return t
}

// enter counts a call in; it fails once the task is retired.
func (t *task) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.retired {
		return false
	}
	t.inflight++
	return true
}

// exit counts a call out and closes a retired task when it becomes idle.
func (t *task) exit() {
	t.mu.Lock()
	t.inflight--
	idle := t.closeIfIdleLocked()
	t.mu.Unlock()
	t.finish(idle)
}

// retire marks the task as no longer in any set; it is closed once idle.
func (t *task) retire() {
	t.mu.Lock()
	t.retired = true
	idle := t.closeIfIdleLocked()
	t.mu.Unlock()
	t.finish(idle)
}

// closeIfIdleLocked marks a retired, idle task closed and returns its pooled
// instances for finish; it returns nil, false otherwise.
func (t *task) closeIfIdleLocked() (idle []*instance) {
	if !t.retired || t.inflight > 0 || t.closed {
		return nil
	}
	t.closed = true
	idle, t.idle = t.idle, nil
	if idle == nil {
		idle = []*instance{}
	}
	return idle
}

func (t *task) finish(idle []*instance) {
	if idle == nil {
		return
	}
	for _, inst := range idle {
		t.closeInstance(inst)
	}
	t.logs.close()
	t.code.release()
}

// warm creates the first instance at Load so the first call does not pay for
// instantiation and _initialize errors show at Load.
func (t *task) warm(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.limits.Timeout)
	defer cancel()
	inst, cerr := t.newInstance(ctx)
	if cerr != nil {
		return &warmError{cerr}
	}
	if t.fresh { // _initialize works; calls make their own instances
		t.closeInstance(inst)
		return nil
	}
	t.mu.Lock()
	t.idle = append(t.idle, inst)
	t.mu.Unlock()
	return nil
}

// warmError is a task's first instance failing at Load: its message names
// the step, and it unwraps to the *CallError (whose Err may be
// ErrMemoryBudget).
type warmError struct{ ce *CallError }

func (e *warmError) Error() string { return fmt.Sprintf("instantiate: %s: %s", e.ce.Kind, e.ce.Msg) }
func (e *warmError) Unwrap() error { return e.ce }

// instantiateCtx is ctx carrying the engine's memory allocator.
func (t *task) instantiateCtx(ctx context.Context) context.Context {
	if t.e.heapMemory {
		return ctx
	}
	return experimental.WithMemoryAllocator(ctx, t.e.mem)
}

// stdio is a reactor instance's stderr and stdout loggers with the module
// config writing to them, built once and reused by later instances.
type stdio struct {
	stderr, stdout *lineLogger
	cfg            wazero.ModuleConfig
}

func (t *task) getStdio() *stdio {
	t.mu.Lock()
	if n := len(t.stdio); n > 0 {
		s := t.stdio[n-1]
		t.stdio = t.stdio[:n-1]
		t.mu.Unlock()
		return s
	}
	t.mu.Unlock()
	s := &stdio{
		stderr: newLineLogger(t.log, t.logs, slog.LevelInfo, "stderr", nil),
		stdout: newLineLogger(t.log, t.logs, slog.LevelDebug, "stdout", nil),
	}
	s.cfg = t.base.WithStderr(s.stderr).WithStdout(s.stdout)
	return s
}

// putStdio flushes s and keeps it for reuse (at most concurrency of them);
// nil (an instance without WASI) is ignored.
func (t *task) putStdio(s *stdio) {
	if s == nil {
		return
	}
	s.stderr.Flush()
	s.stdout.Flush()
	t.mu.Lock()
	if len(t.stdio) < t.limits.Concurrency {
		t.stdio = append(t.stdio, s)
	}
	t.mu.Unlock()
}

// reserve counts a new instance against the engine's memory budget.
func (t *task) reserve() *CallError {
	if t.e.reserveMemory(t.memReserve) {
		return nil
	}
	t.e.metrics.budgetRefused.WithLabelValues(t.name).Inc()
	return &CallError{Task: t.name, Kind: KindMemory, Err: ErrMemoryBudget,
		Msg: fmt.Sprintf("memory budget exhausted: a new instance needs %d bytes, %d of the budget of %d bytes are held by live instances",
			t.memReserve, t.e.memUsed.Load(), t.e.opts.MemoryBudget)}
}

func (t *task) newInstance(ctx context.Context) (*instance, *CallError) {
	if ce := t.reserve(); ce != nil {
		return nil, ce
	}
	inst := &instance{task: t, stack: make([]uint64, 2)}
	cfg := t.base
	if t.code.wasi {
		inst.io = t.getStdio()
		cfg = inst.io.cfg
	}
	mod, libs, err := t.instantiate(t.instantiateCtx(ctx), cfg)
	if err != nil {
		t.e.releaseMemory(t.memReserve)
		t.putStdio(inst.io)
		return nil, t.classify(ctx, nil, err, "instantiate")
	}
	t.instancesCreated.Inc()
	inst.mod = mod
	inst.libs = libs
	inst.mem = mod.ExportedMemory(exportMemory)
	inst.alloc = mod.ExportedFunction(exportAlloc)
	inst.handle = mod.ExportedFunction(exportHandle)
	if t.code.hasResume {
		inst.resume = mod.ExportedFunction(exportResume)
	}
	if t.code.inputBuffer {
		inst.inbuf = mod.ExportedFunction(exportInputBuffer)
	}
	inst.limit = memLimit(inst.mem, t.limits.MemoryLimit)
	t.code.register(inst)
	if t.code.hasInit {
		if err := mod.ExportedFunction(exportInit).CallWithStack(ctx, nil); err != nil {
			ce := t.classify(ctx, inst, err, exportInit)
			t.closeInstance(inst)
			return nil, ce
		}
	}
	return inst, nil
}

// memLimit is the size a memory can reach: its declared maximum or the
// task's limit, whichever is lower.
func memLimit(mem api.Memory, limit uint64) uint64 {
	if mem == nil {
		return limit
	}
	if maxPages, ok := mem.Definition().Max(); ok {
		return min(uint64(maxPages)*pageSize, limit)
	}
	return limit
}

// register makes inst known to the host functions, if the code has them.
func (c *code) register(inst *instance) {
	if !c.host {
		return
	}
	c.mu.Lock()
	c.insts[inst.mod] = inst
	c.mu.Unlock()
}

func (c *code) unregister(inst *instance) {
	if !c.host {
		return
	}
	c.mu.Lock()
	delete(c.insts, inst.mod)
	c.mu.Unlock()
}

func (t *task) closeInstance(inst *instance) {
	t.code.unregister(inst)
	_ = inst.mod.Close(context.Background())
	closeModules(inst.libs)
	t.e.releaseMemory(t.memReserve)
	t.putStdio(inst.io)
}

// get takes an idle instance or creates one.
func (t *task) get(ctx context.Context) (*instance, *CallError) {
	if t.fresh {
		return t.newInstance(ctx)
	}
	t.mu.Lock()
	if n := len(t.idle); n > 0 {
		inst := t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		return inst, nil
	}
	t.mu.Unlock()
	return t.newInstance(ctx)
}

// put returns a healthy instance to the pool (a retired task closes it).
func (t *task) put(inst *instance) {
	if t.fresh {
		t.closeInstance(inst)
		return
	}
	t.mu.Lock()
	if !t.retired {
		t.idle = append(t.idle, inst)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.closeInstance(inst)
}

// call runs one call; the task has been entered. With resume set the input
// is a resume document and the reactor's outpost_resume runs instead of
// outpost_handle. A call whose guest suspended returns a *Suspended error.
func (t *task) call(ctx context.Context, input []byte, resume bool) (out []byte, err error) {
	t.calls.Inc()
	if uint64(len(input)) > t.limits.MaxInput {
		t.e.metrics.sizeExceeded.WithLabelValues(t.name, "input").Inc()
		return nil, t.fail(&CallError{Task: t.name, Kind: KindTooLarge,
			Msg: fmt.Sprintf("input of %d bytes exceeds limits.max_input of %d bytes", len(input), t.limits.MaxInput)})
	}
	select {
	case t.sem <- struct{}{}:
	default:
		select {
		case t.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, t.fail(&CallError{Task: t.name, Kind: KindTimeout,
				Msg: "no free instance before the deadline: " + ctx.Err().Error(), Err: ctx.Err()})
		}
	}
	defer func() { <-t.sem }()
	if uint64(len(input)) > t.limits.MemoryLimit {
		return nil, t.fail(&CallError{Task: t.name, Kind: KindMemory,
			Msg: fmt.Sprintf("input of %d bytes exceeds the memory limit of %d bytes", len(input), t.limits.MemoryLimit)})
	}
	// The task's timeout, unless the caller's deadline comes first (then a
	// second timer would never fire).
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > t.limits.Timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, t.limits.Timeout, errTaskTimeout)
		defer cancel()
	}
	var (
		ce   *CallError
		susp *Suspended
	)
	switch {
	case resume && !t.code.hasResume:
		ce = &CallError{Task: t.name, Kind: KindInvalidOutput, Msg: "resume of a call: the module does not export " + exportResume}
	case t.code.abi == ABICommand:
		out, ce = t.callCommand(ctx, input)
	default:
		out, susp, ce = t.callReactor(ctx, input, resume)
	}
	if ce != nil {
		return nil, t.fail(ce)
	}
	if susp != nil {
		return nil, susp
	}
	return out, nil
}

func (t *task) fail(ce *CallError) error {
	t.e.metrics.callErrors.WithLabelValues(t.name, string(ce.Kind)).Inc()
	t.log.Debug("call failed", "kind", ce.Kind, "msg", ce.Msg)
	return ce
}

func (t *task) callReactor(ctx context.Context, input []byte, resume bool) (out []byte, susp *Suspended, ce *CallError) {
	inst, ce := t.get(ctx)
	if ce != nil {
		return nil, nil, ce
	}
	healthy := false
	defer func() {
		inst.async.cancelAll()
		if r := recover(); r != nil { // never let a panic reach the caller
			healthy = false
			ce = &CallError{Task: t.name, Kind: KindTrap, Msg: fmt.Sprintf("host panic: %v", r)}
			t.log.Error("panic during call", "panic", r)
		}
		if healthy {
			t.put(inst)
		} else {
			t.closeInstance(inst)
		}
	}()
	inst.failed, inst.failMsg, inst.hostErr, inst.held, inst.suspend = false, "", nil, nil, nil
	defer func() {
		if inst.suspend != nil && susp == nil {
			inst.suspend.cancel() // the call failed after suspending: nobody resumes it
		}
		inst.suspend = nil
	}()
	ptr, ce := inst.inputPtr(ctx, len(input))
	if ce != nil {
		return nil, nil, ce
	}
	if !inst.mem.Write(ptr, input) {
		return nil, nil, &CallError{Task: t.name, Kind: KindInvalidOutput,
			Msg: fmt.Sprintf("%s(%d) returned %#x, outside linear memory (%d bytes)", exportAlloc, len(input), ptr, inst.mem.Size())}
	}
	entry, entryName := inst.handle, exportHandle
	if resume {
		entry, entryName = inst.resume, exportResume
	}
	s := inst.stack
	s[0], s[1] = uint64(ptr), uint64(len(input))
	if err := entry.CallWithStack(ctx, s); err != nil {
		return nil, nil, t.classify(ctx, inst, err, entryName)
	}
	if inst.failed {
		if ctx.Err() != nil {
			// What failed the guest is its deadline (a host call it made
			// ended with it): the call timed out.
			return nil, nil, t.classify(ctx, nil, ctx.Err(), entryName)
		}
		return nil, nil, &CallError{Task: t.name, Kind: KindFailed, Msg: inst.failMsg}
	}
	// An instance whose memory grew past maxPooledMemory is not kept warm:
	// its touched pages would stay resident while it idles.
	healthy = uint64(inst.mem.Size()) <= maxPooledMemory
	if inst.suspend != nil {
		// The run ended suspended: its output is ignored, and the instance
		// goes back to the pool (nothing of it is kept for the resume).
		return nil, inst.suspend, nil
	}
	optr, olen := uint32(s[0]>>32), uint32(s[0])
	if uint64(olen) > t.limits.MaxOutput {
		healthy = false
		t.e.metrics.sizeExceeded.WithLabelValues(t.name, "output").Inc()
		return nil, nil, &CallError{Task: t.name, Kind: KindInvalidOutput,
			Msg: fmt.Sprintf("output of %d bytes exceeds limits.max_output of %d bytes", olen, t.limits.MaxOutput)}
	}
	b, ok := inst.mem.Read(optr, olen)
	if !ok {
		healthy = false
		return nil, nil, &CallError{Task: t.name, Kind: KindInvalidOutput,
			Msg: fmt.Sprintf("%s returned output at %#x length %d, outside linear memory (%d bytes)", entryName, optr, olen, inst.mem.Size())}
	}
	out = make([]byte, len(b))
	copy(out, b)
	return out, nil, nil
}

// inputPtr is where the host writes an input of size bytes: the buffer
// outpost_input_buffer gave when the module exports it (asked again only when
// the input outgrows it, or for a new instance), else outpost_alloc's
// pointer, checked by the caller's write.
func (inst *instance) inputPtr(ctx context.Context, size int) (uint32, *CallError) {
	t, s := inst.task, inst.stack
	s[0] = uint64(size)
	if inst.inbuf == nil {
		if err := inst.alloc.CallWithStack(ctx, s); err != nil {
			return 0, t.classify(ctx, inst, err, exportAlloc)
		}
		return api.DecodeU32(s[0]), nil
	}
	if inst.hasBuf && uint64(size) <= uint64(inst.bufCap) {
		return inst.bufPtr, nil
	}
	if err := inst.inbuf.CallWithStack(ctx, s); err != nil {
		return 0, t.classify(ctx, inst, err, exportInputBuffer)
	}
	ptr, capacity := uint32(s[0]>>32), uint32(s[0])
	switch memSize := inst.mem.Size(); {
	case uint64(capacity) < uint64(size):
		return 0, &CallError{Task: t.name, Kind: KindInvalidOutput,
			Msg: fmt.Sprintf("%s(%d) returned capacity %d, less than the input", exportInputBuffer, size, capacity)}
	case uint64(ptr)+uint64(capacity) > uint64(memSize):
		return 0, &CallError{Task: t.name, Kind: KindInvalidOutput,
			Msg: fmt.Sprintf("%s(%d) returned buffer at %#x capacity %d, outside linear memory (%d bytes)", exportInputBuffer, size, ptr, capacity, memSize)}
	}
	inst.bufPtr, inst.bufCap, inst.hasBuf = ptr, capacity, true
	return ptr, nil
}

func (t *task) callCommand(ctx context.Context, input []byte) (out []byte, ce *CallError) {
	stdout := &limitedBuffer{max: int(min(t.limits.MaxOutput, 1<<30))}
	var stderrTail bytes.Buffer
	stderr := newLineLogger(t.log, t.logs, slog.LevelInfo, "stderr", &stderrTail)
	defer stderr.Flush()
	defer func() {
		if r := recover(); r != nil {
			ce = &CallError{Task: t.name, Kind: KindTrap, Msg: fmt.Sprintf("host panic: %v", r)}
			t.log.Error("panic during call", "panic", r)
		}
	}()
	if ce := t.reserve(); ce != nil {
		return nil, ce
	}
	defer t.e.releaseMemory(t.memReserve) // after the module's close below
	mod, libs, err := t.instantiate(t.instantiateCtx(ctx), t.base.
		WithStdin(bytes.NewReader(input)).WithStdout(stdout).WithStderr(stderr))
	if err != nil {
		return nil, t.classify(ctx, nil, err, "instantiate")
	}
	t.instancesCreated.Inc()
	defer func() {
		_ = mod.Close(context.Background())
		closeModules(libs)
	}()
	inst := &instance{task: t, mod: mod, mem: mod.Memory()}
	defer inst.async.cancelAll()
	inst.limit = memLimit(inst.mem, t.limits.MemoryLimit)
	t.code.register(inst) // host functions find the instance
	defer t.code.unregister(inst)
	err = mod.ExportedFunction(exportStart).CallWithStack(ctx, nil)
	var exit *sys.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 0) {
		ce := t.classify(ctx, inst, err, exportStart)
		if stdout.overflow {
			t.e.metrics.sizeExceeded.WithLabelValues(t.name, "output").Inc()
			ce.Kind, ce.Msg = KindInvalidOutput, fmt.Sprintf("output exceeds limits.max_output of %d bytes", stdout.max)
		} else if ce.Kind == KindFailed {
			stderr.Flush()
			if msg := strings.TrimSpace(stderrTail.String()); msg != "" {
				ce.Msg = msg
			}
		}
		return nil, ce
	}
	if stdout.overflow {
		t.e.metrics.sizeExceeded.WithLabelValues(t.name, "output").Inc()
		return nil, &CallError{Task: t.name, Kind: KindInvalidOutput, Msg: fmt.Sprintf("output exceeds limits.max_output of %d bytes", stdout.max)}
	}
	return stdout.Bytes(), nil
}

// maxPooledMemory is the largest linear memory an instance may have to be
// kept for the next call; a larger one is closed after its call, which
// gives its pages back at once (memPool.put).
const maxPooledMemory = 16 << 20

// errTaskTimeout is the cause of a call's context ending at the task's own
// timeout, told apart from a caller's earlier deadline.
var errTaskTimeout = errors.New("task timeout")

// classify turns an error of a guest function into a CallError.
func (t *task) classify(ctx context.Context, inst *instance, err error, fn string) *CallError {
	ce := &CallError{Task: t.name, Err: err}
	var exit *sys.ExitError
	isExit := errors.As(err, &exit)
	switch {
	case inst != nil && inst.hostErr != nil:
		ce.Kind, ce.Msg = KindTrap, inst.hostErr.Error()
	case ctx.Err() != nil || isExit && (exit.ExitCode() == sys.ExitCodeDeadlineExceeded || exit.ExitCode() == sys.ExitCodeContextCanceled):
		// Before the guest's own failure: past its deadline, what failed
		// the guest is the deadline (a host call it made ended with it).
		ce.Kind = KindTimeout
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errTaskTimeout):
			ce.Msg = fmt.Sprintf("%s did not finish within the task timeout of %s", fn, t.limits.Timeout)
		case errors.Is(cause, context.DeadlineExceeded):
			ce.Msg = fmt.Sprintf("%s did not finish before the caller's deadline", fn)
		default:
			ce.Msg = fmt.Sprintf("%s canceled: %v", fn, context.Cause(ctx))
		}
	case inst != nil && inst.failed:
		ce.Kind, ce.Msg = KindFailed, inst.failMsg
	case inst != nil && inst.mem != nil && atLimit(uint64(inst.mem.Size()), inst.limit):
		ce.Kind = KindMemory
		ce.Msg = fmt.Sprintf("%s failed with memory at its limit (%d of %d bytes): %s", fn, inst.mem.Size(), inst.limit, firstLine(err))
	case isExit && t.code.abi == ABICommand:
		ce.Kind, ce.Msg = KindFailed, fmt.Sprintf("%s exited with code %d", fn, exit.ExitCode())
	case isExit: // a reactor that exits (a Go panic does) has crashed
		ce.Kind, ce.Msg = KindTrap, fmt.Sprintf("%s exited with code %d (see the task's stderr)", fn, exit.ExitCode())
	default:
		ce.Kind, ce.Msg = KindTrap, fmt.Sprintf("%s: %s", fn, firstLine(err))
	}
	return ce
}

// atLimit reports whether memory of size bytes is at (or within one grow step
// of) limit: allocators grow in chunks, so a guest fails before the last page.
func atLimit(size, limit uint64) bool {
	slack := max(uint64(pageSize), limit/8)
	return size+slack > limit
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// limitedBuffer collects a command's stdout up to max bytes.
type limitedBuffer struct {
	bytes.Buffer
	max      int
	overflow bool
}

var errOutputTooLarge = errors.New("output too large")

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		b.overflow = true
		return 0, errOutputTooLarge
	}
	return b.Buffer.Write(p)
}
