package coordinator

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// DefaultMemoryLimit is the floor of the soft limit on the Go runtime's
// memory (heap, stacks; not the tasks' linear memories, which live off the
// heap) that the daemon sets when GOMEMLIMIT is not in its environment.
// Below it the collector paces itself as usual (GOGC); past it, as after a
// burst that left tens of MB of garbage and a raised collection goal, it
// collects and gives the freed memory back to the OS soon, instead of at
// the next forced collection minutes later.
const DefaultMemoryLimit = 64 << 20

// memoryLimitEvery is how often the limit follows the live heap;
// memoryLimitStale is how long a raised limit may rest on the live heap of
// a collection that old before the daemon collects to measure it again
// and gives the freed memory back: garbage a burst left under a raised
// limit triggers no collection itself.
const (
	memoryLimitEvery = 2 * time.Second
	memoryLimitStale = 10 * time.Second
)

// ApplyMemoryLimit sets the soft limit unless GOMEMLIMIT is set (the Go
// runtime applied that one at start) and returns the limit in effect.
// Without GOMEMLIMIT the limit follows what the daemon really holds until
// ctx ends: DefaultMemoryLimit, or more when the live heap needs it (say
// thousands of connected devices), so that a large live heap is collected
// at GOGC's pace instead of continuously, as a fixed limit below it would.
func ApplyMemoryLimit(ctx context.Context, getenv func(string) string) int64 {
	if getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1) // reads the limit without changing it
	}
	limit, cycles := adjustMemoryLimit()
	go func() {
		t := time.NewTicker(memoryLimitEvery)
		defer t.Stop()
		since := time.Now() // of the last collection seen
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now := time.Now()
			if limit > DefaultMemoryLimit && now.Sub(since) >= memoryLimitStale {
				debug.FreeOSMemory() // a collection that also gives the garbage back now
			}
			last := cycles
			if limit, cycles = adjustMemoryLimit(); cycles != last {
				since = now
			}
		}
	}()
	return limit
}

// memSamples are the runtime metrics adjustMemoryLimit reads: the live
// heap after the last collection, all memory the runtime mapped, and the
// heap's part of it (what is not heap: stacks, metadata, stays as it is).
var memSamples = []string{
	"/gc/heap/live:bytes",
	"/gc/cycles/total:gc-cycles",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

// adjustMemoryLimit sets the limit to the larger of DefaultMemoryLimit and
// what the live heap with GOGC's headroom (twice the live heap) plus the
// memory outside the heap needs, and returns it with the number of
// collections so far.
func adjustMemoryLimit() (int64, uint64) {
	s := make([]rtmetrics.Sample, len(memSamples))
	for i, name := range memSamples {
		s[i].Name = name
	}
	rtmetrics.Read(s)
	v := func(i int) int64 { return int64(s[i].Value.Uint64()) }
	live, total := v(0), v(2)
	nonHeap := total - v(3) - v(4) - v(5) - v(6)
	limit := max(DefaultMemoryLimit, 2*live+nonHeap)
	debug.SetMemoryLimit(limit)
	return limit, s[1].Value.Uint64()
}
