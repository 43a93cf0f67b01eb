// Package sandbox runs a task's native executable (the process execution
// environment) inside bubblewrap: an empty root with only the executable
// and the task's files mounted read-only, its own PID, IPC, UTS, user and
// network namespaces (no network unless granted), the task's memory limit
// as a memory cgroup of its own (RLIMIT_DATA where there is none) and its
// timeout as a kill. The call's input is the
// process's standard input and its output is what it writes to standard
// output; a non-zero exit fails the call with the end of standard error.
package sandbox

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// Runner starts sandboxed processes with the bwrap and prlimit programs it
// names (found on PATH when empty).
type Runner struct {
	Bwrap   string
	Prlimit string
	// CgroupRoot is the memory cgroup hierarchy runs get a cgroup in:
	// "" finds it (cgroup v1's memory controller, or v2), "none" uses
	// RLIMIT_DATA instead.
	CgroupRoot string
}

// Spec is one run: the executable, the files it sees, its limits.
type Spec struct {
	Task       string
	Executable string // host path; mounted read-only at /task/<base name>
	// Files are host files mounted read-only at their guest paths.
	Files []outpostrt.File
	// Network shares the host's network namespace with the process; false:
	// a namespace of its own with only a loopback interface.
	Network bool
	// Memory is the process's RLIMIT_DATA (its heap and private mappings).
	Memory uint64
	// Timeout bounds the run (the process is killed past it); MaxOutput
	// bounds what it may write to standard output.
	Timeout   time.Duration
	MaxOutput uint64
}

// stderrTail is how much of standard error a failed call's error keeps.
const stderrTail = 512

// Check reports whether the sandbox can run (bwrap and prlimit are found
// and bwrap can create its namespaces here) and how memory is limited:
// "cgroup v1", "cgroup v2" or "rlimit". It removes the run cgroups of
// daemons that died.
func (r Runner) Check(ctx context.Context) (string, error) {
	bw, pl, err := r.programs()
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, pl, "--nofile=64", "--", bw, "--unshare-all", "--die-with-parent",
		"--ro-bind", "/", "/", "true").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("bwrap cannot create a sandbox here: %v: %s", err, bytes.TrimSpace(out))
	}
	if root, _ := findCgroupRoot(r.CgroupRoot); root != "" && r.CgroupRoot != "none" {
		sweepCgroups(root)
	}
	cg, err := r.cgroup(64 << 20)
	if cg == nil || err != nil {
		return "rlimit", nil
	}
	cg.remove()
	if cg.v2 {
		return "cgroup v2", nil
	}
	return "cgroup v1", nil
}

// cgroup makes a run's memory cgroup; nil, nil when memory cgroups are
// off or not found.
func (r Runner) cgroup(limit uint64) (*memCgroup, error) {
	if r.CgroupRoot == "none" {
		return nil, nil
	}
	root, v2 := findCgroupRoot(r.CgroupRoot)
	if root == "" {
		return nil, nil
	}
	return newMemCgroup(root, v2, limit)
}

func (r Runner) programs() (bwrap, prlimit string, err error) {
	if bwrap, err = exec.LookPath(cmp.Or(r.Bwrap, "bwrap")); err != nil {
		return "", "", fmt.Errorf("no bubblewrap: %w", err)
	}
	if prlimit, err = exec.LookPath(cmp.Or(r.Prlimit, "prlimit")); err != nil {
		return "", "", fmt.Errorf("no prlimit: %w", err)
	}
	return bwrap, prlimit, nil
}

// args returns the command line that runs s: prlimit setting the limits
// (with the memory limit as RLIMIT_DATA when rlimitData), then bwrap
// building the sandbox, then the executable.
func (r Runner) args(s Spec, rlimitData bool) ([]string, error) {
	bw, pl, err := r.programs()
	if err != nil {
		return nil, err
	}
	exe := "/task/" + path.Base(s.Executable)
	args := []string{pl, "--nofile=64", "--core=0"}
	if rlimitData {
		args = append(args, "--data="+strconv.FormatUint(s.Memory, 10))
	}
	args = append(args, "--",
		bw, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
		"--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
		"--setenv", "PATH", "/task", "--setenv", "OUTPOST_TASK", s.Task,
		"--tmpfs", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
		"--ro-bind", s.Executable, exe)
	if s.Network {
		args = append(args, "--share-net", "--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf")
	}
	for _, f := range s.Files {
		args = append(args, "--ro-bind", f.Source, f.Path)
	}
	return append(args, "--chdir", "/task", exe), nil
}

