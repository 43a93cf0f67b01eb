//go:build unix

package runtime

import (
	"syscall"
	"testing"
	"time"
)

// cpuMeter reports a benchmark's CPU time per operation (user and system, of
// every thread of the process: garbage collection and wazero's goroutines
// count) as "cpu-ns/op". On a shared machine wall time includes waiting for
// a core; CPU time does not.
type cpuMeter struct {
	start time.Duration
	ops   int
}

func startCPU() *cpuMeter { return &cpuMeter{start: processCPU()} }

func (m *cpuMeter) report(b *testing.B) {
	if m.ops > 0 {
		b.ReportMetric(float64(processCPU()-m.start)/float64(m.ops), "cpu-ns/op")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
