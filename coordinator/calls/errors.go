package calls

import "errors"

// Errors returned by Submit and Do.
var (
	ErrQueueFull   = errors.New("call queue full")
	ErrDraining    = errors.New("shutting down: not taking new calls")
	ErrUnknownTask = errors.New("unknown task")
	// ErrJournalBusy: the journal's commit queue is full; a caller that must
	// not block gets it instead of waiting.
	ErrJournalBusy = errors.New("call journal busy: commit queue full")
	// ErrCallCycle: Scheduler.Wait refused a wait that could never end (a
	// task calling itself, directly or through others, with every slot of
	// the awaited call's task held by the waiting chain).
	ErrCallCycle = errors.New("call cycle would deadlock")
	// ErrTooLate: a call with a NeedBy time cannot finish by it, from the
	// recent run times of its task; refused at once.
	ErrTooLate = errors.New("need-by time cannot be met")
)
