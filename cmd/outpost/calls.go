package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
)

// getAdminJSON reads path of the admin API into v, giving up after 30 s.
func getAdminJSON(ctx context.Context, c *admin.Client, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Get(ctx, path, v)
}

// cmdCalls is `outpost calls ls` and `outpost calls show ID`: the journal
// of durable calls on the running daemon.
func cmdCalls(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	usage := func() {
		fmt.Fprintln(errOut, "Usage: outpost calls ls [--limit N] [--json] | outpost calls show ID [--wait [--timeout D]]  [--admin ADDR]")
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	sub, args := args[0], args[1:]
	fs := newFlags("calls "+sub, errOut)
	af := addAdminFlags(fs)
	limit := fs.Int("limit", 0, "ls: at most this many calls (0: all)")
	asJSON := fs.Bool("json", false, "ls: print JSON")
	wait := fs.Bool("wait", false, "show: wait until the call has finished (progress on stderr); exit 1 if it failed")
	waitTimeout := fs.Duration("timeout", 0, "show --wait: give up after this long (0: wait until interrupted)")
	var id string
	if sub == "show" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if id == "" && sub == "show" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if fs.NArg() > 0 {
		fmt.Fprintf(errOut, "outpost calls %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	ac, err := af.client()
	if err != nil {
		printProblems(errOut, err)
		return 1
	}
	switch sub {
	case "ls":
		var resp struct{ Calls []calls.Record }
		if err := getAdminJSON(ctx, ac, fmt.Sprintf("/v1/calls?limit=%d", *limit), &resp); err != nil {
			fmt.Fprintf(errOut, "outpost calls ls: %v\n", err)
			return 1
		}
		if *asJSON {
			return printJSON(out, resp.Calls)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTASK\tSOURCE\tSTATE\tATTEMPT\tRUNS\tEFFECT\tSTATUS\tRECEIVED")
		for _, r := range resp.Calls {
			st := ""
			if r.Result != nil {
				st = string(r.Result.Status)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.ID, r.Task, r.Source.Kind, r.State, r.Attempt, r.Runs, r.Effect, st, r.Received.Format(time.RFC3339))
		}
		_ = tw.Flush()
		return 0
	case "show":
		if id == "" {
			usage()
			return 2
		}
		var rec calls.Record
		if *wait {
			r, err := waitCall(ctx, ac, id, *waitTimeout, errOut)
			if err != nil {
				fmt.Fprintf(errOut, "outpost calls show: %v\n", err)
				return 1
			}
			if code := printJSON(out, r); code != 0 {
				return code
			}
			if r.Result == nil || !r.Result.OK() {
				return 1
			}
			return 0
		}
		if err := getAdminJSON(ctx, ac, "/v1/calls/"+url.PathEscape(id), &rec); err != nil {
			fmt.Fprintf(errOut, "outpost calls show: %v\n", err)
			return 1
		}
		return printJSON(out, rec)
	}
	fmt.Fprintf(errOut, "outpost calls: unknown subcommand %q\n", sub)
	usage()
	return 2
}

// waitCall polls GET /v1/calls/{id} until the call has finished, backing off
// from 50 ms to 2 s between polls, and says on errOut what it waits for
// whenever the state changes (and every 10 s). A daemon that cannot be
// reached (a restart) is polled again, within timeout.
func waitCall(ctx context.Context, ac *admin.Client, id string, timeout time.Duration, errOut io.Writer) (*calls.Record, error) {
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
		var rec calls.Record
		err := getAdminJSON(ctx, ac, "/v1/calls/"+url.PathEscape(id), &rec)
		switch {
		case err == nil:
			lastErr = nil
			if rec.State >= calls.Finished {
				return &rec, nil
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
