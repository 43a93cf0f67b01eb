// Package calls owns the Call, the one unit of work in Outpost; the
// scheduler that runs calls (a bounded queue, a global worker cap,
// per-task concurrency limits, start-by and max-run deadlines,
// cancellation); and the journal that makes calls durable (every state
// change of a call from a source that expects delivery is in the state
// store before it is acknowledged, with group commit, recovery after a
// crash, dedupe by id and idempotency key, and a results cache). Every
// source (an MQTT route, the admin API, the cloud link, other tasks) makes
// Calls the same way and gets its result through the call's Done callback.
package calls

import (
	"fmt"
	"time"

	"github.com/rs/xid"
)

// State is where a call is in its life.
type State uint8

// States of a call, in order.
const (
	Received State = iota
	Started
	// Suspended: the call's last run ended with outpost.suspend; it holds
	// no instance, worker or goroutine, only its journal record and
	// snapshot, until the calls it waits for have finished (journaled
	// calls only).
	Suspended
	Finished
	Reported // the result reached whoever expects it (journaled calls only)
)

func (s State) String() string {
	switch s {
	case Received:
		return "received"
	case Started:
		return "started"
	case Suspended:
		return "suspended"
	case Finished:
		return "finished"
	case Reported:
		return "reported"
	}
	return "unknown"
}

// Status is how a call ended.
type Status string

// Statuses of a finished call. They are the values of the status label of
// outpost_calls_total and the code of an error document.
const (
	StatusOK       Status = "ok"
	StatusFailed   Status = "failed"  // the task reported failure or exited non-zero
	StatusTrap     Status = "trap"    // the guest trapped (unreachable, bad memory access…)
	StatusTimeout  Status = "timeout" // the call ran past its deadline
	StatusMemory   Status = "memory"  // the guest hit its memory limit
	StatusInvalid  Status = "invalid" // the task broke the ABI (bad output pointer…)
	StatusUnknown  Status = "unknown_task"
	StatusRejected Status = "rejected" // refused before it ran: queue full or draining
	// StatusTooLarge: the input is over the task's max_input; refused
	// before it ran.
	StatusTooLarge Status = "too_large"
	StatusCanceled Status = "canceled" // shutdown or a cancel request came before it could finish
	// StatusExpired: the call missed its start-by deadline and was not started.
	StatusExpired Status = "expired"
	// StatusInterrupted: an at-most-once call was running when the process
	// died; it is not run again.
	StatusInterrupted Status = "interrupted"
	// StatusFetchFailed: the call named its task's code by digest and the
	// task was not loaded; fetching, verifying or deploying that code
	// object failed (the error says which), so the call did not run.
	StatusFetchFailed Status = "fetch_failed"
	// StatusTaskConflict: the call named its task's code by digest and the
	// task is loaded with another module; the local task is not replaced.
	StatusTaskConflict Status = "task_conflict"
	// StatusSuspended: the run ended with outpost.suspend (Call.Suspension
	// says what it waits for); the call is not finished. Only the run's
	// metrics see it.
	StatusSuspended Status = "suspended"
	// StatusTooLate: refused at once because it cannot finish by its
	// NeedBy time from the measured run times of its task.
	StatusTooLate Status = "too_late"
)

// Effect says whether a call may run again after a crash.
type Effect string

// Effects of a call. The zero value is treated as AtMostOnce: a call is
// re-run after a crash only if its source says so.
const (
	Idempotent Effect = "idempotent"
	AtMostOnce Effect = "at_most_once"
)

// Source says where a call came from.
type Source struct {
	Kind string `json:"kind"`          // "mqtt", "admin", "cloud", "task", "telemetry", "peer"
	Ref  string `json:"ref,omitempty"` // the topic, remote address, caller call id…
}

func (s Source) String() string { return s.Kind + ":" + s.Ref }

