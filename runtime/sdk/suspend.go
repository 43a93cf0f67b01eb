//go:build wasip1

package sdk

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"
	"unsafe"
)

// Pending is a call submitted with CallAsync, to wait for with Await or to
// suspend on with Suspend. Handles belong to the run that made them.
type Pending int32

// CallAsync submits a call of task without waiting for it; the caller
// needs its result by the call's deadline. The task needs the callee in
// permissions.call.
func CallAsync(task string, input []byte) (Pending, error) {
	h := hostCallAsync(strPtr(task), uint32(len(task)), bytesPtr(input), uint32(len(input)))
	return Pending(h), codeErr(h)
}

// CallAsyncBy is CallAsync with the time the result is needed by: the
// daemon defers the call while it is busy and starts it in time, or
// refuses it at once with ErrTooLate when the task's recent runs are
// longer than what is left.
func CallAsyncBy(task string, input []byte, needBy time.Time) (Pending, error) {
	h := hostCallAsyncBy(strPtr(task), uint32(len(task)), bytesPtr(input), uint32(len(input)), needBy.UnixNano())
	return Pending(h), codeErr(h)
}

// Await waits for the call of h (timeout 0: until it finishes or the
// caller's deadline) and returns its output or error. The instance stays
// in memory while it waits: a task that can should Suspend instead.
func (h Pending) Await(timeout time.Duration) ([]byte, error) {
	n := hostAwait(int32(h), int32(timeout.Milliseconds()))
	if n < 0 {
		return nil, codeErr(n)
	}
	return held(), nil // await takes no buffer: the output is held
}

// Result is the outcome of one call a suspended run waited for.
type Result struct {
	Pending Pending
	Output  []byte
	Err     error // nil, or a *HostError as Await would return
}

var resume func(state []byte, results []Result) ([]byte, error)

// OnResume registers the step that runs when the calls a run suspended on
// have finished: it gets the state the run kept and their results, in the
// order Suspend was given the handles, and returns the call's output, or
// suspends again. Call it from init, beside Pending.
func OnResume(step func(state []byte, results []Result) ([]byte, error)) { resume = step }

// Suspend ends the current run (of the Handle or OnResume function) once
// it returns, keeping state and waiting for the calls of handles; the
// function should return what Suspend returns. The daemon keeps nothing of
// the instance: it calls the OnResume step with the state and the results
// when they have all finished, on any instance, possibly after a restart.
// A call that cannot suspend (it is not journaled) awaits the handles here
// instead and runs the OnResume step at once, so the same code serves
// both.
func Suspend(state []byte, handles ...Pending) ([]byte, error) {
	if resume == nil {
		return nil, errors.New("sdk.Suspend: no step registered with sdk.OnResume")
	}
	var hp *int32
	if len(handles) > 0 {
		hp = (*int32)(unsafe.Pointer(unsafe.SliceData(handles)))
	}
	err := codeErr(hostSuspend(bytesPtr(state), uint32(len(state)), hp, uint32(len(handles))))
	if err == nil {
		return nil, nil // suspended: the output is ignored
	}
	if !errors.Is(err, ErrUnavailable) {
		return nil, err
	}
	results := make([]Result, len(handles))
	for i, h := range handles {
		out, err := h.Await(0)
		results[i] = Result{Pending: h, Output: out, Err: err}
	}
	return resume(state, results)
}

// SuspendJSON is Suspend with a typed state, kept as JSON; its step is
// registered with OnResumeJSON.
func SuspendJSON[T any](state T, handles ...Pending) ([]byte, error) {
	b, err := json.Marshal(state)
	if err != nil {
		return nil, err
	}
	return Suspend(b, handles...)
}

// OnResumeJSON registers a step whose state is the T given to SuspendJSON.
func OnResumeJSON[T any](step func(state T, results []Result) ([]byte, error)) {
	OnResume(func(b []byte, results []Result) ([]byte, error) {
		var state T
		if err := json.Unmarshal(b, &state); err != nil {
			return nil, err
		}
		return step(state, results)
	})
}

//go:wasmexport outpost_resume
func outpostResume(ptr unsafe.Pointer, size uint32) uint64 {
	if resume == nil {
		fail("no resume step: call sdk.OnResume from init")
		return 0
	}
	state, results, err := parseResume(unsafe.Slice((*byte)(ptr), size))
	if err != nil {
		fail(err.Error())
		return 0
	}
	return finish(resume(state, results))
}

// parseResume reads the resume document (docs/abi.md, "Suspending a
// call"). The slices are copies: the input buffer is reused.
func parseResume(b []byte) ([]byte, []Result, error) {
	errShort := errors.New("resume document is truncated")
	u32 := func() (uint32, bool) {
		if len(b) < 4 {
			return 0, false
		}
		v := binary.LittleEndian.Uint32(b)
		b = b[4:]
		return v, true
	}
	bytesOf := func(n uint32) ([]byte, bool) {
		if uint64(len(b)) < uint64(n) {
			return nil, false
		}
		v := append([]byte(nil), b[:n]...)
		b = b[n:]
		return v, true
	}
	sl, ok := u32()
	if !ok {
		return nil, nil, errShort
	}
	state, ok := bytesOf(sl)
	if !ok {
		return nil, nil, errShort
	}
	n, ok := u32()
	if !ok {
		return nil, nil, errShort
	}
	results := make([]Result, 0, min(n, 64))
	for range n {
		h, ok1 := u32()
		code, ok2 := u32()
		l, ok3 := u32()
		if !ok1 || !ok2 || !ok3 {
			return nil, nil, errShort
		}
		d, ok := bytesOf(l)
		if !ok {
			return nil, nil, errShort
		}
		r := Result{Pending: Pending(int32(h))}
		if c := int32(code); c < 0 {
			r.Err = &HostError{Code: c, Msg: string(d)}
		} else {
			r.Output = d
		}
		results = append(results, r)
	}
	return state, results, nil
}
