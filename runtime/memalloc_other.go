//go:build !linux

package runtime

var osPageSize uint64 = 65536

// mapMemory is Linux only: elsewhere memories live on the Go heap.
func mapMemory(uint64) ([]byte, bool) { return nil, false }

func releaseMemory(b []byte) { clear(b) }

func unmapMemory([]byte) {}