// Call is one request to run a task with an input.
type Call struct {
	ID     string
	Task   string
	Input  []byte
	Source Source
	// Deadline bounds the whole call, queueing included; zero means the
	// task's own timeout from the moment it starts.
	Deadline time.Time
	// StartBy is the latest time the call may start; past it the call
	// finishes as StatusExpired without running. Zero: no limit.
	StartBy time.Time
	// MaxRun bounds the run from its start; zero: the task's timeout.
	MaxRun time.Duration

	// Queue names the scheduler queue ("control" is strict priority, the
	// others are weighted; "" is the default queue). Priority orders calls
	// inside a source's queue on the cloud side.
	Queue    string
	Priority int
	// Labels are the caller's names for the call (tier: batch), which
	// placement rules see as call.labels: given with the call (the admin
	// API, a cloud call) or by its route. Journaled with it.
	Labels map[string]string
	// IdempotencyKey identifies the work across call ids (default: the id);
	// it is handed to the task unchanged on a re-run.
	IdempotencyKey string
	// Attempt counts runs of this call, from 1.
	Attempt int
	// Effect says whether the call may run again after a crash.
	Effect Effect
	// ReplyTo is where the result goes besides the caller's Done, kept in
	// the journal so a recovered call can still answer: the reply topic of
	// an MQTT route.
	ReplyTo string
	// NeedBy is when whoever waits for the call needs its result (the
	// caller of a call_async): the scheduler defers such a call while the
	// node is busy and starts it by NeedBy minus the task's measured run
	// time (docs/architecture.md, "Deadline-aware scheduling"). Zero: run
	// in queue order.
	NeedBy time.Time
	// Parent is the id of the journaled call whose call_async made this
	// one (its dependency); "" for others.
	Parent string
	// Suspension is set by the Executor when the run ended suspended
	// (StatusSuspended): the state the guest keeps and the calls it waits
	// for. Resume, when set, makes the run the next step of a suspended
	// call: the state it kept and the results of what it waited for.
	Suspension, Resume *Continuation
	// Digest ("sha256:HEX"), when set, names the module the call's task
	// must run: a task that is not loaded is fetched by it before the call
	// runs (cloud calls, docs/cloud-link.md "Code objects"), and a loaded
	// task with another module fails the call. The scheduler admits a call
	// with a digest for a task it does not know; the executor resolves it.
	Digest string

	State  State
	Result Result

	Received, Started, Finished time.Time

	// Done is called once, from the goroutine that finished the call, when
	// Result is set. It must not block for long: it runs on a worker.
	Done func(*Call)

	q       *taskQueue // set when the scheduler admits the call
	durable *Durable   // set when the call is journaled
	// run is the context of the running call (Scheduler.execute); running
	// says it is in the scheduler's runs, guarded by its mu.
	run      runCtx
	running  bool
	canceled bool // a cancel request came; guarded by the scheduler's mu
	// cutByShutdown: the drain deadline of the scheduler's own shutdown cut
	// the call short (running or still queued); set before Done. A
	// journaled call so cut is left as a crash would leave it.
	cutByShutdown bool
	queuedAt      time.Time // when it entered a scheduler queue, for aging
	// The wait-for chain between calls of tasks (Scheduler.Wait), guarded
	// by the scheduler's mu: waitingOn is the call this one waits for,
	// waitedBy the call that waits for this one; inQueue is true while the
	// call sits in a scheduler queue (admitted, no task slot yet).
	waitingOn, waitedBy *Call
	inQueue             bool
	latest              time.Time // a deferred call's latest start (slack.go)
	deferred            bool      // in the scheduler's deferred list (slack.go)
	// resumeFrom is the snapshot whose state Resume still lacks: a resume
	// run loads it as it starts (Durable.started).
	resumeFrom string
}

// Continuation is what links the runs of a suspended call: the state its
// guest kept and the calls it waits for (with their results, once they
// have finished).
type Continuation struct {
	State []byte
	Waits []Wait
}

// Wait is one call a suspended call waits for.
type Wait struct {
	Handle int32   `json:"handle"` // the guest's handle of the call in the run that suspended
	ID     string  `json:"id"`
	Task   string  `json:"task"`
	Result *Result `json:"result,omitempty"` // set once it has finished
}

// Result is the outcome of a finished call.
//
// Its JSON names are the wire names of a result (docs/cloud-link.md):
// records journaled before they had tags ("Status", "Output", "Error")
// decode alike, since encoding/json matches names without regard to case.
type Result struct {
	Status Status `json:"status"`
	Output []byte `json:"output,omitempty"` // the task's output when Status is StatusOK
	Error  string `json:"error,omitempty"`  // what went wrong otherwise
	// Env is the execution environment the call ran in and Rule the
	// placement rule that chose it ("" for a call that never reached
	// placement: refused, expired, canceled while queued).
	Env  string `json:"env,omitempty"`
	Rule string `json:"rule,omitempty"`
}

// New returns a call with a fresh id, received now.
func New(task string, input []byte, src Source) *Call {
	now := time.Now() // one clock read for both: it is not cheap on every host
	return &Call{ID: xid.NewWithTime(now).String(), Task: task, Input: input, Source: src, Received: now, Attempt: 1}
}

// OK reports whether the call succeeded.
func (r Result) OK() bool { return r.Status == StatusOK }

// ErrorDoc is the JSON document a failed call answers with, on MQTT and on
// the admin API: {"error":{"code":"timeout","message":"…"},"task":"…","call_id":"…"}.
type ErrorDoc struct {
	Error  ErrorBody `json:"error"`
	Task   string    `json:"task,omitempty"`
	CallID string    `json:"call_id,omitempty"`
}

// ErrorBody says what went wrong.
type ErrorBody struct {
	Code    Status `json:"code"`
	Message string `json:"message"`
}

// ErrorDoc returns the error document of a finished, failed call.
func (c *Call) ErrorDoc() ErrorDoc {
	return ErrorDoc{Error: ErrorBody{Code: c.Result.Status, Message: c.Result.Error}, Task: c.Task, CallID: c.ID}
}

// MarshalText writes a state by name (journal records, the admin API).
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state name.
func (s *State) UnmarshalText(b []byte) error {
	for st := Received; st <= Reported; st++ {
		if st.String() == string(b) {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("unknown call state %q", b)
}
