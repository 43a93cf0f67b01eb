package coordinator

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	debug.SetMemoryLimit(math.MaxInt64) // no limit
	if got := ApplyMemoryLimit(func(string) string { return "" }); got != DefaultMemoryLimit {
		t.Errorf("without GOMEMLIMIT: limit %d, want %d", got, DefaultMemoryLimit)
	}
	debug.SetMemoryLimit(1 << 30) // as the runtime does from GOMEMLIMIT=1GiB
	if got := ApplyMemoryLimit(func(string) string { return "1GiB" }); got != 1<<30 {
		t.Errorf("with GOMEMLIMIT: limit %d, want it kept at 1GiB", got)
	}
}
