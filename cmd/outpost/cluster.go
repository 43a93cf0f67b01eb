package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/telemetry/cluster"
)

func newClusterCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "cluster",
		Short: "Show the telemetry cluster, drain or undrain this instance",
	})
	af := addAdminFlags(cmd, true)
	for _, sub := range []struct{ use, short, path string }{
		{"status", "Show the members and where each target is collected and replicated", ""},
		{"drain", "Move this instance's targets to the other instances (it keeps its replicas)", "drain"},
		{"undrain", "Take targets again after a drain", "undrain"},
	} {
		c := &cobra.Command{Use: sub.use, Short: sub.short, Args: cli.NoArgs}
		out := cli.AddOutput(c)
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			ac, err := af.client()
			if err != nil {
				return configError(cmd, err)
			}
			var st cluster.Status
			if sub.path == "" {
				err = ac.Get(cmd.Context(), "/v1/telemetry/cluster", &st)
			} else {
				err = ac.Post(cmd.Context(), "/v1/telemetry/cluster/"+sub.path, &st)
			}
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), st, func(w io.Writer) { printCluster(w, st) })
		}
		cmd.AddCommand(c)
	}
	return cmd
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
