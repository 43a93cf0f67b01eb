// Command outpost is the Outpost edge daemon and its CLI: `outpost run`
// serves; `check` validates a config; `call`, `tasks` and `health` speak to
// a running daemon through its admin API. main only wires: every piece of
// behaviour lives in the packages it calls.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int
}

var commands []command

func init() {
	commands = []command{
		{"run", "run the daemon", cmdRun},
		{"check", "validate a config file and its task modules", cmdCheck},
		{"call", "call a task on the running daemon", cmdCall},
		{"tasks", "list the running daemon's tasks", cmdTasks},
		{"task", "deploy, list, inspect, remove or roll back tasks", cmdTask},
		{"health", "show the running daemon's health", cmdHealth},
		{"telemetry", "read collected telemetry: targets, latest, query", cmdTelemetry},
		{"calls", "list or show journaled calls", cmdCalls},
		{"version", "print the version", cmdVersion},
	}
}

// run dispatches a subcommand and returns the exit code: 0 success,
// 1 failure, 2 bad usage.
func run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(errOut)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], in, out, errOut)
		}
	}
	fmt.Fprintf(errOut, "outpost: unknown command %q\n\n", args[0])
	usage(errOut)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Outpost: an edge device coordinator.\n\nUsage: outpost COMMAND [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `outpost COMMAND -h` for a command's flags.")
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			return "dev-" + rev
		}
	}
	return "dev"
}

func cmdVersion(_ context.Context, _ []string, _ io.Reader, out, _ io.Writer) int {
	fmt.Fprintln(out, "outpost", versionString())
	return 0
}
