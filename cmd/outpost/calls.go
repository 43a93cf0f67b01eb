package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/internal/confval"
)

func newCallsCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "calls",
		Short: "List or show the running daemon's journaled calls (cloud, MQTT QoS 1, --async)",
	})
	af := addAdminFlags(cmd, true)
	cmd.AddCommand(newCallsListCmd(af), newCallsShowCmd(af))
	return cmd
}

func newCallsListCmd(af *adminFlags) *cobra.Command {
	var (
		q      admin.CallsQuery
		labels []string
	)
	cmd := &cobra.Command{Use: "ls", Short: "List journaled calls, oldest first", Args: cli.NoArgs}
	out := cli.AddOutput(cmd)
	cmd.Flags().IntVar(&q.Limit, "limit", 0, "at most this many calls (0: all)")
	cmd.Flags().StringVar(&q.State, "state", "", "only calls in this state (received, started, suspended, finished, reported)")
	cmd.Flags().StringVar(&q.Task, "task", "", "only calls of this task")
	cmd.Flags().StringVar(&q.Source, "source", "", "only calls from this kind of source (mqtt, admin, cloud, task, telemetry, peer)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "only calls with this label, KEY=VALUE (repeat: with every one)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var err error
		if q.Labels, err = confval.ParseLabels(labels); err != nil {
			return cli.Usagef("--label: %v", err)
		}
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		recs, err := c.Calls(cmd.Context(), q)
		if err != nil {
			return err
		}
		// Oldest first: ids of calls made in the same second by different
		// processes do not sort by time.
		sort.SliceStable(recs, func(i, j int) bool { return recs[i].Received.Before(recs[j].Received) })
		return out.Print(cmd.OutOrStdout(), recs, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			// The WAITING ON column is there when a call is suspended.
			suspended := slices.ContainsFunc(recs, func(r calls.Record) bool { return r.State == calls.Suspended })
			header := "ID\tTASK\tSOURCE\tSTATE\tATTEMPT\tRUNS\tEFFECT\tSTATUS\tENV\tRECEIVED"
			if suspended {
				header += "\tWAITING ON"
			}
			fmt.Fprintln(tw, header)
			for _, r := range recs {
				st, env := "", ""
				if r.Result != nil {
					st, env = string(r.Result.Status), r.Result.Env
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s", r.ID, r.Task, r.Source.Kind, r.State, r.Attempt, r.Runs, r.Effect, st, env, out.Time(r.Received))
				if suspended {
					fmt.Fprintf(tw, "\t%s", waitingOn(out, &r))
				}
				fmt.Fprintln(tw)
			}
			_ = tw.Flush()
		})
	}
	return cmd
}

func newCallsShowCmd(af *adminFlags) *cobra.Command {
	var (
		wait    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one journaled call: its state, times and result (the output as text when it is text)",
		Args:  cli.ExactArgs(1, ""),
	}
	out := cli.AddOutput(cmd)
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the call has finished (progress on standard error); exit 1 if it failed")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait: give up after this long (0: wait until interrupted)")
	cmd.ValidArgsFunction = af.completeCalls
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		var rec *calls.Record
		if wait {
			rec, err = waitCall(cmd.Context(), c, args[0], timeout, cmd.ErrOrStderr())
		} else {
			rec, err = c.GetCall(cmd.Context(), args[0])
		}
		if err != nil {
			return err
		}
		if err := out.Print(cmd.OutOrStdout(), rec, func(w io.Writer) { printRecord(w, out, rec) }); err != nil {
			return err
		}
		if wait && (rec.Result == nil || !rec.Result.OK()) {
			return cli.ErrSilent
		}
		return nil
	}
	return cmd
}

