package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/outpost-edge/outpost/telemetry/cluster"
)

// cmdCluster shows the telemetry cluster as the daemon sees it, or drains
// the daemon (its targets move to the other instances) and takes it back.
func cmdCluster(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	usage := func() {
		fmt.Fprintln(errOut, `Usage:
  outpost cluster status  [--json]
  outpost cluster drain   [--json]
  outpost cluster undrain [--json]`)
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "status", "drain", "undrain":
	case "-h", "--help", "help":
		usage()
		return 0
	default:
		fmt.Fprintf(errOut, "outpost cluster: unknown command %q\n", sub)
		usage()
		return 2
	}
	fs := newFlags("cluster "+sub, errOut)
	af := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print the daemon's JSON answer")
	c, code, ok := af.parse(fs, args)
	if !ok {
		return code
	}
	var raw json.RawMessage
	var err error
	if sub == "status" {
		err = c.Get(ctx, "/v1/telemetry/cluster", &raw)
	} else {
		err = c.Post(ctx, "/v1/telemetry/cluster/"+sub, &raw)
	}
	if err != nil {
		fmt.Fprintf(errOut, "outpost cluster %s: %v\n", sub, err)
		return 1
	}
	if *asJSON {
		return printJSON(out, raw)
	}
	var st cluster.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		fmt.Fprintf(errOut, "outpost cluster %s: bad answer: %v\n", sub, err)
		return 1
	}
	printCluster(out, st)
	return 0
}

func printCluster(out io.Writer, st cluster.Status) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "instance %s (member: %v, drained: %v)\n\n", st.Name, st.Member, st.Drained)
	fmt.Fprintln(tw, "MEMBER\tGNMI\tCAPACITY\tDRAINED")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\n", m.Name, m.GNMI, m.Capacity, m.Drained)
	}
	fmt.Fprintln(tw, "\nTARGET\tROLE HERE\tHOLDER\tEPOCH\tPLACED ON\tREPLICA LAG\tREPLICATED\tREPLICA ERROR")
	for _, t := range st.Targets {
		lag := ""
		if t.Role == cluster.RoleReplica {
			lag = fmt.Sprintf("%.1fs", t.LagSeconds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", t.Target, t.Role, t.Holder, t.Epoch, t.PlacedOn, lag, t.Points, t.Error)
	}
}
