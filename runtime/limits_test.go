package runtime

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSizeLimits(t *testing.T) {
	e := newEngine(t,
		Spec{Name: "echo", Module: "builtin:echo", MaxInput: 100, MaxOutput: 50},
		Spec{Name: "cmd", Module: fixture(t, "command"), MaxOutput: 50},
	)
	ctx := context.Background()
	for _, tc := range []struct {
		task   string
		size   int
		kind   Kind
		msgHas string
	}{
		{"echo", 40, "", ""},
		{"echo", 101, KindTooLarge, "input of 101 bytes exceeds limits.max_input of 100 bytes"},
		{"echo", 60, KindInvalidOutput, "output of 60 bytes exceeds limits.max_output of 50 bytes"},
		{"cmd", 40, "", ""},
		{"cmd", 60, KindInvalidOutput, "output exceeds limits.max_output of 50 bytes"},
	} {
		in := bytes.Repeat([]byte{'a'}, tc.size)
		out, err := e.Call(ctx, tc.task, in)
		if tc.kind == "" {
			if err != nil || !bytes.Equal(out, in) {
				t.Errorf("%s(%d bytes): %v", tc.task, tc.size, err)
			}
			continue
		}
		var ce *CallError
		if !errors.As(err, &ce) || ce.Kind != tc.kind || !strings.Contains(ce.Msg, tc.msgHas) {
			t.Errorf("%s(%d bytes): got %v, want kind %s with %q", tc.task, tc.size, err, tc.kind, tc.msgHas)
		}
	}
	if n := testutil.ToFloat64(e.metrics.sizeExceeded.WithLabelValues("echo", "input")); n != 1 {
		t.Errorf("input size metric = %v, want 1", n)
	}
	if n := testutil.ToFloat64(e.metrics.sizeExceeded.WithLabelValues("cmd", "output")); n != 1 {
		t.Errorf("output size metric (cmd) = %v, want 1", n)
	}
}

func TestMemoryBudget(t *testing.T) {
	ctx := context.Background()
	e := New(Options{Logger: testLogger(t), MemoryBudget: 3 << 20})
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	// Two pooled 1 MiB instances are warm after the load (one each); the
	// fresh task needs one 1 MiB instance per call.
	set, err := e.Load(ctx, []Spec{
		{Name: "a", Module: "builtin:echo", MemoryLimit: 1 << 20},
		{Name: "b", Module: "builtin:echo", MemoryLimit: 1 << 20},
		{Name: "fresh", Module: "builtin:echo", MemoryLimit: 1 << 20, FreshInstance: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Activate(set)
	if got := e.memUsed.Load(); got != 2<<20 {
		t.Fatalf("reserved %d bytes after load, want %d", got, 2<<20)
	}
	if _, err := e.Call(ctx, "fresh", []byte("x")); err != nil {
		t.Fatalf("fresh call within the budget: %v", err)
	}
	// Over the budget: a fourth task cannot even load.
	_, err = e.Load(ctx, []Spec{
		{Name: "a", Module: "builtin:echo", MemoryLimit: 1 << 20},
		{Name: "b", Module: "builtin:echo", MemoryLimit: 1 << 20},
		{Name: "fresh", Module: "builtin:echo", MemoryLimit: 1 << 20, FreshInstance: true},
		{Name: "big", Module: "builtin:echo", MemoryLimit: 2 << 20},
	})
	if err == nil || !strings.Contains(err.Error(), `task "big"`) || !strings.Contains(err.Error(), "memory budget exhausted") {
		t.Fatalf("load past the budget: %v", err)
	}
	// A task keeping one more warm instance takes the last MiB: the fresh
	// task's next instance is refused.
	set, err = e.Load(ctx, []Spec{
		{Name: "a", Module: "builtin:echo", MemoryLimit: 1 << 20},
		{Name: "b", Module: "builtin:echo", MemoryLimit: 1 << 20},
		{Name: "fresh", Module: "builtin:echo", MemoryLimit: 1 << 20, FreshInstance: true},
		{Name: "c", Module: "builtin:echo", MemoryLimit: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Activate(set)
	_, err = e.Call(ctx, "fresh", []byte("x"))
	var ce *CallError
	if !errors.As(err, &ce) || ce.Kind != KindMemory || !errors.Is(err, ErrMemoryBudget) {
		t.Fatalf("call past the budget: %v", err)
	}
	if n := testutil.ToFloat64(e.metrics.budgetRefused.WithLabelValues("fresh")); n != 1 {
		t.Errorf("refusal metric = %v, want 1", n)
	}
}

// An instance whose linear memory grew past maxPooledMemory is closed after
// its call instead of kept warm (its pages go back to the OS); a small one
// is kept.
func TestLargeInstanceNotPooled(t *testing.T) {
	e := newEngine(t, Spec{Name: "bigout", Module: fixture(t, "bigout"), MemoryLimit: 64 << 20, MaxOutput: 32 << 20, Concurrency: 1})
	for _, tc := range []struct {
		mib  int
		warm int
	}{{1, 1}, {maxPooledMemory>>20 + 1, 0}} {
		out, err := e.Call(context.Background(), "bigout", make([]byte, tc.mib))
		if err != nil || len(out) != tc.mib<<20 {
			t.Fatalf("%d MiB: %d bytes, %v", tc.mib, len(out), err)
		}
		if st, _ := e.Inspect("bigout"); st.Warm != tc.warm {
			t.Errorf("after a call with %d MiB of memory: %d warm instances, want %d", tc.mib, st.Warm, tc.warm)
		}
	}
}
