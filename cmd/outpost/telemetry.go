package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"
)

// cmdTelemetry reads collected telemetry from the running daemon:
// targets, latest values and time ranges.
func cmdTelemetry(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	usage := func() {
		fmt.Fprintln(errOut, `Usage:
  outpost telemetry targets [--json]
  outpost telemetry latest  [--target GLOB] [--path PATTERN] [--json]
  outpost telemetry query   [--target GLOB] [--path PATTERN] [--since 1h] [--until 0s] [--bucket 1m] [--limit N] [--json]`)
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	sub, args := args[0], args[1:]
	fs := newFlags("telemetry "+sub, errOut)
	af := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print the daemon's JSON answer")
	q := url.Values{}
	var target, path, since, until, bucket *string
	var limit *int
	switch sub {
	case "targets":
	case "latest", "query":
		target = fs.String("target", "", "target name, with * and ? wildcards (default: all)")
		path = fs.String("path", "", "path pattern, e.g. /interfaces/interface[name=*]/state/counters (default: all)")
		if sub == "query" {
			since = fs.String("since", "1h", "start: a duration back from now, or an RFC 3339 time")
			until = fs.String("until", "", "end: a duration back from now, or an RFC 3339 time (default: now)")
			bucket = fs.String("bucket", "", "downsample to min/max/avg per bucket of this length (e.g. 1m)")
			limit = fs.Int("limit", 0, "at most this many points per series (0: no limit)")
		}
	case "-h", "--help", "help":
		usage()
		return 0
	default:
		fmt.Fprintf(errOut, "outpost telemetry: unknown command %q\n", sub)
		usage()
		return 2
	}
	c, code, ok := af.parse(fs, args)
	if !ok {
		return code
	}
	set := func(k string, v *string) {
		if v != nil && *v != "" {
			q.Set(k, *v)
		}
	}
	set("target", target)
	set("path", path)
	set("since", since)
	set("until", until)
	set("bucket", bucket)
	if limit != nil && *limit > 0 {
		q.Set("limit", fmt.Sprint(*limit))
	}
	var answer telemetryAnswer
	p := "/v1/telemetry/" + sub
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var raw json.RawMessage
	if err := c.Get(ctx, p, &raw); err != nil {
		fmt.Fprintf(errOut, "outpost telemetry %s: %v\n", sub, err)
		return 1
	}
	if *asJSON {
		return printJSON(out, raw)
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		fmt.Fprintf(errOut, "outpost telemetry %s: bad answer: %v\n", sub, err)
		return 1
	}
	answer.print(out)
	return 0
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

func (a telemetryAnswer) print(out io.Writer) {
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%d\t%s\t%s\n", t.Name, t.Source, t.Address, t.Connected, t.Updates, t.Errors, when(t.LastUpdate), t.LastError)
		}
	case a.Series != nil:
		fmt.Fprintln(tw, "TARGET\tPATH\tTIME\tVALUE\tMIN\tMAX\tAVG\tCOUNT")
		for _, s := range a.Series {
			for _, p := range s.Points {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\t\t\t\n", s.Target, s.Path, when(p.Time), p.Value)
			}
			for _, b := range s.Buckets {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Target, s.Path, when(b.Start), b.Last, num(b.Min), num(b.Max), num(b.Avg), b.Count)
			}
		}
	default:
		fmt.Fprintln(tw, "TARGET\tPATH\tTIME\tVALUE")
		for _, p := range a.Points {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Target, p.Path, when(p.Time), p.Value)
		}
	}
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func num(f *float64) string {
	if f == nil {
		return ""
	}
	return fmt.Sprintf("%g", *f)
}
