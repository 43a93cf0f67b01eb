package coordinator

import (
	"context"
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/coordinator/calls"
	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// executor runs calls in the wasm runtime for the scheduler.
type executor struct{ e *outpostrt.Engine }

var (
	_ calls.Executor      = executor{}
	_ calls.ContextValuer = executor{}
)

func (x executor) Concurrency(task string) (int, bool) {
	l, ok := x.e.Limits(task)
	return l.Concurrency, ok
}

func (x executor) Execute(ctx context.Context, c *calls.Call) calls.Result {
	var (
		out []byte
		err error
	)
	if c.Resume != nil {
		out, err = x.e.Resume(ctx, c.Task, resumeDoc(c.Resume))
	} else {
		out, err = x.e.Call(ctx, c.Task, c.Input) // ctx answers CallMetaKey: ContextValue
	}
	if err == nil {
		return calls.Result{Status: calls.StatusOK, Output: out}
	}
	var (
		ce   *outpostrt.CallError
		susp *outpostrt.Suspended
	)
	switch {
	case errors.As(err, &susp):
		return suspension(c, susp)
	case errors.As(err, &ce):
		return calls.Result{Status: kindStatus[ce.Kind], Error: ce.Msg}
	case errors.Is(err, outpostrt.ErrUnknownTask):
		return calls.Result{Status: calls.StatusUnknown, Error: err.Error()}
	default:
		return calls.Result{Status: calls.StatusFailed, Error: err.Error()}
	}
}

// ContextValue gives the context of a running call its metadata, for the
// guest's outpost.meta (docs/abi.md), built when it asks.
func (x executor) ContextValue(c *calls.Call, key any) any {
	switch key {
	case outpostrt.CallMetaKey{}:
		return (*callMeta)(c)
	case outpostrt.SuspendableKey{}:
		return c.Suspendable()
	}
	return nil
}

// suspension records on c how its run ended suspended: the state and the
// ids of the calls it waits for (journaled dependencies: host.CallAsync).
func suspension(c *calls.Call, s *outpostrt.Suspended) calls.Result {
	cont := &calls.Continuation{State: s.State}
	for _, w := range s.Waits {
		pc, ok := w.Pending.(*pendingCall)
		if !ok {
			return calls.Result{Status: calls.StatusFailed, Error: fmt.Sprintf("suspended on handle %d, which is not a call of the scheduler", w.Handle)}
		}
		cont.Waits = append(cont.Waits, calls.Wait{Handle: w.Handle, ID: pc.call.ID, Task: w.Task})
	}
	c.Suspension = cont
	return calls.Result{Status: calls.StatusSuspended}
}

// resumeDoc is the input of outpost_resume for the next step of a
// suspended call: the state it kept and, per handle, what await would
// have returned.
func resumeDoc(r *calls.Continuation) []byte {
	res := make([]outpostrt.ResumeResult, len(r.Waits))
	for i, w := range r.Waits {
		var (
			out []byte
			err error
		)
		if w.Result == nil {
			err = fmt.Errorf("call %s has no result", w.ID)
		} else {
			out, err = callOutput(w.Task, *w.Result, nil)
		}
		res[i] = outpostrt.ResultOf(w.Handle, out, err)
	}
	return outpostrt.EncodeResume(r.State, res)
}

// callMeta is a call as the CallMetaSource of its guest.
type callMeta calls.Call

func (m *callMeta) CallMeta() outpostrt.CallMeta {
	key := m.IdempotencyKey
	if key == "" {
		key = m.ID
	}
	return outpostrt.CallMeta{ID: m.ID, Source: m.Source.String(), IdempotencyKey: key}
}

// kindStatus maps the kind of a failed call to its status: the same name
// (docs/abi.md "Errors" lists them; TestDocumentedErrorKinds checks it).
var kindStatus = map[outpostrt.Kind]calls.Status{
	outpostrt.KindTrap:          calls.StatusTrap,
	outpostrt.KindTimeout:       calls.StatusTimeout,
	outpostrt.KindMemory:        calls.StatusMemory,
	outpostrt.KindFailed:        calls.StatusFailed,
	outpostrt.KindInvalidOutput: calls.StatusInvalid,
	outpostrt.KindTooLarge:      calls.StatusTooLarge, // input over max_input: refused before it ran
}
