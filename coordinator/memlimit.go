package coordinator

import "runtime/debug"

// DefaultMemoryLimit is the soft limit on the Go runtime's memory (heap,
// stacks; not the tasks' linear memories, which live off the heap) that
// the daemon sets when GOMEMLIMIT is not in its environment. Below it the
// collector paces itself as usual (GOGC); past it, as after a burst that
// left tens of MB of garbage and a raised collection goal, it collects and
// gives the freed memory back to the OS soon, instead of at the next
// forced collection minutes later. It is soft: a live heap larger than it
// is still served, with more frequent collections.
const DefaultMemoryLimit = 64 << 20

// ApplyMemoryLimit sets DefaultMemoryLimit unless GOMEMLIMIT is set (the
// Go runtime applied that one at start), and returns the limit in effect.
func ApplyMemoryLimit(getenv func(string) string) int64 {
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(DefaultMemoryLimit)
	}
	return debug.SetMemoryLimit(-1) // reads the limit without changing it
}
