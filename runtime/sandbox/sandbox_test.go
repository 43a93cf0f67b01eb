package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// buildProbe builds testdata/probe as a static executable.
func buildProbe(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command("go", "build", "-o", exe, "./testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
	return exe
}

func TestSandbox(t *testing.T) {
	exe := buildProbe(t)
	for _, root := range []string{"", "none"} {
		r := Runner{CgroupRoot: root}
		mode, err := r.Check(context.Background())
		if err != nil {
			t.Fatalf("the sandbox is a required peer (Debian bubblewrap): %v", err)
		}
		t.Run(mode, func(t *testing.T) { testSandbox(t, r, mode, exe) })
	}
}

func testSandbox(t *testing.T, r Runner, mode, exe string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	mounted := filepath.Join(dir, "data.txt")
	for _, f := range []string{secret, mounted} {
		if err := os.WriteFile(f, []byte("contents of "+filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := Spec{Task: "probe", Executable: exe, Memory: 64 << 20, Timeout: 10 * time.Second, MaxOutput: 64 << 10,
		Files: []outpostrt.File{{Path: "/data/data.txt", Source: mounted}}}
	for _, tc := range []struct {
		name  string
		spec  func(Spec) Spec
		input string
		want  string         // output, when it succeeds
		has   []string       // lines the output has, when want is empty
		kind  outpostrt.Kind // failure kind otherwise
		msg   string         // in the failure's message
	}{
		{name: "echo", input: "hello", want: "echo:hello"},
		{name: "no privileges", input: "read /proc/self/status", has: []string{"Uid:\t65534\t65534\t65534\t65534", "CapEff:\t0000000000000000", "NoNewPrivs:\t1"}},
		{name: "mounted file", input: "read /data/data.txt", want: "contents of data.txt"},
		{name: "file outside its dir", input: "read " + secret, kind: outpostrt.KindFailed, msg: "no such file"},
		{name: "no network", input: "dial " + ln.Addr().String(), kind: outpostrt.KindFailed, msg: "connection refused"},
		{name: "network granted", spec: func(s Spec) Spec { s.Network = true; return s }, input: "dial " + ln.Addr().String(), want: "connected"},
		{name: "memory over the limit", input: "alloc", kind: outpostrt.KindMemory, msg: "memory limit"},
		{name: "memory granted", spec: func(s Spec) Spec { s.Memory = 1 << 30; return s }, input: "alloc", want: "268435456"},
		{name: "timeout", spec: func(s Spec) Spec { s.Timeout = 300 * time.Millisecond; return s }, input: "sleep", kind: outpostrt.KindTimeout},
		{name: "output over max_output", input: "flood", kind: outpostrt.KindInvalidOutput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			if tc.spec != nil {
				s = tc.spec(s)
			}
			start := time.Now()
			out, err := r.Run(context.Background(), s, []byte(tc.input))
			if tc.kind == "" {
				if err != nil || tc.want != "" && string(out) != tc.want {
					t.Fatalf("Run = %q, %v; want %q", out, err, tc.want)
				}
				for _, line := range tc.has {
					if !strings.Contains(string(out), line+"\n") {
						t.Errorf("output lacks %q:\n%s", line, out)
					}
				}
				return
			}
			ce, ok := errors.AsType[*outpostrt.CallError](err)
			if ok && mode == "rlimit" && tc.kind == outpostrt.KindMemory && ce.Kind == outpostrt.KindFailed {
				// Under RLIMIT_DATA the allocation fails, but the Go
				// runtime sometimes dies of it without saying so.
				return
			}
			if !ok || ce.Kind != tc.kind || !strings.Contains(ce.Msg, tc.msg) {
				t.Fatalf("Run = %q, %v; want a %s error saying %q", out, err, tc.kind, tc.msg)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Fatalf("took %s", d)
			}
		})
	}
}

func TestSandboxMissingBwrap(t *testing.T) {
	r := Runner{Bwrap: filepath.Join(t.TempDir(), "no-bwrap")}
	if _, err := r.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "no bubblewrap") {
		t.Fatalf("Check = %v, want no bubblewrap", err)
	}
	_, err := r.Run(context.Background(), Spec{Task: "x", Executable: "/bin/true", Timeout: time.Second}, nil)
	if ce, ok := errors.AsType[*outpostrt.CallError](err); !ok || !strings.Contains(ce.Msg, "process environment unavailable") {
		t.Fatalf("Run = %v", err)
	}
}

// The run cgroup of a daemon killed during a run is removed by the next
// Check; a live process's is kept.
func TestSandboxSweepsCgroups(t *testing.T) {
	root, _ := findCgroupRoot("")
	if root == "" {
		t.Fatal("no memory cgroup hierarchy here")
	}
	dead := filepath.Join(root, cgroupParent, "run-2147483646-1") // above pid_max: never a live pid
	live := filepath.Join(root, cgroupParent, fmt.Sprintf("run-%d-999999", os.Getpid()))
	for _, d := range []string{dead, live} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defer os.Remove(live)
	if _, err := (Runner{}).Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead daemon's cgroup is still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live daemon's cgroup was removed: %v", err)
	}
}
