package devices

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv("OUTPOST_IDLE_LOAD"); addr != "" { // BenchmarkIdleClientMemory's load generator
		os.Exit(runIdleLoad(addr, os.Getenv("OUTPOST_IDLE_CA"), os.Stdin, os.Stdout))
	}
	goleak.VerifyTestMain(m)
}
