// Command outpost is the Outpost edge daemon and its CLI: `outpost run`
// serves; `check` validates a config and `config show` prints it; `call`,
// `tasks`, `task`, `calls`, `telemetry` and `health` speak to a running
// daemon through its admin API. main only wires: behaviour lives in the
// packages it calls.
package main

import (
	"context"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code: 0 success,
// 1 failure, 2 bad usage.
func run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	return cli.Execute(ctx, newRoot(), args, cli.IO{In: in, Out: out, ErrOut: errOut})
}

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "outpost",
		Short: "Outpost: an edge device coordinator",
		Long: `Outpost: an edge device coordinator.

'outpost run' runs the daemon; the other commands speak to a running daemon
through its admin API (--admin ADDR, $OUTPOST_ADMIN, or admin.listen of
--config FILE; default 127.0.0.1:7700).`,
	}
	root.AddGroup(&cobra.Group{ID: "daemon", Title: "Daemon:"}, &cobra.Group{ID: "client", Title: "Speak to a running daemon:"})
	for _, c := range []*cobra.Command{newRunCmd(), newCheckCmd(), newConfigCmd(), newBackupCmd(), newRestoreCmd()} {
		c.GroupID = "daemon"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newCallCmd(), newTasksCmd(), newTaskCmd(), newCallsCmd(), newDeviceCmd(), newHealthCmd(), newTelemetryCmd(), newClusterCmd()} {
		c.GroupID = "client"
		root.AddCommand(c)
	}
	cli.AddVersion(root, cli.BuildVersion())
	return root
}
