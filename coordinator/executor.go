package coordinator

import (
	"context"
	"errors"

	"github.com/outpost-edge/outpost/coordinator/calls"
	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// executor runs calls in the wasm runtime for the scheduler.
type executor struct{ e *outpostrt.Engine }

var _ calls.Executor = executor{}

func (x executor) Concurrency(task string) (int, bool) {
	l, ok := x.e.Limits(task)
	return l.Concurrency, ok
}

func (x executor) Execute(ctx context.Context, c *calls.Call) calls.Result {
	// The call's metadata, for the guest's outpost.meta (docs/abi.md).
	key := c.IdempotencyKey
	if key == "" {
		key = c.ID
	}
	ctx = outpostrt.WithCallMeta(ctx, outpostrt.CallMeta{ID: c.ID, Source: c.Source.String(), IdempotencyKey: key})
	out, err := x.e.Call(ctx, c.Task, c.Input)
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

var kindStatus = map[outpostrt.Kind]calls.Status{
	outpostrt.KindTrap:          calls.StatusTrap,
	outpostrt.KindTimeout:       calls.StatusTimeout,
	outpostrt.KindMemory:        calls.StatusMemory,
	outpostrt.KindFailed:        calls.StatusFailed,
	outpostrt.KindInvalidOutput: calls.StatusInvalid,
	outpostrt.KindTooLarge:      calls.StatusRejected, // input over max_input: refused before it ran
}
