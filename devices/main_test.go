package devices

import (
	"os"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv("OUTPOST_IDLE_LOAD"); addr != "" { // BenchmarkIdleClientMemory's load generator
		os.Exit(runIdleLoad(addr, os.Getenv("OUTPOST_IDLE_CA"), os.Stdin, os.Stdout))
	}
	secretCost = bcrypt.MinCost // the tests check identities, not the hash's strength
	goleak.VerifyTestMain(m)
}
