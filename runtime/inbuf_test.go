package runtime

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// TestInputBuffer checks outpost_input_buffer (docs/abi.md "Reactor"): the
// host asks for the buffer once per instance and again only when an input
// outgrows it, never calls outpost_alloc then, writes every input into the
// buffer, and fails a call whose buffer is refused. The same module without
// the export still gets outpost_alloc on every call.
func TestInputBuffer(t *testing.T) {
	src, err := os.ReadFile("testdata/inbuf.wat")
	if err != nil {
		t.Fatal(err)
	}
	noExport := bytes.Replace(src, []byte(`(export "outpost_input_buffer") `), nil, 1)
	if bytes.Equal(noExport, src) {
		t.Fatal("testdata/inbuf.wat: export outpost_input_buffer not found")
	}
	allocSrc := filepath.Join(t.TempDir(), "inbuf-alloc.wat")
	if err := os.WriteFile(allocSrc, noExport, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t,
		Spec{Name: "inbuf", Module: fixture(t, "inbuf"), Concurrency: 1},
		Spec{Name: "fresh", Module: fixture(t, "inbuf"), Concurrency: 1, FreshInstance: true},
		Spec{Name: "alloc", Module: wasmtest.WAT(t, allocSrc, ""), Concurrency: 1},
	)
	ctx := context.Background()
	// call returns the fixture's counts of outpost_input_buffer and
	// outpost_alloc calls, checking the input came through intact.
	call := func(t *testing.T, task string, size int) (bufCalls, allocCalls uint32, err error) {
		t.Helper()
		in := make([]byte, size)
		for i := range in {
			in[i] = byte(i*7 + size)
		}
		out, err := e.Call(ctx, task, in)
		if err != nil {
			return 0, 0, err
		}
		if len(out) != 8+size || !bytes.Equal(out[8:], in) {
			t.Fatalf("%s(%d bytes): output %x, want the counts then the input", task, size, out)
		}
		return binary.LittleEndian.Uint32(out), binary.LittleEndian.Uint32(out[4:]), nil
	}

	type step struct {
		size             int
		bufCalls, allocs uint32
	}
	for _, tt := range []struct {
		name, task string
		steps      []step
	}{
		// Capacity max(size, 32): 5 gets 32 bytes, 33 outgrows them, 900 too.
		{"buffer asked once, again when an input grows", "inbuf", []step{
			{5, 1, 0}, {32, 1, 0}, {0, 1, 0}, {33, 2, 0}, {20, 2, 0}, {900, 3, 0}, {33, 3, 0}}},
		{"fresh instance asks every call", "fresh", []step{{5, 1, 0}, {5, 1, 0}, {40, 1, 0}}},
		{"without the export outpost_alloc every call", "alloc", []step{{5, 0, 1}, {5, 0, 2}, {40, 0, 3}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for i, s := range tt.steps {
				b, a, err := call(t, tt.task, s.size)
				if err != nil {
					t.Fatalf("call %d (%d bytes): %v", i, s.size, err)
				}
				if b != s.bufCalls || a != s.allocs {
					t.Fatalf("call %d (%d bytes): outpost_input_buffer called %d times, outpost_alloc %d; want %d and %d",
						i, s.size, b, a, s.bufCalls, s.allocs)
				}
			}
		})
	}

	for _, tt := range []struct {
		size int
		kind Kind
		msg  string
	}{
		{1000, KindInvalidOutput, "outpost_input_buffer(1000) returned capacity 999, less than the input"},
		{1001, KindInvalidOutput, "outpost_input_buffer(1001) returned buffer at 0xffff0000 capacity 4096, outside linear memory (65536 bytes)"},
		{1002, KindInvalidOutput, "outpost_input_buffer(1002) returned buffer at 0xffffffff capacity 4294967295, outside linear memory (65536 bytes)"},
		{1003, KindTrap, "outpost_input_buffer: wasm error: unreachable"},
	} {
		t.Run(tt.msg, func(t *testing.T) {
			// The pooled instance holds a 900-byte buffer: 1000 and up ask again.
			_, _, err := call(t, "inbuf", tt.size)
			var ce *CallError
			if !errors.As(err, &ce) || ce.Kind != tt.kind || ce.Msg != tt.msg {
				t.Fatalf("err = %v, want %s: %s", err, tt.kind, tt.msg)
			}
			// The instance was discarded: a new one asks for its buffer.
			if b, a, err := call(t, "inbuf", 5); err != nil || b != 1 || a != 0 {
				t.Fatalf("next call: %d buffer calls, %d alloc calls, %v; want a new instance", b, a, err)
			}
			if _, _, err := call(t, "inbuf", 900); err != nil {
				t.Fatal(err)
			}
		})
	}
}
