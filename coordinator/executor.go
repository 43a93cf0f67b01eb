package coordinator

import (
	"context"
	"errors"

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
	out, err := x.e.Call(ctx, c.Task, c.Input) // ctx answers CallMetaKey: ContextValue
	if err == nil {
		return calls.Result{Status: calls.StatusOK, Output: out}
	}
	var ce *outpostrt.CallError
	switch {
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
	if key == (outpostrt.CallMetaKey{}) {
		return (*callMeta)(c)
	}
	return nil
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
