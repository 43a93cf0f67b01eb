package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/internal/confval"
)

// callResult is what `call -o json|yaml` prints for a call that succeeded
// (a failed one prints its error document): the wire names of a result.
type callResult struct {
	Task   string       `json:"task"`
	Status calls.Status `json:"status"`
	Output []byte       `json:"output"`
	CallID string       `json:"call_id,omitempty"`
	Env    string       `json:"env,omitempty"`  // the execution environment it ran in
	Rule   string       `json:"rule,omitempty"` // the placement rule that chose it
}

func newCallCmd() *cobra.Command {
	var (
		data    string
		timeout time.Duration
		async   bool
		labels  []string
	)
	cmd := &cobra.Command{
		Use:   "call TASK",
		Short: "Call a task on the running daemon and print its output",
		Long: `Call a task on the running daemon and print its output.

The input is --data (a literal, @FILE or - for standard input) or, without
--data, standard input when it is a pipe or a file: echo hi | outpost call echo.
With --async the call is journaled and its id printed once it is on disk; read
the result with 'outpost calls show ID --wait'. --label KEY=VALUE (repeat it)
labels the call: placement rules see the labels as call.labels, and
'outpost calls show' shows them.`,
		Example: `  outpost call echo --data '{"x":1}'
  echo hello | outpost call upper
  outpost call summary --data @reading.json -o json
  outpost call resize --data @image.png --label tier=batch --label gpu=`,
		Args: cli.ExactArgs(1, "give the input with --data TEXT, --data @FILE or on standard input"),
	}
	af := addAdminFlags(cmd, false)
	out := cli.AddOutput(cmd)
	cmd.Flags().StringVar(&data, "data", "", cli.DataHelp)
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "deadline for the call (default: the task's timeout); with --async, of the whole call, suspended steps included")
	cmd.Flags().BoolVar(&async, "async", false, "journal the call and print its id once it is on disk")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "a label of the call, KEY=VALUE (repeat for more); placement rules see it as call.labels")
	cmd.ValidArgsFunction = af.completeTasks
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		task := args[0]
		lm, err := confval.ParseLabels(labels)
		if err != nil {
			return cli.Usagef("--label: %v", err)
		}
		opts := admin.CallOptions{Timeout: timeout, Labels: lm}
		input, err := cli.ReadInput(data, cmd.Flags().Changed("data"), cmd.InOrStdin())
		if err != nil {
			return err
		}
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		w := cmd.OutOrStdout()
		if async {
			id, err := c.CallAsync(cmd.Context(), task, input, opts)
			if err != nil {
				return callFailed(cmd, out, err)
			}
			return out.Print(w, admin.AsyncAccepted{CallID: id, Task: task, State: calls.Received.String()}, func(w io.Writer) { fmt.Fprintln(w, id) })
		}
		ans, err := c.Call(cmd.Context(), task, input, opts)
		if err != nil {
			return callFailed(cmd, out, err)
		}
		output := ans.Output
		return out.Print(w, callResult{Task: task, Status: calls.StatusOK, Output: output, CallID: ans.CallID, Env: ans.Env, Rule: ans.Rule}, func(w io.Writer) {
			_, _ = w.Write(output)
			if len(output) > 0 && output[len(output)-1] != '\n' {
				fmt.Fprintln(w)
			}
		})
	}
	return cmd
}

// callFailed reports a call the daemon refused or that failed: its error
// document on standard output with -o json|yaml, else a line on standard
// error.
func callFailed(cmd *cobra.Command, out *cli.Output, err error) error {
	var ce *admin.CallError
	if errors.As(err, &ce) && !out.Table() {
		if perr := out.Print(cmd.OutOrStdout(), ce.Doc, nil); perr != nil {
			return perr
		}
		return cli.ErrSilent
	}
	return err
}

func newTasksCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tasks",
		Short: "List the running daemon's tasks (same as 'task ls')",
		Args:  cli.NoArgs,
	}
	listTasks(cmd, addAdminFlags(cmd, false))
	return cmd
}

// listTasks makes cmd list the daemon's tasks.
func listTasks(cmd *cobra.Command, af *adminFlags) {
	out := cli.AddOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		tasks, err := c.Tasks(cmd.Context())
		if err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), tasks, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tABI\tMEMORY\tTIMEOUT\tCONCURRENCY\tDIGEST\tMODULE")
			for _, t := range tasks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.12s\t%s\n", t.Name, cmp.Or(t.ABI, "-"), confval.ByteSize(t.MemoryLimit), seconds(t.Timeout), t.Concurrency, cmp.Or(t.Digest, "-"), cmp.Or(t.Module, processOnly))
			}
			_ = tw.Flush()
		})
	}
}

func newHealthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Show the running daemon's health (exit 1 unless ok)",
		Args:  cli.NoArgs,
	}
	af := addAdminFlags(cmd, false)
	out := cli.AddOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		h, err := c.Health(cmd.Context())
		if err != nil {
			return err
		}
		if err := out.Print(cmd.OutOrStdout(), h, func(w io.Writer) { printHealth(w, h) }); err != nil {
			return err
		}
		if h.Status != "ok" {
			return cli.ErrSilent
		}
		return nil
	}
	return cmd
}

func printHealth(w io.Writer, h admin.Health) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	conn := "connected"
	if !h.MQTT.Connected {
		conn = "not connected"
	}
	fmt.Fprintf(tw, "status:\t%s\nnode:\t%s\nversion:\t%s\nuptime:\t%s\n", h.Status, h.Node, h.Version, seconds(h.Uptime).Round(time.Second))
	fmt.Fprintf(tw, "mqtt:\t%s broker %s, %s\n", h.MQTT.Broker, h.MQTT.Addr, conn)
	if h.Cloud != nil {
		fmt.Fprintf(tw, "cloud:\t%s, %s\n", h.Cloud.URL, h.Cloud.State)
	} else {
		fmt.Fprintf(tw, "cloud:\toff\n")
	}
	s := h.Scheduler
	fmt.Fprintf(tw, "scheduler:\t%d queued, %d running, %d workers%s\n", s.Queued, s.Running, s.Workers, map[bool]string{true: ", draining"}[s.Draining])
	fmt.Fprintf(tw, "tasks:\t%d\n", h.Tasks)
	for _, p := range h.Problems {
		fmt.Fprintf(tw, "problem:\t%s\n", p)
	}
	_ = tw.Flush()
}

// seconds converts a duration in seconds from the API.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
