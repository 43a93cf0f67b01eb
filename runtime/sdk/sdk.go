//go:build wasip1

package sdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// Handler turns one call's input into its output; a non-nil error fails the
// call (kind "failed") with the error's text.
type Handler func(input []byte) ([]byte, error)

var (
	handler Handler
	in, out []byte // globals: kept alive by the GC, which does not move objects
)

// Handle registers the task's handler. Call it from init.
func Handle(h Handler) { handler = h }

//go:wasmexport outpost_alloc
func outpostAlloc(size uint32) uint32 {
	if uint32(cap(in)) < size || cap(in) == 0 {
		in = make([]byte, max(size, 256))
	}
	in = in[:size]
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(in[:cap(in)]))))
}

// outpostInputBuffer hands the host the same reusable buffer with its whole
// capacity: the host writes every input that fits without calling in again
// (docs/abi.md "Reactor").
//
//go:wasmexport outpost_input_buffer
func outpostInputBuffer(size uint32) uint64 {
	ptr := outpostAlloc(size)
	return uint64(ptr)<<32 | uint64(cap(in))
}

//go:wasmexport outpost_handle
func outpostHandle(ptr unsafe.Pointer, size uint32) uint64 {
	if handler == nil {
		fail("no handler: call sdk.Handle from init")
		return 0
	}
	return finish(handler(unsafe.Slice((*byte)(ptr), size)))
}

// finish ends a run of outpost_handle or outpost_resume with a handler's
// result.
func finish(res []byte, err error) uint64 {
	if err != nil {
		fail(err.Error())
		return 0
	}
	out = res
	if len(out) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(out))))<<32 | uint64(len(out))
}

// Level is a log level of Log.
type Level int32

// Log levels.
const (
	Debug Level = 0
	Info  Level = 1
	Warn  Level = 2
	Error Level = 3
)

// Log writes msg to the daemon's log with the task's name.
func Log(level Level, msg string) { hostLog(int32(level), strPtr(msg), uint32(len(msg))) }

// Logf formats and logs.
func Logf(level Level, format string, args ...any) { Log(level, fmt.Sprintf(format, args...)) }

// Errors of the host API; compare with errors.Is. The error returned also
// carries the host's message (an *HostError).
var (
	ErrDenied      = errors.New("denied")
	ErrNotFound    = errors.New("not found")
	ErrInvalid     = errors.New("invalid argument")
	ErrTooLarge    = errors.New("too large")
	ErrQuota       = errors.New("kv quota exceeded")
	ErrFailed      = errors.New("failed")
	ErrUnavailable = errors.New("unavailable")
	// ErrTooLate: CallAsyncBy's need-by time cannot be met.
	ErrTooLate = errors.New("need-by time cannot be met")
	// ErrConflict: a shadow update or delete named a version the shadow is not at.
	ErrConflict = errors.New("conflict")
)

// HostError is a negative return code of a host function with the host's
// message.
type HostError struct {
	Code int32
	Msg  string
}

func (e *HostError) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrDenied) and the like work.
func (e *HostError) Is(target error) bool {
	switch e.Code {
	case -1:
		return target == ErrDenied
	case -2:
		return target == ErrNotFound
	case -3:
		return target == ErrInvalid
	case -4:
		return target == ErrTooLarge
	case -5:
		return target == ErrQuota
	case -6:
		return target == ErrFailed
	case -7:
		return target == ErrUnavailable
	case -8:
		return target == ErrTooLate
	case -9:
		return target == ErrConflict
	}
	return false
}

func codeErr(code int32) error {
	if code >= 0 {
		return nil
	}
	return &HostError{Code: code, Msg: string(held())}
}

// held returns the host's held value (outpost.result).
func held() []byte {
	n := hostResult(nil, 0)
	if n <= 0 {
		return nil
	}
	b := make([]byte, n)
	hostResult(unsafe.SliceData(b), uint32(n))
	return b
}

// scratch is the first-try buffer of functions returning data.
var scratch [4096]byte

// data finishes a data-returning host call: n is its return value.
func data(n int32) ([]byte, error) {
	if n < 0 {
		return nil, codeErr(n)
	}
	if int(n) <= len(scratch) {
		return append([]byte(nil), scratch[:n]...), nil
	}
	b := make([]byte, n)
	hostResult(unsafe.SliceData(b), uint32(n))
	return b, nil
}

