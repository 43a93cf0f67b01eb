package server

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveEnv makes the test binary a server process (TestMain): its value
// is the JSON of procOptions. Tests kill such a process with -9.
const serveEnv = "OUTPOST_TEST_SERVE"

type procOptions struct {
	Dir        string `json:"dir"`
	Store      string `json:"store"`
	LeaseMS    int64  `json:"lease_ms"`
	JobLeaseMS int64  `json:"job_lease_ms"`
	Addr       string `json:"addr"` // "": a free loopback port
}

// serveForTest runs a server until SIGTERM, printing "listening on URL
// ID" (its replica id) once it serves.
func serveForTest(cfg string) int {
	var o procOptions
	if err := json.Unmarshal([]byte(cfg), &o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s, err := Open(Options{Dir: o.Dir, Store: o.Store, Lease: time.Duration(o.LeaseMS) * time.Millisecond,
		JobLease: time.Duration(o.JobLeaseMS) * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	ln, err := net.Listen("tcp", cmp.Or(o.Addr, "127.0.0.1:0"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hs := &http.Server{Handler: s.Handler()}
	go func() { _ = hs.Serve(ln) }()
	fmt.Printf("listening on http://%s %s\n", ln.Addr(), s.ID())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	_ = hs.Close()
	return 0
}

// proc is a server process started by a test.
type proc struct {
	cmd  *exec.Cmd
	url  string
	id   string
	addr string
}

// startProc starts a server process (the test binary) with o and waits
// until it serves; it is killed when the test ends.
func startProc(t testing.TB, o procOptions) *proc {
	t.Helper()
	cfg, _ := json.Marshal(o)
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+string(cfg))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd}
	t.Cleanup(p.kill)
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "listening on ") {
				line <- sc.Text()
			}
		}
	}()
	select {
	case l := <-line:
		f := strings.Fields(l)
		p.url, p.id = f[2], f[3]
		p.addr = strings.TrimPrefix(p.url, "http://")
	case <-time.After(60 * time.Second):
		t.Fatal("server process did not start")
	}
	return p
}

// kill kills the process with -9 and reaps it.
func (p *proc) kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// rss is the process's resident memory in bytes.
func (p *proc) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
