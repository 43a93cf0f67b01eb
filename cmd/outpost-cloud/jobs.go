package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

func newJobCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "job",
		Short: "Run a task over a data set on the server (create, status, wait, ls)",
		Long: `Data-set jobs: the server reads a source (a directory or a JSONL file on the
server, a PostgreSQL table paged by key, or a JSONL file at a URL) in pages, runs the task once per item on
the given nodes, skips items that already have a call (in process or with a
result), survives its own restart, and sends a signed webhook when every
item has a result.`,
	})
	cmd.AddCommand(newJobCreateCmd(), newJobStatusCmd(), newJobWaitCmd(), newJobListCmd())
	return cmd
}

func newJobCreateCmd() *cobra.Command {
	var spec server.JobSpec
	var nodes string
	var wait bool
	var retry server.RetryPolicy
	var backoff, maxBackoff time.Duration
	cmd := &cobra.Command{
		Use:   "create --task TASK (--nodes NODE[,NODE...] | --selector SELECTOR) --source SOURCE",
		Short: "Create a data-set job and print its id (--wait to follow it)",
		Example: `  outpost-cloud job create --task resize --nodes edge-1,edge-2 --source dir:/srv/images --wait
  outpost-cloud job create --task score --nodes edge-1 --source https://data.example/items.jsonl --webhook https://hooks.example/outpost
  outpost-cloud job create --task score -l 'region=eu,tier in (gold,silver)' --source jsonl:/srv/items.jsonl --max-attempts 3
  outpost-cloud job create --task score --nodes edge-1 --label tier=batch --source jsonl:/srv/items.jsonl`,
		Args: cli.NoArgs,
	}
	srv := addServer(cmd)
	f := cmd.Flags()
	f.StringVar(&spec.Task, "task", "", "task name (required)")
	f.StringVar(&nodes, "nodes", "", "comma-separated node ids the items are spread over (this or --selector)")
	f.StringVarP(&spec.Selector, "selector", "l", "", "label selector: the items are spread over the nodes it matches now (k=v,k!=v,k in (a,b),k notin (a,b),k,!k)")
	f.StringVar(&spec.Source, "source", "", "dir:PATH or jsonl:PATH on the server, pgtable:URLFILE:TABLE:KEY, or an http(s):// URL of a JSONL file (required)")
	f.StringVar(&spec.ID, "id", "", "job id (default: a new one)")
	f.StringVar(&spec.Effect, "effect", "idempotent", "idempotent or at_most_once")
	f.StringVar(&spec.Digest, "digest", "", "sha256:HEX of an object (object put) the task runs")
	f.StringVar(&spec.Webhook, "webhook", "", "URL that receives the completion notice (POST, signed)")
	f.BoolVar(&wait, "wait", false, "follow the job until it is done (as job wait)")
	f.IntVar(&retry.MaxAttempts, "max-attempts", 1, "runs of an item at most, the first included: a failed item with a --retry-on status runs again")
	f.DurationVar(&backoff, "retry-backoff", 10*time.Second, "wait after a failed result before the second attempt (doubling for each later one)")
	f.DurationVar(&maxBackoff, "retry-max-backoff", 10*time.Minute, "longest wait between attempts")
	f.StringSliceVar(&retry.On, "retry-on", server.DefaultRetryOn, "result statuses retried (cancelled: a call an operator cancelled)")
	labels := addLabelFlag(cmd, "a label of every call of the job")
	for _, name := range []string{"task", "source"} {
		_ = cmd.MarkFlagRequired(name)
	}
	cmd.MarkFlagsOneRequired("nodes", "selector")
	cmd.MarkFlagsMutuallyExclusive("nodes", "selector")
	_ = cmd.RegisterFlagCompletionFunc("nodes", srv.completeNodes)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkDigest(spec.Digest); err != nil {
			return err
		}
		for n := range strings.SplitSeq(nodes, ",") {
			if n = strings.TrimSpace(n); n != "" {
				spec.Nodes = append(spec.Nodes, n)
			}
		}
		if _, err := server.ParseSelector(spec.Selector); err != nil {
			return &cli.UsageError{Err: fmt.Errorf("--selector: %w", err)}
		}
		var err error
		if spec.Labels, err = parseLabelFlag(*labels); err != nil {
			return err
		}
		if retry.MaxAttempts > 1 {
			retry.BackoffMS, retry.MaxBackoffMS = backoff.Milliseconds(), maxBackoff.Milliseconds()
			spec.Retry = &retry
		}
		var j server.Job
		if err := srv.api().do(cmd.Context(), "POST", "/api/v1/jobs", spec, &j); err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), j.ID)
		if !wait {
			return nil
		}
		return followJob(cmd, srv.api(), j.ID)
	}
	return cmd
}

func newJobStatusCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "status JOB_ID", Short: "Show a job's counts, rate and estimated end", Args: cli.ExactArgs(1, "")}
	srv := addServer(cmd)
	out := cli.AddOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var j server.Job
		if err := srv.api().do(cmd.Context(), "GET", "/api/v1/jobs/"+url.PathEscape(args[0]), nil, &j); err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), j, func(w io.Writer) { fmt.Fprintln(w, jobLine(j)) })
	}
	return cmd
}

func newJobWaitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wait JOB_ID",
		Short: "Follow a job until every item has a result (exit 1 if the job or an item failed)",
		Args:  cli.ExactArgs(1, ""),
	}
	srv := addServer(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error { return followJob(cmd, srv.api(), args[0]) }
	return cmd
}

func newJobListCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ls", Short: "List jobs", Args: cli.NoArgs}
	srv := addServer(cmd)
	out := cli.AddOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var resp struct{ Jobs []server.Job }
		if err := srv.api().do(cmd.Context(), "GET", "/api/v1/jobs", nil, &resp); err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), resp.Jobs, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "JOB\tTASK\tSTATE\tITEMS\tDONE\tFAILED\tRETRIED\tGAVE UP\tCACHED\tNOTICE\tSOURCE")
			for _, j := range resp.Jobs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", j.ID, j.Task, j.State, j.Items, j.Done, j.Failed, j.Retried, j.GaveUp, j.Cached, j.Notice, j.Source)
			}
			_ = tw.Flush()
		})
	}
	return cmd
}

// jobLine is a job's progress in one line.
func jobLine(j server.Job) string {
	total := fmt.Sprint(j.Items)
	if !j.Listed && j.State == "running" {
		total += "+" // the source is still being read
	}
	s := fmt.Sprintf("job %s: %s, %d/%s done, %d failed, %d already cached", j.ID, j.State, j.Done, total, j.Failed, j.Cached)
	if j.Retry != nil {
		s += fmt.Sprintf(", %d retried, %d gave up", j.Retried, j.GaveUp)
	}
	if j.Rate > 0 {
		s += fmt.Sprintf(", %.1f/s", j.Rate)
	}
	if j.ETA > 0 {
		s += ", about " + j.ETA.Round(time.Second).String() + " left"
	}
	if j.Error != "" {
		s += ": " + j.Error
	}
	if j.Notice != "" {
		s += ", notice " + j.Notice
	}
	return s
}

// followJob follows the job's event stream until it is done: a progress
// bar on a terminal, else a line at most every second. It fails when the
// job failed or any item's result is not ok.
func followJob(cmd *cobra.Command, a *api, id string) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	req, err := http.NewRequestWithContext(ctx, "GET", a.base+"/api/v1/jobs/"+url.PathEscape(id)+"/events", nil)
	if err != nil {
		return err
	}
	if err := a.authorize(req); err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req) // no timeout: a job takes what it takes
	if err != nil {
		return fmt.Errorf("follow job %s: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("follow job %s: %s: %s", id, resp.Status, strings.TrimSpace(string(b)))
	}
	var bar *progressbar.ProgressBar
	var last time.Time
	var j server.Job
	event := ""
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
			continue
		}
		d, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if err := json.Unmarshal([]byte(d), &j); err != nil {
			return fmt.Errorf("follow job %s: %w", id, err)
		}
		if event == "done" {
			break
		}
		switch {
		case cli.IsTerminal(out) && j.Listed:
			if bar == nil {
				bar = progressbar.NewOptions(j.Items, progressbar.OptionSetWriter(out), progressbar.OptionSetDescription("job "+id),
					progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("items"),
					progressbar.OptionSetPredictTime(true), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }))
			}
			_ = bar.Set(j.Done)
		case !cli.IsTerminal(out) && time.Since(last) >= time.Second:
			fmt.Fprintln(out, jobLine(j))
			last = time.Now()
		}
	}
	if event != "done" {
		if err := sc.Err(); err != nil {
			return fmt.Errorf("follow job %s: %w", id, err)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("follow job %s: the event stream ended before the job did (run job wait again)", id)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	fmt.Fprintln(out, jobLine(j))
	if j.State != "done" || j.Failed > 0 {
		return cli.ErrSilent
	}
	return nil
}
