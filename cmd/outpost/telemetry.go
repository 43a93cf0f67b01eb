package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
)

func newTelemetryCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "telemetry",
		Short: "Read collected telemetry: targets, latest values, time ranges",
	})
	af := addAdminFlags(cmd, true)
	var target, path, since, until, bucket string
	var limit int
	filters := func(c *cobra.Command) {
		c.Flags().StringVar(&target, "target", "", "target name, with * and ? wildcards (default: all)")
		c.Flags().StringVar(&path, "path", "", "path pattern, e.g. /interfaces/interface[name=*]/state/counters (default: all)")
	}
	targets := &cobra.Command{Use: "targets", Short: "List telemetry targets and their state", Args: cli.NoArgs}
	latest := &cobra.Command{Use: "latest", Short: "Show the latest value of each path", Args: cli.NoArgs}
	filters(latest)
	query := &cobra.Command{Use: "query", Short: "Show values over a time range, optionally downsampled", Args: cli.NoArgs}
	filters(query)
	query.Flags().StringVar(&since, "since", "1h", "start: a duration back from now, or an RFC 3339 time")
	query.Flags().StringVar(&until, "until", "", "end: a duration back from now, or an RFC 3339 time (default: now)")
	query.Flags().StringVar(&bucket, "bucket", "", "downsample to min/max/avg per bucket of this length (e.g. 1m)")
	query.Flags().IntVar(&limit, "limit", 0, "at most this many points per series (0: no limit)")
	for _, sub := range []*cobra.Command{targets, latest, query} {
		out := cli.AddOutput(sub)
		sub.RunE = func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"target": target, "path": path, "since": since, "until": until, "bucket": bucket} {
				if v != "" && cmd.Flags().Lookup(k) != nil {
					q.Set(k, v)
				}
			}
			if limit > 0 {
				q.Set("limit", fmt.Sprint(limit))
			}
			c, err := af.client()
			if err != nil {
				return configError(cmd, err)
			}
			p := "/v1/telemetry/" + cmd.Name()
			if len(q) > 0 {
				p += "?" + q.Encode()
			}
			var raw json.RawMessage
			if err := c.Get(cmd.Context(), p, &raw); err != nil {
				return err
			}
			var answer telemetryAnswer
			if err := json.Unmarshal(raw, &answer); err != nil {
				return fmt.Errorf("bad answer from the daemon: %w", err)
			}
			return out.Print(cmd.OutOrStdout(), raw, func(w io.Writer) { answer.print(w, out) })
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

// telemetryAnswer is what the telemetry endpoints return, for printing.
type telemetryAnswer struct {
	Enabled *bool `json:"enabled"`
	Targets []struct {
		Name, Source, Address string
		Connected             bool
		LastUpdate            time.Time `json:"last_update"`
		LastError             string    `json:"last_error"`
		Updates, Errors       uint64
	} `json:"targets"`
	Points []telemetryPoint `json:"points"`
	Series []struct {
		Target, Path string
		Points       []telemetryPoint `json:"points"`
		Buckets      []struct {
			Start         time.Time
			Count         int
			Min, Max, Avg *float64
			Last          json.RawMessage
		} `json:"buckets"`
	} `json:"series"`
}

type telemetryPoint struct {
	Target, Path string
	Time         time.Time
	Value        json.RawMessage
}

func (a telemetryAnswer) print(out io.Writer, o *cli.Output) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch {
	case a.Enabled != nil:
		if !*a.Enabled {
			fmt.Fprintln(tw, "telemetry is not enabled (no targets configured)")
			return
		}
		fmt.Fprintln(tw, "TARGET\tSOURCE\tADDRESS\tUP\tUPDATES\tERRORS\tLAST UPDATE\tLAST ERROR")
		for _, t := range a.Targets {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%d\t%s\t%s\n", t.Name, t.Source, t.Address, t.Connected, t.Updates, t.Errors, o.Time(t.LastUpdate), t.LastError)
		}
	case a.Series != nil:
		fmt.Fprintln(tw, "TARGET\tPATH\tTIME\tVALUE\tMIN\tMAX\tAVG\tCOUNT")
		for _, s := range a.Series {
			for _, p := range s.Points {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\t\t\t\n", s.Target, s.Path, o.Time(p.Time), p.Value)
			}
			for _, b := range s.Buckets {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Target, s.Path, o.Time(b.Start), b.Last, num(b.Min), num(b.Max), num(b.Avg), b.Count)
			}
		}
	default:
		fmt.Fprintln(tw, "TARGET\tPATH\tTIME\tVALUE")
		for _, p := range a.Points {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Target, p.Path, o.Time(p.Time), p.Value)
		}
	}
}

func num(f *float64) string {
	if f == nil {
		return ""
	}
	return fmt.Sprintf("%g", *f)
}
