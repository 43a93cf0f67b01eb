package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/internal/syncbuf"
)

// Help at every level: -h, --help and `help` print the command's help
// (usage line with its arguments) and exit 0; they never act.
func TestCLIHelpEverywhere(t *testing.T) {
	paths := [][]string{{}, {"run"}, {"check"}, {"config"}, {"config", "show"}, {"call"}, {"tasks"}, {"task"},
		{"task", "deploy"}, {"task", "ls"}, {"task", "inspect"}, {"task", "rm"}, {"task", "rollback"},
		{"calls"}, {"calls", "ls"}, {"calls", "show"}, {"health"}, {"telemetry"}, {"telemetry", "query"}, {"version"}}
	for _, p := range paths {
		for _, h := range []string{"-h", "--help", "help"} {
			args := append(append([]string{}, p...), h)
			if len(p) == 0 && h == "help" {
				args = []string{"help"}
			}
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				out, code := runCLI(t, args...)
				if code != 0 || !strings.Contains(out, "Usage:") {
					t.Fatalf("exit %d:\n%s", code, out)
				}
			})
		}
	}
	out, _ := runCLI(t, "task", "deploy", "--help")
	if !strings.Contains(out, "outpost task deploy NAME [MODULE] [flags]") {
		t.Errorf("deploy usage does not name its arguments:\n%s", out)
	}
	out, _ = runCLI(t, "calls", "show", "-h")
	if !strings.Contains(out, "outpost calls show ID [flags]") {
		t.Errorf("calls show usage does not name its argument:\n%s", out)
	}
}