// Run runs s with input on standard input and returns its standard
// output. Failures are *outpostrt.CallError: KindTimeout past the timeout,
// KindInvalidOutput for output over MaxOutput, KindMemory when the process
// went over its memory limit (its cgroup saw an OOM kill; under RLIMIT_DATA,
// it said so on standard error), KindFailed for any other non-zero exit.
func (r Runner) Run(ctx context.Context, s Spec, input []byte) ([]byte, error) {
	unavailable := func(err error) error {
		return &outpostrt.CallError{Task: s.Task, Kind: outpostrt.KindFailed, Msg: "process environment unavailable: " + err.Error(), Err: err}
	}
	cg, err := r.cgroup(s.Memory)
	if err != nil {
		return nil, unavailable(fmt.Errorf("memory cgroup: %w", err))
	}
	if cg != nil {
		defer cg.remove()
	}
	args, err := r.args(s, cg == nil)
	if err != nil {
		return nil, unavailable(err)
	}
	if cg != nil {
		// The shell joins the cgroup, then becomes the sandbox: nothing
		// of the task runs outside it.
		args = append([]string{"/bin/sh", "-c", `echo $$ > "$0" && exec "$@"`, cg.procs()}, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	cmd.Stdin = bytes.NewReader(input)
	stdout := &capped{max: s.MaxOutput}
	stderr := &capped{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	fail := func(k outpostrt.Kind, msg string) error {
		return &outpostrt.CallError{Task: s.Task, Kind: k, Msg: msg, Err: err}
	}
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, fail(outpostrt.KindTimeout, fmt.Sprintf("process ran longer than %s", s.Timeout))
	case ctx.Err() != nil:
		return nil, fail(outpostrt.KindFailed, "canceled")
	case stdout.over:
		return nil, fail(outpostrt.KindInvalidOutput, fmt.Sprintf("output larger than max_output %d bytes", s.MaxOutput))
	case err != nil && cg != nil && cg.oomKilled():
		return nil, fail(outpostrt.KindMemory, fmt.Sprintf("process killed: over its memory limit of %d bytes", s.Memory))
	case err != nil:
		if line, ok := outOfMemory(stderr.buf.String()); ok {
			return nil, fail(outpostrt.KindMemory, fmt.Sprintf("process out of memory under its memory limit of %d bytes: %s", s.Memory, line))
		}
		return nil, fail(outpostrt.KindFailed, fmt.Sprintf("process %v: %s", err, stderr.tail()))
	}
	return stdout.buf.Bytes(), nil
}

// outOfMemory returns the first line of standard error that says an
// allocation failed (the C library's ENOMEM text, Go's runtime, common
// allocators).
func outOfMemory(stderr string) (string, bool) {
	for line := range strings.Lines(stderr) {
		s := strings.ToLower(line)
		if strings.Contains(s, "cannot allocate memory") || strings.Contains(s, "out of memory") {
			return strings.TrimSpace(line), true
		}
	}
	return "", false
}

// capped keeps up to max bytes and notes whether more came.
type capped struct {
	buf  bytes.Buffer
	max  uint64
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if left := int(c.max) - c.buf.Len(); len(p) > left {
		c.over = true
		c.buf.Write(p[:max(left, 0)])
		return len(p), nil
	}
	return c.buf.Write(p)
}

func (c *capped) tail() string {
	b := bytes.TrimSpace(c.buf.Bytes())
	if len(b) > stderrTail {
		b = b[len(b)-stderrTail:]
	}
	return strings.ReplaceAll(string(b), "\n", " | ")
}
