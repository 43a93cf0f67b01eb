package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/config"
)

// adminBase resolves the admin API's base URL the way adminFlags does.
func (a adminFlags) base() (string, error) {
	addr := *a.addr
	switch {
	case addr != "":
	case os.Getenv("OUTPOST_ADMIN") != "":
		addr = os.Getenv("OUTPOST_ADMIN")
	case *a.config != "":
		cfg, err := config.Load(*a.config)
		if err != nil {
			return "", err
		}
		addr = cfg.Admin.Listen
	default:
		addr = config.Defaults().Admin.Listen
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimSuffix(addr, "/"), nil
}

func getAdminJSON(ctx context.Context, base, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the outpost daemon at %s (is `outpost run` running? set --admin): %w", base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("%s %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, v)
}

// cmdCalls is `outpost calls ls` and `outpost calls show ID`: the journal
// of durable calls on the running daemon.
func cmdCalls(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	usage := func() {
		fmt.Fprintln(errOut, "Usage: outpost calls ls [--limit N] [--json] | outpost calls show ID  [--admin ADDR]")
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
	base, err := af.base()
	if err != nil {
		printProblems(errOut, err)
		return 1
	}
	switch sub {
	case "ls":
		var resp struct{ Calls []calls.Record }
		if err := getAdminJSON(ctx, base, fmt.Sprintf("/v1/calls?limit=%d", *limit), &resp); err != nil {
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
		if err := getAdminJSON(ctx, base, "/v1/calls/"+url.PathEscape(id), &rec); err != nil {
			fmt.Fprintf(errOut, "outpost calls show: %v\n", err)
			return 1
		}
		return printJSON(out, rec)
	}
	fmt.Fprintf(errOut, "outpost calls: unknown subcommand %q\n", sub)
	usage()
	return 2
}
