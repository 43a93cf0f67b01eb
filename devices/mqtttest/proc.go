package mqtttest

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// RSS is the resident set size in bytes of process pid ("self": the
// calling one), for memory benchmarks of brokers.
func RSS(tb testing.TB, pid string) int64 {
	tb.Helper()
	st, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/" + pid + "/status")
	return 0
}

// OpenFiles is the number of open files of process pid: a broker has let
// its clients go when it is back near what it was before they connected.
func OpenFiles(tb testing.TB, pid int) int {
	tb.Helper()
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(fds)
}