// Usage errors exit 2 and say what to do; version is there twice.
func TestCLIUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"call", "echo", "hi"}, `unexpected "hi"; give the input with --data TEXT, --data @FILE or on standard input`},
		{[]string{"call"}, "want 1 argument(s) (call TASK), got 0"},
		{[]string{"task", "deploy", "x"}, "no MODULE"},
		{[]string{"task", "frob"}, `unknown command "frob" for "outpost task"`},
		{[]string{"calls", "shw"}, "did you mean show?"},
		{[]string{"tasks", "-o", "xml"}, `-o "xml": want table, json or yaml`},
	} {
		out, code := runCLI(t, c.args...)
		if code != 2 || !strings.Contains(out, c.want) || !strings.Contains(out, "--help' for usage") {
			t.Errorf("%q: exit %d, want 2 and %q:\n%s", c.args, code, c.want, out)
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, code := runCLI(t, args...)
		if code != 0 || !strings.HasPrefix(out, "outpost ") || !strings.Contains(out, "\ngo: go1.") || !strings.Contains(out, "\nwazero: v1.") {
			t.Errorf("%q: exit %d:\n%s", args, code, out)
		}
	}
	// config show: the effective config, defaults filled in.
	cfg := filepath.Join(t.TempDir(), "only-log.yaml")
	if err := os.WriteFile(cfg, []byte("log: {level: debug}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "config", "show", "--config", cfg); code != 0 || !strings.Contains(out, "log:\n  level: debug\n") || !strings.Contains(out, "admin:\n  listen: 127.0.0.1:7700\n") {
		t.Errorf("config show: exit %d:\n%s", code, out)
	}
	out, code := runCLI(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "__start_outpost") {
		t.Errorf("completion bash: exit %d", code)
	}
}

// Against a daemon: flags in any position, standard input as the input,
// -o json|yaml, the output of a journaled call as text, completion from
// the daemon.
func TestCLIAgainstDaemon(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks: [{name: echo, module: builtin:echo}]
`)
	addr := d.addr
	run := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(binPath, args...)
		cmd.Env = append(os.Environ(), admin.TokenEnv+"="+d.token())
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		return runCmd(t, cmd)
	}
	if out, errOut, code := run("", "call", "--admin", addr, "echo", "--data", "hello"); code != 0 || out != "hello\n" {
		t.Errorf("flags before and after the task: exit %d %q %s", code, out, errOut)
	}
	if out, errOut, code := run("hi from a pipe\n", "call", "echo", "--admin", addr); code != 0 || out != "hi from a pipe\n" {
		t.Errorf("standard input: exit %d %q %s", code, out, errOut)
	}
	if out, _, code := run("", "call", "echo", "--admin", addr, "--data", "ABC", "-o", "json"); code != 0 || !strings.Contains(out, `"output": "QUJD"`) || !strings.Contains(out, `"status": "ok"`) {
		t.Errorf("call -o json: exit %d\n%s", code, out)
	}
	if out, _, code := run("", "call", "nope", "--admin", addr, "-o", "json"); code != 1 || !strings.Contains(out, `"code": "unknown_task"`) {
		t.Errorf("failed call -o json: exit %d\n%s", code, out)
	}
	if out, _, code := run("", "tasks", "--admin", addr, "-o", "yaml"); code != 0 || !strings.Contains(out, "- name: echo\n  abi: reactor\n") {
		t.Errorf("tasks -o yaml: exit %d\n%s", code, out)
	}
	if out, _, code := run("", "health", "--admin", addr); code != 0 || !regexp.MustCompile(`(?m)^status: +ok$`).MatchString(out) || !strings.Contains(out, "embedded broker") {
		t.Errorf("health: exit %d\n%s", code, out)
	}
	id, errOut, code := run("", "call", "echo", "--async", "--admin", addr, "--data", "ABC")
	id = strings.TrimSpace(id)
	if code != 0 || id == "" {
		t.Fatalf("call --async: exit %d %s", code, errOut)
	}
	out, errOut, code := run("", "calls", "show", id, "--wait", "--timeout", "10s", "--admin", addr)
	if code != 0 || !strings.Contains(out, "\noutput:\nABC\n") || !regexp.MustCompile(`(?m)^status: +ok$`).MatchString(out) {
		t.Errorf("calls show: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ := run("", "calls", "show", id, "--admin", addr, "-o", "json"); !strings.Contains(out, `"result": {`) || !strings.Contains(out, `"output": "QUJD"`) || !strings.Contains(out, `"kind": "admin"`) {
		t.Errorf("calls show -o json:\n%s", out)
	}
	binary, _, _ := run("\x00\x01\x02", "call", "echo", "--async", "--admin", addr)
	out, _, _ = run("", "calls", "show", strings.TrimSpace(binary), "--wait", "--admin", addr)
	if !strings.Contains(out, "(3 bytes, not text; base64) AAEC") {
		t.Errorf("calls show of a binary output:\n%s", out)
	}
	// Completion asks the daemon.
	if out, _, _ := run("", "__complete", "call", "--admin", addr, ""); !strings.Contains(out, "echo\tbuiltin:echo") {
		t.Errorf("complete call:\n%s", out)
	}
	if out, _, _ := run("", "__complete", "calls", "show", "--admin", addr, ""); !strings.Contains(out, id+"\techo") {
		t.Errorf("complete calls show:\n%s", out)
	}
}

// run --pid-file writes the daemon's pid (for kill -HUP "$(cat FILE)")
// and removes it on exit.
func TestPIDFile(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "outpost.pid")
	cfg := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+filepath.Join(dir, "data")+"\nadmin: {listen: 127.0.0.1:0}\nmqtt: {broker: {listen: 127.0.0.1:0}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binPath, "run", "--config", cfg, "--pid-file", pidFile)
	logs := &syncbuf.Buffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "outpost ready") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("not ready:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("pid file %q %v, want %d", b, err, cmd.Process.Pid)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("no exit after SIGTERM")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left after exit: %v", err)
	}
}

// A port in use: the daemon exits and names the config key to change.
func TestPortInUseNamesKey(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, c := range []struct{ cfg, key string }{
		{fmt.Sprintf("admin: {listen: %q}\nmqtt: {broker: {listen: 127.0.0.1:0}}\n", held.Addr()), "admin.listen"},
		{fmt.Sprintf("admin: {listen: 127.0.0.1:0}\nmqtt: {broker: {listen: %q}}\n", held.Addr()), "mqtt.broker.listen"},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "outpost.yaml")
		if err := os.WriteFile(path, []byte("data_dir: "+filepath.Join(dir, "data")+"\n"+c.cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		out, code := runCLI(t, "run", "--config", path)
		if code != 1 || !strings.Contains(out, "address already in use") || !strings.Contains(out, "change "+c.key+" in the config") {
			t.Errorf("%s taken: exit %d:\n%s", c.key, code, out)
		}
	}
}

// On a terminal the upload is a progress bar (redrawn in place, 100% once),
// followed by the phase lines.
func TestDeployProgressOnTerminal(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
`)
	mod := exampleWasm(t, "upper")
	// script(1) runs the command on a pseudo-terminal.
	cmd := exec.Command("script", "-qec", fmt.Sprintf("%s task deploy shout %s --config %s", binPath, mod, d.cfg), "/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "uploading "+mod) || strings.Count(s, "100%") != 1 || !strings.Contains(s, "\r") ||
		!strings.Contains(s, "compiling and warming shout...") || !strings.Contains(s, "deployed shout version 1") {
		t.Errorf("deploy on a terminal:\n%q", s)
	}
}
