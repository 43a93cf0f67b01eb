package runtime

import (
	"errors"
	"fmt"
)

// Sentinel errors; compare with errors.Is.
var (
	// ErrUnknownTask is returned (wrapped, naming the task) by Call for a task
	// that is not in the active set.
	ErrUnknownTask = errors.New("unknown task")
	// ErrClosed is returned by methods of an Engine that was closed.
	ErrClosed = errors.New("runtime engine closed")
	// ErrNotStarted is returned by Load before Start.
	ErrNotStarted = errors.New("runtime engine not started")
	// ErrMemoryBudget is the Err of a CallError (kind memory) when a new
	// instance would pass Options.MemoryBudget.
	ErrMemoryBudget = errors.New("memory budget exhausted")
)

// Kind classifies a failed call.
type Kind string

const (
	// KindTrap: the guest trapped (unreachable, out-of-bounds access, a bad
	// argument to a host function, a proc_exit from a reactor...).
	KindTrap Kind = "trap"
	// KindTimeout: the call hit its deadline (task timeout or the caller's
	// context) or the caller's context was canceled.
	KindTimeout Kind = "timeout"
	// KindMemory: the guest failed with its linear memory at the task's memory
	// limit (or the input alone does not fit under it).
	KindMemory Kind = "memory"
	// KindFailed: the guest reported a failure (outpost.fail) or a command
	// exited with a non-zero code.
	KindFailed Kind = "failed"
	// KindTooLarge: the input is larger than the task's max_input; the call
	// was refused before anything ran.
	KindTooLarge Kind = "too_large"
	// KindInvalidOutput: the guest returned an output (or an input buffer)
	// outside its linear memory, or an output larger than the task's
	// max_output. Its name, "invalid", is the status of such a call in the
	// CLI, the admin API and the cloud link.
	KindInvalidOutput Kind = "invalid"
)

// CallError is the error of a failed Call. Msg is a one-line human readable
// reason (for KindFailed, the guest's own message); Err, when set, is the
// underlying error (for example wazero's trap error with its wasm stack trace).
type CallError struct {
	Task string
	Kind Kind
	Msg  string
	Err  error
}

func (e *CallError) Error() string {
	return fmt.Sprintf("task %q: %s: %s", e.Task, e.Kind, e.Msg)
}

func (e *CallError) Unwrap() error { return e.Err }
