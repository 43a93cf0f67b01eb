// Package runtime owns Outpost's WebAssembly engine (wazero): it compiles task
// modules ("code objects"), keeps the compilation cache, pools instances, runs
// the task ABI (docs/abi.md) and enforces the limits of every task (memory,
// wall-clock time, concurrency). It knows nothing of MQTT or HTTP: callers give
// it task specs and call inputs and get outputs or a *CallError back.
//
// Lifecycle: New (no side effects), Start (opens the compilation cache), then
// any number of Load (compile and validate a whole task set) and Activate
// (atomically swap it in), Call from any goroutine, and Close.
//
// Isolation: wazero enforces memory limits per wazero.Runtime, so each distinct
// code object (module digest and memory limit) gets its own Runtime; all of them
// share one wazero.CompilationCache. Every guest call runs under a context
// deadline with WithCloseOnContextDone, so a looping guest is stopped at its
// timeout.
//
// Reactor instances are pooled per task (at most Spec.Concurrency of them) and
// reused across calls: module state (globals, linear memory) persists between
// calls served by the same instance, and calls of one task may be served by
// different instances, so a task must not rely on that state for correctness
// (caches are fine). An instance whose call failed in any way is closed, never
// reused. Command modules get a fresh instance per call.
//
// The folder name shadows the standard library's runtime package: where both
// are needed, import the standard one as goruntime "runtime".
package runtime
