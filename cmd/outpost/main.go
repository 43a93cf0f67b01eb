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

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/internal/buildinfo"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// app is the outpost command line.
var app cli.App

func init() {
	app = cli.App{
		Name:  "outpost",
		Title: "Outpost: an edge device coordinator.",
		Commands: []cli.Command{
			{Name: "run", Summary: "run the daemon", Run: cmdRun},
			{Name: "check", Summary: "validate a config file and its task modules", Run: cmdCheck},
			{Name: "call", Summary: "call a task on the running daemon", Run: cmdCall},
			{Name: "tasks", Summary: "list the running daemon's tasks", Run: cmdTasks},
			{Name: "task", Summary: "deploy, list, inspect, remove or roll back tasks", Run: cmdTask},
			{Name: "health", Summary: "show the running daemon's health", Run: cmdHealth},
			{Name: "telemetry", Summary: "read collected telemetry: targets, latest, query", Run: cmdTelemetry},
			{Name: "calls", Summary: "list or show journaled calls", Run: cmdCalls},
			{Name: "backup", Summary: "write a backup of the running daemon to FILE", Run: cmdBackup},
			{Name: "restore", Summary: "restore a backup FILE into an empty data dir", Run: cmdRestore},
			{Name: "version", Summary: "print the version", Run: cmdVersion},
		},
	}
}

// run dispatches a subcommand and returns the exit code: 0 success,
// 1 failure, 2 bad usage.
func run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	return app.Run(ctx, args, in, out, errOut)
}

func versionString() string { return buildinfo.Version() }

func cmdVersion(_ context.Context, _ []string, _ io.Reader, out, _ io.Writer) int {
	fmt.Fprintln(out, "outpost", versionString())
	return 0
}