// printRecord prints a journal record for people: the input and output as
// text when they are text.
func printRecord(w io.Writer, o *cli.Output, r *calls.Record) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	src := r.Source.Kind
	if r.Source.Ref != "" {
		src += " " + r.Source.Ref
	}
	fmt.Fprintf(tw, "id:\t%s\ntask:\t%s\nsource:\t%s\nstate:\t%s\neffect:\t%s\nattempt:\t%d\nruns:\t%d\n", r.ID, r.Task, src, r.State, r.Effect, r.Attempt, r.Runs)
	if r.Queue != "" {
		fmt.Fprintf(tw, "queue:\t%s (priority %d)\n", r.Queue, r.Priority)
	}
	if len(r.Labels) > 0 {
		fmt.Fprintf(tw, "labels:\t%s\n", labelList(r.Labels))
	}
	if r.ReplyTo != "" {
		fmt.Fprintf(tw, "reply to:\t%s\n", r.ReplyTo)
	}
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"received", r.Received}, {"started", r.Started}, {"finished", r.Finished}, {"reported", r.Reported}} {
		if !t.at.IsZero() {
			fmt.Fprintf(tw, "%s:\t%s\n", t.name, o.Time(t.at))
		}
	}
	if r.State == calls.Suspended {
		fmt.Fprintf(tw, "waiting on:\t%s\n", waitingOn(o, r))
		for _, w := range r.Waits {
			st := "running"
			if w.Result != nil {
				st = string(w.Result.Status)
			}
			fmt.Fprintf(tw, "  handle %d:\t%s %s %s\n", w.Handle, w.ID, w.Task, st)
		}
	}
	if r.Input != nil {
		fmt.Fprintf(tw, "input:\t%s\n", oneLine(cli.Bytes(r.Input)))
	}
	if r.Result != nil {
		fmt.Fprintf(tw, "status:\t%s\n", r.Result.Status)
		if r.Result.Rule != "" {
			fmt.Fprintf(tw, "ran in:\t%s (placement rule %s)\n", cmp.Or(r.Result.Env, "none"), r.Result.Rule)
		}
		if r.Result.Error != "" {
			fmt.Fprintf(tw, "error:\t%s\n", r.Result.Error)
		}
	}
	_ = tw.Flush()
	if r.Result != nil && r.Result.OK() {
		fmt.Fprintf(w, "output:\n%s", cli.Bytes(r.Result.Output))
		if n := len(r.Result.Output); n == 0 || r.Result.Output[n-1] != '\n' {
			fmt.Fprintln(w)
		}
	}
}

// waitingOn says what a suspended call waits for and since when, for
// example "3 of 50 calls (square) since 2026-12-03T15:04:05Z"; "" for a
// call that is not suspended.
func waitingOn(o *cli.Output, r *calls.Record) string {
	if r.State != calls.Suspended {
		return ""
	}
	left := 0
	var tasks []string
	for _, w := range r.Waits {
		if w.Result == nil {
			left++
		}
		if !slices.Contains(tasks, w.Task) {
			tasks = append(tasks, w.Task)
		}
	}
	return fmt.Sprintf("%d of %d calls (%s) since %s", left, len(r.Waits), strings.Join(tasks, ", "), o.Time(r.Suspended))
}

// labelList writes labels KEY=VALUE by key, comma-separated.
func labelList(labels map[string]string) string {
	kvs := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kvs = append(kvs, k+"="+labels[k])
	}
	return oneLine(strings.Join(kvs, ", "))
}

// oneLine keeps a table cell on one line.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r", `\r`), "\n", `\n`)
}

// waitCall polls the call until it has finished, backing off from 50 ms to
// 2 s between polls, and says on errOut what it waits for whenever the
// state changes (and every 10 s). A daemon that cannot be reached (a
// restart) is polled again, within timeout.
func waitCall(ctx context.Context, c *admin.Client, id string, timeout time.Duration, errOut io.Writer) (*calls.Record, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	delay := 50 * time.Millisecond
	var (
		said     string
		saidAt   time.Time
		lastErr  error
		notFound = 0
	)
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		rec, err := c.GetCall(rctx, id)
		cancel()
		switch {
		case err == nil:
			lastErr = nil
			if rec.State >= calls.Finished {
				return rec, nil
			}
			msg := fmt.Sprintf("call %s: %s", id, rec.State)
			if rec.Attempt > 1 {
				msg += fmt.Sprintf(" (attempt %d)", rec.Attempt)
			}
			if msg != said || time.Since(saidAt) >= 10*time.Second {
				fmt.Fprintf(errOut, "%s, waited %s\n", msg, time.Since(start).Round(100*time.Millisecond))
				said, saidAt = msg, time.Now()
			}
		case strings.Contains(err.Error(), "no call "):
			// Unknown: a wrong id (or one compacted away) does not appear later.
			notFound++
			if notFound >= 3 {
				return nil, err
			}
		default:
			if lastErr == nil {
				fmt.Fprintf(errOut, "call %s: %v; trying again\n", id, err)
			}
			lastErr = err
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if lastErr != nil {
				return nil, fmt.Errorf("wait for call %s: %w (last error: %v)", id, ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("wait for call %s: %w after %s", id, ctx.Err(), time.Since(start).Round(time.Millisecond))
		}
		delay = min(delay*2, 2*time.Second)
	}
}
