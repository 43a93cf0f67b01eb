package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestSuspend: a run that suspends returns a *Suspended error with the
// state and the handle it waits on, uncanceled; Resume runs
// outpost_resume with the document EncodeResume builds. A call that cannot
// suspend gets unavailable, bad arguments invalid, and a run that fails
// after suspending cancels what it waited for.
func TestSuspend(t *testing.T) {
	host := newMemHost()
	e := newHostEngine(t, host, nil,
		Spec{Name: "ops", Module: fixture(t, "suspendops"), Concurrency: 4, Permissions: Permissions{Call: []string{"echo"}}},
		Spec{Name: "echo", Module: "builtin:echo", Concurrency: 4})
	suspendable := context.WithValue(context.Background(), SuspendableKey{}, true)

	out, err := e.Call(suspendable, "ops", []byte("secho"))
	var s *Suspended
	if !errors.As(err, &s) || string(s.State) != "kept" || len(s.Waits) != 1 || s.Waits[0].Handle != 1 || s.Waits[0].Task != "echo" {
		t.Fatalf("suspending call: %q, %v", out, err)
	}
	got, err := s.Waits[0].Pending.Await(context.Background())
	if err != nil || string(got) != "ping" {
		t.Fatalf("the call it waits for: %q, %v (canceled?)", got, err)
	}
	doc := EncodeResume(s.State, []ResumeResult{ResultOf(1, got, nil), ResultOf(2, nil, fmt.Errorf("%w %q", ErrUnknownTask, "gone"))})
	out, err = e.Resume(context.Background(), "ops", doc)
	if err != nil || string(out) != string(doc) {
		t.Fatalf("resume: %q, %v", out, err)
	}
	if code := int32(binary.LittleEndian.Uint32(doc[len(doc)-len(`unknown task "gone"`)-8:])); code != codeNotFound {
		t.Errorf("code of a failed result %d, want %d", code, codeNotFound)
	}

	for _, tc := range []struct {
		name     string
		ctx      context.Context
		in       string
		code     int32
		held     string
		canceled int
	}{
		{"not journaled", context.Background(), "secho", codeUnavailable, "only journaled calls can", 1},
		{"no handle", suspendable, "z", codeInvalid, "0 handles; give 1 to 64", 0},
		{"unknown handle", suspendable, "xecho", codeInvalid, "handle 99 is not a call_async handle", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host.mu.Lock()
			before := host.cancels
			host.mu.Unlock()
			out, err := e.Call(tc.ctx, "ops", []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			code := int32(binary.LittleEndian.Uint32(out[4:]))
			n := min(max(int(binary.LittleEndian.Uint32(out[12:])), 0), 200)
			if code != tc.code || !strings.Contains(string(out[16:16+n]), tc.held) {
				t.Errorf("suspend = %d %q, want %d %q", code, out[16:16+n], tc.code, tc.held)
			}
			host.mu.Lock()
			canceled := host.cancels - before
			host.mu.Unlock()
			if canceled != tc.canceled {
				t.Errorf("%d calls canceled at the end of the run, want %d", canceled, tc.canceled)
			}
		})
	}
	t.Run("fail after suspend", func(t *testing.T) {
		host.mu.Lock()
		before := host.cancels
		host.mu.Unlock()
		_, err := e.Call(suspendable, "ops", []byte("fecho"))
		var ce *CallError
		if !errors.As(err, &ce) || ce.Kind != KindFailed {
			t.Fatalf("got %v, want a failed call", err)
		}
		host.mu.Lock()
		defer host.mu.Unlock()
		if host.cancels-before != 1 {
			t.Errorf("%d calls canceled, want the one it waited for", host.cancels-before)
		}
	})
}
