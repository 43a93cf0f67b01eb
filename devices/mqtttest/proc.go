package mqtttest

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// RSS is the resident set size in bytes of process pid ("self": the
// calling one), for memory benchmarks of brokers.
func RSS(tb testing.TB, pid string) int64 {
	tb.Helper()
	return statusBytes(tb, pid, "VmRSS")
}

// RSSAnon is the anonymous part of RSS (heap, stacks: not the pages of
// mapped files, such as a store's logs) in bytes of process pid.
func RSSAnon(tb testing.TB, pid string) int64 {
	tb.Helper()
	return statusBytes(tb, pid, "RssAnon")
}

// statusBytes reads a field in kB of /proc/PID/status, in bytes.
func statusBytes(tb testing.TB, pid, field string) int64 {
	tb.Helper()
	st, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no " + field + " in /proc/" + pid + "/status")
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

// Generator is a load generator running in a child process: the test
// binary itself again (os.Args[0]), told by its environment to generate
// load; it reads commands on In, one a line, and answers each on Out.
type Generator struct {
	In  io.Writer
	Out *bufio.Scanner
}

// StartGenerator starts the test binary with args and env added to this
// process's environment; the child exits at the end of its input, when the
// benchmark ends.
func StartGenerator(tb testing.TB, args []string, env ...string) *Generator {
	tb.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = in.Close()
		_ = cmd.Wait()
	})
	return &Generator{In: in, Out: bufio.NewScanner(out)}
}
