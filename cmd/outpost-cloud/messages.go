package main

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

func newMessagesCmd() *cobra.Command {
	var (
		nodeID  string
		after   uint64
		limit   int
		consume bool
	)
	cmd := &cobra.Command{
		Use:   "messages",
		Short: "List the device messages nodes sent up (routes with cloud: true); --consume deletes what is listed",
		Long: `List the device messages nodes sent up through routes with cloud: true, per
node in arrival order (SEQ counts from 1 per node). With --consume the
messages listed are deleted once printed: a consumer reads each message
once by running 'outpost-cloud messages --consume -o json' in a loop.`,
		Example: `  outpost-cloud messages --node edge-1
  outpost-cloud messages --node edge-1 --after 120 --limit 50 -o json
  outpost-cloud messages --consume -o json`,
		Args: cli.NoArgs,
	}
	srv := addServer(cmd)
	out := cli.AddOutput(cmd)
	f := cmd.Flags()
	f.StringVar(&nodeID, "node", "", "only this node's messages")
	f.Uint64Var(&after, "after", 0, "with --node: only messages after this seq")
	f.IntVar(&limit, "limit", 1000, "at most this many messages (up to 10000)")
	f.BoolVar(&consume, "consume", false, "delete the messages listed, once printed")
	_ = cmd.RegisterFlagCompletionFunc("node", srv.completeNodes)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if after > 0 && nodeID == "" {
			return cli.Usagef("--after needs --node (seq counts per node)")
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if nodeID != "" {
			q.Set("node", nodeID)
			q.Set("after", strconv.FormatUint(after, 10))
		}
		a := srv.api()
		var resp struct{ Messages []server.StoredMessage }
		if err := a.do(cmd.Context(), "GET", "/api/v1/messages?"+q.Encode(), nil, &resp); err != nil {
			return err
		}
		err := out.Print(cmd.OutOrStdout(), resp.Messages, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tSEQ\tTOPIC\tQOS\tTIME\tPAYLOAD")
			for _, m := range resp.Messages {
				p := cli.Bytes(m.Payload)
				if r := []rune(p); len(r) > 60 {
					p = string(r[:60]) + "…"
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\n", m.Node, m.Seq, m.Topic, m.QoS, out.Time(m.Time), p)
			}
			_ = tw.Flush()
		})
		if err != nil || !consume {
			return err
		}
		through := map[string]uint64{}
		for _, m := range resp.Messages {
			through[m.Node] = max(through[m.Node], m.Seq)
		}
		for node, seq := range through {
			var c struct{ Consumed int }
			if err := a.do(cmd.Context(), "POST", "/api/v1/messages:consume", server.ConsumeRequest{Node: node, Through: seq}, &c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "consumed %d messages of %s (through seq %d)\n", c.Consumed, node, seq)
		}
		return nil
	}
	return cmd
}
