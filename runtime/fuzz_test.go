package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// FuzzHostABI calls every host function of ABI v1 with arbitrary pointer,
// length and value arguments, forwarded unchanged by the fuzzabi fixture
// from the input. The host must never panic, never touch memory outside the
// given ranges (the fixture's own data stays intact) and answer every call
// with a return code, a trap naming the host function, or (for fail) a
// failed call. Op 15 fuzzes the other direction, the buffer the guest's
// outpost_input_buffer returns: the fixture returns (a0 << 32) | a1 at the
// next buffer request, which a second call with an input one to 1024 bytes
// longer than the buffer the host holds forces; the host must accept exactly
// the buffers inside memory with room for the input (and then write there),
// and fail the others with invalid before writing anything. Seeds:
// testdata/fuzz/FuzzHostABI.
func FuzzHostABI(f *testing.F) {
	host := newMemHost()
	host.tele = &fakeTelemetry{}
	// Logs go nowhere: f.Log may not be called from the fuzz target.
	e := newHostEngine(f, host, slog.New(slog.DiscardHandler),
		Spec{Name: "fuzz", Module: fixture(f, "fuzzabi"), Timeout: 30 * time.Second, Concurrency: 1,
			Permissions: Permissions{Publish: []string{"#"}, Call: []string{"echo"}, KVQuota: 1 << 20, Telemetry: true}},
		Spec{Name: "echo", Module: "builtin:echo"},
	)
	// A few seeds in code besides the corpus files: in range, at the edge
	// of memory, past it.
	f.Add(uint8(opKVPut), uint32(1056), uint32(3), uint32(1059), uint32(4), uint32(0), uint32(0), []byte("keyvalu"))
	f.Add(uint8(opKVGet), uint32(1056), uint32(3), uint32(65535), uint32(1), uint32(0), uint32(0), []byte("key"))
	f.Add(uint8(opPublish), uint32(0xFFFFFFFF), uint32(2), uint32(0), uint32(0), uint32(1), uint32(0), []byte(nil))
	// telemetry_latest (op 13 here) and telemetry_query (op 14); the tail starts at 1052.
	f.Add(uint8(13), uint32(1052), uint32(3), uint32(1055), uint32(4), uint32(0), uint32(0), []byte("sw*/..."))
	f.Add(uint8(14), uint32(1052), uint32(14), uint32(0), uint32(0), uint32(0), uint32(0), []byte(`{"since":"1h"}`))
	// outpost_input_buffer (op 15): a whole page, capacity one short, past memory.
	f.Add(uint8(opInputBuffer), uint32(0), uint32(65536), uint32(0), uint32(0), uint32(0), uint32(0), []byte(nil))
	f.Add(uint8(opInputBuffer), uint32(0), uint32(64512), uint32(0), uint32(0), uint32(0), uint32(0), []byte(nil))
	f.Add(uint8(opInputBuffer), uint32(0xFFFFFFFF), uint32(0xFFFFFFFF), uint32(7), uint32(0), uint32(0), uint32(0), []byte(nil))
	ctx := context.Background()
	// The capacity of the buffer the host holds for the fixture's instance:
	// the default until op 15 gives another, and again after any failure
	// (the next instance starts with the default).
	const defaultCap = 64512
	held := uint32(defaultCap)
	f.Fuzz(func(t *testing.T, op uint8, a0, a1, a2, a3, a4, a5 uint32, tail []byte) {
		if len(tail) > 4096 {
			tail = tail[:4096]
		}
		op %= 16
		in := make([]byte, 28, 28+len(tail))
		binary.LittleEndian.PutUint32(in, uint32(op))
		for i, a := range []uint32{a0, a1, a2, a3, a4, a5} {
			binary.LittleEndian.PutUint32(in[4+4*i:], a)
		}
		in = append(in, tail...)
		out, err := e.Call(ctx, "fuzz", in)
		if err != nil {
			held = defaultCap
		}
		if op == opInputBuffer && err == nil {
			size := uint64(held) + 1 + uint64(a2%1024)
			ok := uint64(a1) >= size && uint64(a0)+uint64(a1) <= 65536
			out, err = e.Call(ctx, "fuzz", make([]byte, size))
			var ce *CallError
			switch {
			case ok && err == nil && len(out) == 8:
				held = a1
			case ok:
				t.Fatalf("buffer %#x capacity %d for %d bytes refused: %v", a0, a1, size, err)
			case err == nil:
				t.Fatalf("buffer %#x capacity %d for %d bytes accepted, want invalid", a0, a1, size)
			case !errors.As(err, &ce) || ce.Kind != KindInvalidOutput || !strings.HasPrefix(ce.Msg, fmt.Sprintf("%s(%d) returned ", exportInputBuffer, size)):
				t.Fatalf("buffer %#x capacity %d for %d bytes: %v, want invalid", a0, a1, size, err)
			default:
				held = defaultCap
			}
			return
		}
		host.mu.Lock()
		host.pubs = nil
		host.mu.Unlock()
		if err == nil {
			if len(out) != 8 {
				t.Fatalf("output %x, want the 8-byte result", out)
			}
			r := int64(binary.LittleEndian.Uint64(out))
			if op != opDeadline && op != opNow && (r < codeUnavailable || r > 1<<31-1) {
				t.Fatalf("op %d returned %d: neither a length nor a code", op, r)
			}
			return
		}
		var ce *CallError
		switch {
		case !errors.As(err, &ce):
			t.Fatalf("error is not a CallError: %v", err)
		case ce.Kind == KindFailed && op == 12:
		case ce.Kind == KindTrap && strings.HasPrefix(ce.Msg, "outpost."):
			// A host check; a Go panic in a host function would read
			// "outpost_handle: runtime error ..." or "host panic: ...".
		default:
			t.Fatalf("op %d: unexpected failure %v", op, err)
		}
	})
}

// opInputBuffer is the fuzzabi fixture's op setting its next
// outpost_input_buffer result.
const opInputBuffer = 15
