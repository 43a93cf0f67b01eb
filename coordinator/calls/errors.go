package calls

import "errors"

// Errors returned by Submit and Do.
var (
	ErrQueueFull   = errors.New("call queue full")
	ErrDraining    = errors.New("shutting down: not taking new calls")
	ErrUnknownTask = errors.New("unknown task")
)
