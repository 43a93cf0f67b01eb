package coordinator

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	debug.SetMemoryLimit(math.MaxInt64) // no limit
	if got := ApplyMemoryLimit(ctx, func(string) string { return "" }); got != DefaultMemoryLimit {
		t.Errorf("without GOMEMLIMIT: limit %d, want %d", got, DefaultMemoryLimit)
	}
	cancel()
	debug.SetMemoryLimit(1 << 30) // as the runtime does from GOMEMLIMIT=1GiB
	if got := ApplyMemoryLimit(context.Background(), func(string) string { return "1GiB" }); got != 1<<30 {
		t.Errorf("with GOMEMLIMIT: limit %d, want it kept at 1GiB", got)
	}
}

// TestMemoryLimitFollowsLiveHeap: a live heap larger than the default
// limit raises the limit above it (twice the live heap), so the collector
// does not run continuously; once it is garbage, the limit comes back.
func TestMemoryLimitFollowsLiveHeap(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	const size = 100 << 20
	held := make([][]byte, 100)
	for i := range held {
		held[i] = make([]byte, size/len(held))
		held[i][0] = 1
	}
	runtime.GC()
	if got, _ := adjustMemoryLimit(); got < 2*size {
		t.Errorf("with %d bytes live: limit %d, want at least %d", size, got, 2*size)
	}
	runtime.KeepAlive(held)
	held = nil
	runtime.GC()
	if got, _ := adjustMemoryLimit(); got != DefaultMemoryLimit {
		t.Errorf("after the heap was freed: limit %d, want %d", got, DefaultMemoryLimit)
	}
}
