package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/confval"
)

func newNodeCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "node",
		Short: "Fleet views and node labels (ls, label)",
		Long: `Nodes, their labels and groups: 'node ls' lists the nodes a label selector
picks with their link state and queue depths, and counts them by one
label's values; 'node label' sets and removes a node's labels. Selectors
('-l') are comma-separated requirements that must all hold: k=v, k!=v,
k in (a,b), k notin (a,b), k (present), !k (absent).`,
	})
	cmd.AddCommand(newNodeListCmd("ls"), newNodeLabelCmd())
	return cmd
}

// newNodeListCmd lists nodes ("node ls", and "nodes" as before).
func newNodeListCmd(use string) *cobra.Command {
	var selector, group string
	cmd := &cobra.Command{
		Use:   use + " [-l SELECTOR] [--group-by LABEL]",
		Short: "List the nodes (that polled, have calls or labels): labels, online state, queue depths, counts by group",
		Example: `  outpost-cloud node ls
  outpost-cloud node ls -l 'region=eu,tier in (gold,silver)' --group-by site`,
		Args: cli.NoArgs,
	}
	if use == "nodes" {
		cmd.Short = "List the nodes (as node ls)"
	}
	srv := addServer(cmd)
	out := cli.AddOutput(cmd)
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only the nodes whose labels match")
	cmd.Flags().StringVar(&group, "group-by", "", "also count the nodes by this label's values")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		q := url.Values{}
		if selector != "" {
			q.Set("selector", selector)
		}
		if group != "" {
			q.Set("group", group)
		}
		var v server.NodesView
		if err := srv.api().do(cmd.Context(), "GET", "/api/v1/nodes?"+q.Encode(), nil, &v); err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), v, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tONLINE\tPOLLING\tPENDING\tHELD\tLAST SEEN\tLABELS")
			for _, n := range v.Nodes {
				fmt.Fprintf(tw, "%s\t%v\t%v\t%d\t%d\t%s\t%s\n", n.ID, n.Online, n.Polling, n.Pending, n.Held, out.Time(n.LastSeen), labelList(n.Labels))
			}
			_ = tw.Flush()
			if group != "" {
				fmt.Fprintln(w)
				fmt.Fprintln(tw, "GROUP\tNODES\tONLINE\tPENDING\tHELD")
				for _, g := range v.Groups {
					name := g.Label + "=" + g.Value
					if g.None {
						name = "!" + g.Label
					}
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", name, g.Nodes, g.Online, g.Pending, g.Held)
				}
				fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%d\n", v.Total.Nodes, v.Total.Online, v.Total.Pending, v.Total.Held)
				_ = tw.Flush()
			}
		})
	}
	return cmd
}

// labelList is labels as k=v,k2=v2 in key order.
func labelList(labels map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

func newNodeLabelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "label NODE KEY=VALUE... [KEY-...]",
		Short: "Set (KEY=VALUE) and remove (KEY-) labels of a node, and print its labels",
		Example: `  outpost-cloud node label edge-1 region=eu tier=gold
  outpost-cloud node label edge-1 tier-`,
		Args: cli.RangeArgs(2, 100),
	}
	srv := addServer(cmd)
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return srv.completeNodes(cmd, args, s)
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		req := server.LabelRequest{Set: map[string]string{}}
		for _, a := range args[1:] {
			if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
				req.Remove = append(req.Remove, k)
				continue
			}
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				return cli.Usagef("%q: want KEY=VALUE to set or KEY- to remove", a)
			}
			if err := confval.CheckLabel(k, v); err != nil {
				return &cli.UsageError{Err: fmt.Errorf("label %q of node %s: %w", a, args[0], err)}
			}
			req.Set[k] = v
		}
		var resp struct{ Labels map[string]string }
		if err := srv.api().do(cmd.Context(), "POST", "/api/v1/nodes/"+url.PathEscape(args[0])+"/labels", req, &resp); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", args[0], labelList(resp.Labels))
		return nil
	}
	return cmd
}

// enqueueSelected enqueues c for every node selector matches and prints
// the calls' ids.
func enqueueSelected(ctx context.Context, a *api, out io.Writer, selector string, c server.Call) error {
	var resp struct{ Calls []server.EnqueueItem }
	if err := a.do(ctx, "POST", "/api/v1/calls", server.EnqueueRequest{Selector: selector, Calls: []server.Call{c}}, &resp); err != nil {
		return err
	}
	if len(resp.Calls) == 0 {
		return fmt.Errorf("selector %q matches no node (see outpost-cloud node ls)", selector)
	}
	for _, it := range resp.Calls {
		if it.Error != "" {
			return fmt.Errorf("refused: %s: %s", it.ID, it.Error)
		}
		fmt.Fprintln(out, it.ID)
	}
	return nil
}