// Publish publishes payload to topic with qos (0, 1 or 2). The task needs
// a permissions.publish filter matching topic.
func Publish(topic string, payload []byte, qos byte) error {
	return codeErr(hostPublish(strPtr(topic), uint32(len(topic)), bytesPtr(payload), uint32(len(payload)), int32(qos)))
}

// KVGet returns the value at key in the task's namespace, or ErrNotFound.
func KVGet(key []byte) ([]byte, error) {
	return data(hostKVGet(bytesPtr(key), uint32(len(key)), &scratch[0], uint32(len(scratch))))
}

// KVPut stores value at key; ErrQuota when over the task's kv quota.
func KVPut(key, value []byte) error {
	return codeErr(hostKVPut(bytesPtr(key), uint32(len(key)), bytesPtr(value), uint32(len(value))))
}

// KVDelete removes key (a missing key is not an error).
func KVDelete(key []byte) error {
	return codeErr(hostKVDelete(bytesPtr(key), uint32(len(key))))
}

// KVList returns the keys starting with prefix, in byte order.
func KVList(prefix []byte) ([][]byte, error) {
	b, err := data(hostKVList(bytesPtr(prefix), uint32(len(prefix)), &scratch[0], uint32(len(scratch))))
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for len(b) >= 4 {
		n := binary.LittleEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			return keys, errors.New("kv_list: truncated answer")
		}
		keys = append(keys, b[4:4+n])
		b = b[4+n:]
	}
	return keys, nil
}

// Call runs another task synchronously and returns its output. The task
// needs the callee in permissions.call. See docs/abi.md for the deadlock
// risk of deep chains.
func Call(task string, input []byte) ([]byte, error) {
	return data(hostCall(strPtr(task), uint32(len(task)), bytesPtr(input), uint32(len(input)), &scratch[0], uint32(len(scratch))))
}

// ShadowGet returns the document of a device's shadow (name "" for the
// classic shadow), as get/accepted: state with desired, reported and
// delta, metadata, version. The task needs a permissions.shadows pattern
// matching thing. A rejection (ErrNotFound for no shadow, ErrInvalid) is
// a *HostError whose Msg is the AWS error document.
func ShadowGet(thing, name string) ([]byte, error) {
	return heldAnswer(hostShadowGet(strPtr(thing), uint32(len(thing)), strPtr(name), uint32(len(name))))
}

// ShadowUpdate applies an AWS shadow update request
// ({"state":{"desired":{...}},"version":N,"clientToken":"..."}) to a
// device's shadow and returns the document of update/accepted; the device
// gets the delta on its update/delta topic. A request naming an old
// version is ErrConflict.
func ShadowUpdate(thing, name string, request []byte) ([]byte, error) {
	return heldAnswer(hostShadowUpdate(strPtr(thing), uint32(len(thing)), strPtr(name), uint32(len(name)), bytesPtr(request), uint32(len(request))))
}

// ShadowDelete deletes a device's shadow; request is empty or
// {"version":N,"clientToken":"..."}. It returns the document of
// delete/accepted.
func ShadowDelete(thing, name string, request []byte) ([]byte, error) {
	return heldAnswer(hostShadowDelete(strPtr(thing), uint32(len(thing)), strPtr(name), uint32(len(name)), bytesPtr(request), uint32(len(request))))
}

// heldAnswer finishes a host call whose answer is held, never copied to a
// buffer: n is its length or a negative code.
func heldAnswer(n int32) ([]byte, error) {
	if n < 0 {
		return nil, codeErr(n)
	}
	return held(), nil
}

// CallMeta describes the call being served.
type CallMeta struct {
	ID             string
	Source         string // kind:ref
	IdempotencyKey string
	Task           string    // this task's name
	Deadline       time.Time // zero if none
}

// Meta returns the current call's metadata.
func Meta() CallMeta {
	field := func(f int32) string {
		b, _ := data(hostMeta(f, &scratch[0], uint32(len(scratch))))
		return string(b)
	}
	m := CallMeta{ID: field(0), Source: field(1), IdempotencyKey: field(2), Task: field(3)}
	if d := hostDeadline(); d != 0 {
		m.Deadline = time.Unix(0, d)
	}
	return m
}

// Now is the host's wall clock.
func Now() time.Time { return time.Unix(0, hostNow()) }

func strPtr(s string) *byte { return unsafe.StringData(s) }

func bytesPtr(b []byte) *byte { return unsafe.SliceData(b) }

// fail reports a failure of the current call.
func fail(msg string) { hostFail(strPtr(msg), uint32(len(msg))) }
