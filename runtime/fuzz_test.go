package runtime

import (
	"context"
	"encoding/binary"
	"errors"
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
// failed call. Seeds: testdata/fuzz/FuzzHostABI.
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
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, op uint8, a0, a1, a2, a3, a4, a5 uint32, tail []byte) {
		if len(tail) > 4096 {
			tail = tail[:4096]
		}
		in := make([]byte, 28, 28+len(tail))
		binary.LittleEndian.PutUint32(in, uint32(op%15))
		for i, a := range []uint32{a0, a1, a2, a3, a4, a5} {
			binary.LittleEndian.PutUint32(in[4+4*i:], a)
		}
		in = append(in, tail...)
		out, err := e.Call(ctx, "fuzz", in)
		host.mu.Lock()
		host.pubs = nil
		host.mu.Unlock()
		if err == nil {
			if len(out) != 8 {
				t.Fatalf("output %x, want the 8-byte result", out)
			}
			r := int64(binary.LittleEndian.Uint64(out))
			if o := op % 15; o != opDeadline && o != opNow && (r < codeUnavailable || r > 1<<31-1) {
				t.Fatalf("op %d returned %d: neither a length nor a code", o, r)
			}
			return
		}
		var ce *CallError
		switch {
		case !errors.As(err, &ce):
			t.Fatalf("error is not a CallError: %v", err)
		case ce.Kind == KindFailed && op%15 == 12:
		case ce.Kind == KindTrap && strings.HasPrefix(ce.Msg, "outpost."):
			// A host check; a Go panic in a host function would read
			// "outpost_handle: runtime error ..." or "host panic: ...".
		default:
			t.Fatalf("op %d: unexpected failure %v", op%15, err)
		}
	})
}
