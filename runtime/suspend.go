package runtime

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
)

// Suspended is the error of a call whose guest ended its run with
// outpost.suspend (docs/abi.md "Suspending a call"): it keeps State, the
// bytes the guest chose to keep, and waits for the calls of Waits. The
// instance went back to the pool; nothing of it is kept. Whoever ran the
// call resumes it, once every call of Waits has finished, with
// Engine.Resume and the document EncodeResume builds; until then it owns
// the calls of Waits (the runtime does not cancel them).
type Suspended struct {
	Task  string
	State []byte
	Waits []Awaited
}

// Awaited is one call a suspended call waits for: the handle the guest
// knows it by and the Host's Pending.
type Awaited struct {
	Handle  int32
	Task    string
	Pending Pending
}

func (s *Suspended) Error() string {
	hs := make([]string, len(s.Waits))
	for i, w := range s.Waits {
		hs[i] = fmt.Sprintf("%d (%s)", w.Handle, w.Task)
	}
	return fmt.Sprintf("task %q suspended, waiting for handles %s", s.Task, strings.Join(hs, ", "))
}

// cancel cancels the calls s waits for: the call failed after suspending.
func (s *Suspended) cancel() {
	for _, w := range s.Waits {
		w.Pending.Cancel()
	}
}

// SuspendableKey is the context key saying whether the call of a context
// may suspend: Value(SuspendableKey{}) is true when whoever runs the call
// can keep a suspended call and resume it (the coordinator's journaled
// calls). Elsewhere outpost.suspend returns unavailable.
type SuspendableKey struct{}

func suspendable(ctx context.Context) bool {
	v, _ := ctx.Value(SuspendableKey{}).(bool)
	return v
}

// ResumeResult is the outcome of one awaited call in a resume document:
// Code is what outpost.await would have returned for it (0: Data is the
// output; negative: a code of docs/abi.md, Data the held message).
type ResumeResult struct {
	Handle int32
	Code   int32
	Data   []byte
}

// ResultOf is the ResumeResult of handle for a call that returned out, or
// err as a Pending's Await does (mapped to a code as await maps it).
func ResultOf(handle int32, out []byte, err error) ResumeResult {
	if err != nil {
		return ResumeResult{Handle: handle, Code: hostErrCode(err), Data: []byte(err.Error())}
	}
	return ResumeResult{Handle: handle, Data: out}
}

// maxSuspendState bounds the state a guest keeps with outpost.suspend.
const maxSuspendState = 1 << 20

// EncodeResume builds the input of outpost_resume (docs/abi.md, "Suspending
// a call"), all integers little-endian: u32 state length, the state, u32
// count, then per result i32 handle, i32 code, u32 length, the bytes.
func EncodeResume(state []byte, results []ResumeResult) []byte {
	n := 8 + len(state)
	for _, r := range results {
		n += 12 + len(r.Data)
	}
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(state)))
	b = append(b, state...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(results)))
	for _, r := range results {
		b = binary.LittleEndian.AppendUint32(b, uint32(r.Handle))
		b = binary.LittleEndian.AppendUint32(b, uint32(r.Code))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Data)))
		b = append(b, r.Data...)
	}
	return b
}
