// Package calls owns the Call, the one unit of work in Outpost, and the
// scheduler that runs calls: a bounded queue, a global worker cap and
// per-task concurrency limits. Every source (an MQTT route, the admin API,
// later the cloud link and other tasks) makes Calls the same way and gets
// its result through the call's Done callback.
package calls

import (
	"time"

	"github.com/rs/xid"
)

// State is where a call is in its life.
type State uint8

// States of a call, in order.
const (
	Received State = iota
	Started
	Finished
)

func (s State) String() string {
	switch s {
	case Received:
		return "received"
	case Started:
		return "started"
	case Finished:
		return "finished"
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
	StatusCanceled Status = "canceled" // shutdown came before it could finish
)

// Source says where a call came from.
type Source struct {
	Kind string // "mqtt", "admin", later "cloud", "task", "telemetry"
	Ref  string // the topic, remote address, caller call id…
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

	State  State
	Result Result

	Received, Started, Finished time.Time

	// Done is called once, from the goroutine that finished the call, when
	// Result is set. It must not block for long: it runs on a worker.
	Done func(*Call)

	q *taskQueue // set when the scheduler admits the call
}

// Result is the outcome of a finished call.
type Result struct {
	Status Status
	Output []byte // the task's output when Status is StatusOK
	Error  string // what went wrong otherwise
}

// New returns a call with a fresh id, received now.
func New(task string, input []byte, src Source) *Call {
	return &Call{ID: xid.New().String(), Task: task, Input: input, Source: src, Received: time.Now()}
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
