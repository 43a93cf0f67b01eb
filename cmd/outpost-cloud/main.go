// Command outpost-cloud is the reference control plane of the cloud link
// (docs/cloud-link.md) and its CLI: `serve` runs the server (state in
// badger, or in PostgreSQL shared by replicas); `enqueue`, `results`,
// `nodes`, `cancel`, `batch`, `object` and `messages` speak to a running
// server's operator API; `job` runs data-set jobs on the server.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rs/xid"
	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code: 0 success,
// 1 failure, 2 bad usage.
func run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	return cli.Execute(ctx, newRoot(), args, cli.IO{In: in, Out: out, ErrOut: errOut})
}

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "outpost-cloud",
		Short: "outpost-cloud: the reference cloud control plane for Outpost nodes",
		Long: `outpost-cloud: the reference cloud control plane for Outpost nodes.

'outpost-cloud serve' runs the control plane; the other commands speak to a
running one through its operator API (--server URL or $OUTPOST_CLOUD,
default http://127.0.0.1:8480; --token-file or $OUTPOST_CLOUD_TOKEN_FILE
when it requires a token).`,
	}
	root.AddCommand(newServeCmd(), newEnqueueCmd(), newBatchCmd(), newResultsCmd(), newNodeListCmd("nodes"), newNodeCmd(), newCancelCmd(), newObjectCmd(), newJobCmd(), newMessagesCmd())
	cli.AddVersion(root, cli.BuildVersion())
	return root
}

func newServeCmd() *cobra.Command {
	var (
		listen, dir, tokens, opToken, tlsCert, tlsKey, storeFile, hookSecret string
		lease, live, replicaTimeout, jobLease                                time.Duration
		runWorkers                                                           int
		runMemory                                                            string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the control plane (state in badger under --data, or in PostgreSQL)",
		Long: `Run the control plane. Its queues live in badger under --data (one
process), or with --store-file in a PostgreSQL database that any number of
replicas share: start each replica with the same file, behind one address
(a load balancer or DNS) that the nodes dial.`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if runWorkers < 0 {
				return cli.Usagef("--run-workers must not be negative")
			}
			runBudget, err := confval.ParseByteSize(runMemory)
			if err != nil {
				return cli.Usagef("--run-memory: %v", err)
			}
			log := slog.New(slog.NewTextHandler(errOut, nil)).With("part", "cloud")
			opts := server.Options{Dir: dir, Lease: lease, LiveWindow: live, Log: log, OperatorTokenFile: opToken, ReplicaTimeout: replicaTimeout,
				WebhookSecretFile: hookSecret, JobLease: jobLease, RunWorkers: runWorkers, RunMemory: uint64(runBudget)}
			if storeFile != "" {
				url, err := readStoreFile(storeFile)
				if err != nil {
					return &cli.UsageError{Err: err}
				}
				opts.Store = url
			}
			if tokens != "" {
				m, err := readTokens(tokens)
				if err != nil {
					return &cli.UsageError{Err: err}
				}
				opts.Tokens = m
			}
			if tlsCert != "" {
				if err := secretfile.Check(tlsKey); err != nil {
					return &cli.UsageError{Err: fmt.Errorf("--tls-key: %w", err)}
				}
			}
			srv, err := server.Open(opts)
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("%w (change --listen)", err)
			}
			if err := checkOperatorAuth(ln.Addr(), opToken, log); err != nil {
				_ = ln.Close()
				return &cli.UsageError{Err: err}
			}
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(out, "listening on %s\n", ln.Addr())
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			errc := make(chan error, 1)
			go func() {
				if tlsCert != "" {
					errc <- hs.ServeTLS(ln, tlsCert, tlsKey)
				} else {
					errc <- hs.Serve(ln)
				}
			}()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = hs.Shutdown(sctx)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8480", "address to listen on (port 0: a free port, printed)")
	f.StringVar(&dir, "data", "./cloud-data", "state directory (badger; with --store-file only code objects)")
	f.StringVar(&storeFile, "store-file", "", "file holding a postgres:// connection URL (mode 600): keep the queues in PostgreSQL, shared by replicas")
	f.StringVar(&hookSecret, "webhook-secret-file", "", "file holding the secret that signs job completion webhooks (Outpost-Signature: sha256=HMAC)")
	f.DurationVar(&replicaTimeout, "replica-timeout", 5*time.Second, "with --store-file: a replica silent this long no longer holds its nodes' polls")
	f.DurationVar(&jobLease, "job-lease", 15*time.Second, "one replica drives each data-set job, holding a lease this long (a killed replica's jobs move after --replica-timeout)")
	f.StringVar(&tokens, "tokens", "", "file of `NODE TOKEN` lines; empty: no authentication (loopback only)")
	f.StringVar(&opToken, "operator-token-file", "", "file holding the operator API's bearer token (re-read when it changes); required beyond loopback")
	f.DurationVar(&lease, "lease", 30*time.Second, "default lease of a delivered call")
	f.DurationVar(&live, "live-window", 5*time.Second, "a poller that polled this recently still owns its node")
	f.IntVar(&runWorkers, "run-workers", 0, "run nodes' calls placed in the cloud environment here, this many at once (0: none)")
	f.StringVar(&runMemory, "run-memory", "1GiB", "with --run-workers: the linear memory all their instances may hold together")
	f.StringVar(&tlsCert, "tls-cert", "", "serve HTTPS with this certificate")
	f.StringVar(&tlsKey, "tls-key", "", "and this key")
	cmd.MarkFlagsRequiredTogether("tls-cert", "tls-key")
	return cmd
}

func readTokens(path string) (map[string]string, error) {
	b, err := secretfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("--tokens: %w", err)
	}
	m := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("--tokens %s:%d: want `NODE TOKEN`", path, i+1)
		}
		m[f[1]] = f[0]
	}
	return m, nil
}

// readStoreFile reads the PostgreSQL connection URL from a secret file (it
// may carry a password, so it is never a flag's value, which ps shows).
func readStoreFile(path string) (string, error) {
	b, err := secretfile.ReadToken(path)
	if err != nil {
		return "", fmt.Errorf("--store-file: %w", err)
	}
	url := string(b)
	if !server.IsPostgres(url) {
		return "", fmt.Errorf("--store-file %s: want a postgres:// or postgresql:// URL", path)
	}
	return url, nil
}

// api is a client of the operator API.
type api struct {
	base      string
	tokenFile string // operator token; "" sends none
	hc        *http.Client
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func newAPI(base, tokenFile string) *api {
	return &api{base: strings.TrimRight(base, "/"), tokenFile: tokenFile, hc: &http.Client{Timeout: 6 * time.Minute}}
}

func (a *api) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if err := a.authorize(req); err != nil {
		return err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is `outpost-cloud serve` running there? give its URL with --server or $OUTPOST_CLOUD)", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

func newEnqueueCmd() *cobra.Command {
	var (
		nodeID, selector, task, data, id, effect, queue, digest string
		prio                                                    int
		ttl, timeout                                            time.Duration
		wait                                                    bool
	)
	cmd := &cobra.Command{
		Use:   "enqueue --node NODE --task TASK [--data INPUT] [--wait]",
		Short: "Queue one call for a node (--wait for its result), or for every node a label selector picks",
		Long: `Queue one call for a node and print its id, or with --wait its output.
With --selector instead of --node, queue one call for every node whose
labels match (ID@NODE each; see outpost-cloud node label) and print their ids.

The input is --data (a literal, @FILE or - for standard input) or, without
--data, standard input when it is a pipe or a file. A node that has never
polled this control plane gets a warning at once: the call waits until a
node of that id polls. --label KEY=VALUE (repeat it) labels the call: the
node's placement rules see the labels as call.labels.`,
		Example: `  outpost-cloud enqueue --node edge-1 --task echo --data '{"x":1}' --wait
  outpost-cloud enqueue --node edge-1 --task report --digest sha256:HEX < input.json
  outpost-cloud enqueue --node edge-1 --task resize --label tier=batch --data @image.png
  outpost-cloud enqueue --selector 'region=eu,tier in (gold,silver)' --task reload --data '{}'`,
		Args: cli.NoArgs,
	}
	srv := addServer(cmd)
	f := cmd.Flags()
	f.StringVar(&nodeID, "node", "", "node id (this or --selector)")
	f.StringVarP(&selector, "selector", "l", "", "label selector: one call for each node it matches (k=v,k!=v,k in (a,b),k notin (a,b),k,!k)")
	f.StringVar(&task, "task", "", "task name (required)")
	f.StringVar(&data, "data", "", cli.DataHelp)
	f.StringVar(&id, "id", "", "call id (default: a new one); enqueueing an existing id does nothing")
	f.StringVar(&effect, "effect", "at_most_once", "idempotent or at_most_once")
	f.StringVar(&queue, "queue", "", "queue on the node (control, default, or a configured one)")
	f.IntVar(&prio, "priority", 0, "priority in the node's cloud queue (higher first)")
	f.DurationVar(&ttl, "ttl", 0, "start-by: expire if not started within this (0: never)")
	f.BoolVar(&wait, "wait", false, "wait for the result and print its output")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait: give up after this")
	f.StringVar(&digest, "digest", "", "sha256:HEX of an object (object put) the task runs: a node without the task fetches and deploys it")
	labels := addLabelFlag(cmd, "a label of the call")
	_ = cmd.MarkFlagRequired("task")
	cmd.MarkFlagsOneRequired("node", "selector")
	cmd.MarkFlagsMutuallyExclusive("node", "selector")
	cmd.MarkFlagsMutuallyExclusive("wait", "selector")
	_ = cmd.RegisterFlagCompletionFunc("effect", cobra.FixedCompletions([]string{"at_most_once", "idempotent"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("node", srv.completeNodes)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkDigest(digest); err != nil {
			return err
		}
		if _, err := server.ParseSelector(selector); err != nil {
			return &cli.UsageError{Err: fmt.Errorf("--selector: %w", err)}
		}
		if effect != "idempotent" && effect != "at_most_once" {
			return cli.Usagef("--effect %q: want idempotent or at_most_once", effect)
		}
		lm, err := parseLabelFlag(*labels)
		if err != nil {
			return err
		}
		input, err := cli.ReadInput(data, cmd.Flags().Changed("data"), cmd.InOrStdin())
		if err != nil {
			return err
		}
		if id == "" {
			id = xid.New().String()
		}
		ctx, out, errOut := cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr()
		a := srv.api()
		c := server.Call{ID: id, Task: task, Input: input, Effect: effect, Queue: queue, Priority: prio, TTLMS: ttl.Milliseconds(), Digest: digest, Labels: lm}
		if selector != "" {
			return enqueueSelected(ctx, a, out, selector, c)
		}
		c.Node = nodeID
		seen, err := a.nodeSeen(ctx, nodeID)
		if err != nil {
			return err
		}
		if !seen {
			fmt.Fprintf(errOut, "warning: node %q has not polled this control plane (see outpost-cloud nodes); the call waits until it does\n", nodeID)
		}
		var resp struct{ Calls []server.EnqueueItem }
		if err := a.do(ctx, "POST", "/api/v1/calls", server.EnqueueRequest{Calls: []server.Call{c}}, &resp); err != nil {
			return err
		}
		if len(resp.Calls) != 1 || resp.Calls[0].Error != "" {
			return fmt.Errorf("refused: %+v", resp.Calls)
		}
		if !wait {
			fmt.Fprintln(out, id)
			return nil
		}
		if !seen {
			fmt.Fprintf(errOut, "waiting for node %q, which has not polled yet (up to %s)\n", nodeID, timeout)
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		for {
			var got server.Call
			if err := a.do(ctx, "GET", "/api/v1/calls/"+url.PathEscape(id)+"?wait=30s", nil, &got); err != nil {
				return fmt.Errorf("waiting for %s: %w", id, err)
			}
			if !got.Final() {
				continue
			}
			if got.Result == nil || got.Result.Status != "ok" {
				msg := got.State
				if got.Result != nil {
					msg = got.Result.Status + ": " + got.Result.Error
				}
				return fmt.Errorf("call %s: %s", id, msg)
			}
			_, _ = out.Write(got.Result.Output)
			if n := len(got.Result.Output); n > 0 && got.Result.Output[n-1] != '\n' {
				fmt.Fprintln(out)
			}
			return nil
		}
	}
	return cmd
}

// nodeSeen reports whether node has ever polled (since the server started).
func (a *api) nodeSeen(ctx context.Context, node string) (bool, error) {
	nodes, err := a.nodes(ctx)
	if err != nil {
		return false, err
	}
	for _, n := range nodes {
		if n.ID == node && !n.LastSeen.IsZero() {
			return true, nil
		}
	}
	return false, nil
}

// nodes lists the nodes the server knows.
func (a *api) nodes(ctx context.Context) ([]server.NodeInfo, error) {
	var resp struct{ Nodes []server.NodeInfo }
	if err := a.do(ctx, "GET", "/api/v1/nodes", nil, &resp); err != nil {
		return nil, err
	}
	return resp.Nodes, nil
}

func newResultsCmd() *cobra.Command {
	var nodeID, state string
	cmd := &cobra.Command{Use: "results", Short: "List calls and their results", Args: cli.NoArgs}
	srv := addServer(cmd)
	out := cli.AddOutput(cmd)
	cmd.Flags().StringVar(&nodeID, "node", "", "only this node's calls")
	cmd.Flags().StringVar(&state, "state", "", "only calls in this state (pending, leased, done, cancelled, expired)")
	labels := cmd.Flags().StringArray("label", nil, "only calls with this label, KEY=VALUE (repeat: every one)")
	_ = cmd.RegisterFlagCompletionFunc("node", srv.completeNodes)
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions([]string{"pending", "leased", "done", "cancelled", "expired"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if _, err := parseLabelFlag(*labels); err != nil {
			return err
		}
		var resp struct{ Calls []server.Call }
		q := url.Values{"node": {nodeID}, "state": {state}, "label": *labels}
		if err := srv.api().do(cmd.Context(), "GET", "/api/v1/calls?"+q.Encode(), nil, &resp); err != nil {
			return err
		}
		sort.SliceStable(resp.Calls, func(i, j int) bool { return resp.Calls[i].Enqueued.Before(resp.Calls[j].Enqueued) })
		return out.Print(cmd.OutOrStdout(), resp.Calls, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNODE\tTASK\tSTATE\tATTEMPT\tDELIVERIES\tSTATUS\tOUTPUT")
			for _, c := range resp.Calls {
				st, o := "", ""
				if c.Result != nil {
					st, o = c.Result.Status, cli.Bytes(c.Result.Output)
					if c.Result.Error != "" {
						o = c.Result.Error
					}
				}
				if r := []rune(o); len(r) > 40 {
					o = string(r[:40]) + "…"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%q\n", c.ID, c.Node, c.Task, c.State, c.Attempt, c.Deliveries, st, o)
			}
			_ = tw.Flush()
		})
	}
	return cmd
}

func newCancelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cancel CALL_ID", Short: "Cancel a queued or running call", Args: cli.ExactArgs(1, "")}
	srv := addServer(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := srv.api().do(cmd.Context(), "DELETE", "/api/v1/calls/"+url.PathEscape(args[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "cancelled %s\n", args[0])
		return nil
	}
	return cmd
}

// itemID derives a call id from an item, so a re-run finds the same calls
// (a digest, when given, is part of the work).
func itemID(nodeID, task, digest string, item []byte) string {
	h := sha256.New()
	h.Write([]byte(nodeID + "\x00" + task + "\x00"))
	if digest != "" {
		h.Write([]byte(digest + "\x00"))
	}
	h.Write(item)
	return "b-" + hex.EncodeToString(h.Sum(nil))[:24]
}

func newBatchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "batch --node NODE --task TASK ITEMS.jsonl",
		Short: "Run a task over every line of a JSONL file, once per item",
		Long: `Run a task over every line of a JSONL file, once per item: each item's
call id is derived from the node, the task, the digest and the item, so a
re-run only runs the items that have no result yet. --label KEY=VALUE
(repeat it) labels every call, as enqueue --label does (not part of the
call ids: the same items with other labels are the same work).`,
		Example: `  outpost-cloud batch --node edge-1 --task score --label tier=batch items.jsonl`,
		Args:    cli.ExactArgs(1, ""),
	}
	srv := addServer(cmd)
	f := cmd.Flags()
	nodeID := f.String("node", "", "node id (required)")
	task := f.String("task", "", "task name (required)")
	effect := f.String("effect", "idempotent", "idempotent or at_most_once")
	chunk := f.Int("chunk", 500, "calls per enqueue request")
	every := f.Duration("progress", time.Second, "progress line interval")
	timeout := f.Duration("timeout", 0, "give up after this (0: never)")
	digest := f.String("digest", "", "sha256:HEX of an object (object put) the task runs: a node without the task fetches and deploys it")
	labels := addLabelFlag(cmd, "a label of every call")
	_ = cmd.MarkFlagRequired("node")
	_ = cmd.MarkFlagRequired("task")
	_ = cmd.RegisterFlagCompletionFunc("node", srv.completeNodes)
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		if err := checkDigest(*digest); err != nil {
			return err
		}
		lm, err := parseLabelFlag(*labels)
		if err != nil {
			return err
		}
		tmpl := server.Call{Node: *nodeID, Task: *task, Effect: *effect, Digest: *digest, Labels: lm}
		return batch(cmd, srv, pos[0], tmpl, *chunk, *every, *timeout)
	}
	return cmd
}

// addLabelFlag adds --label (KEY=VALUE, repeated) to cmd, what says what
// the label is of.
func addLabelFlag(cmd *cobra.Command, what string) *[]string {
	return cmd.Flags().StringArray("label", nil, what+", KEY=VALUE (repeat for more): the node's placement rules see it as call.labels")
}

// parseLabelFlag checks the values of --label; a bad one is a usage error.
func parseLabelFlag(kvs []string) (map[string]string, error) {
	lm, err := confval.ParseLabels(kvs)
	if err != nil {
		return nil, cli.Usagef("--label: %v", err)
	}
	return lm, nil
}

// batch enqueues one call per line of the file at path, each tmpl with
// the line as its input and an id of its own (itemID), and waits until
// every one has a result.
func batch(cmd *cobra.Command, srv *apiFlags, path string, tmpl server.Call, chunk int, every, timeout time.Duration) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var items []server.Call
	seen := map[string]bool{} // in-process cache: the same item twice is one call
	if err := server.ReadJSONLines(f, func(_ int, b []byte) error {
		if id := itemID(tmpl.Node, tmpl.Task, tmpl.Digest, b); !seen[id] {
			seen[id] = true
			c := tmpl
			c.ID, c.Input = id, b
			items = append(items, c)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("%s%w", path, err)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	a := srv.api()
	created, existing := 0, 0
	for i := 0; i < len(items); i += chunk {
		part := items[i:min(i+chunk, len(items))]
		var resp struct{ Calls []server.EnqueueItem }
		if err := a.do(ctx, "POST", "/api/v1/calls", server.EnqueueRequest{Calls: part}, &resp); err != nil {
			return err
		}
		for _, it := range resp.Calls {
			switch {
			case it.Error != "":
				return fmt.Errorf("item %s refused: %s", it.ID, it.Error)
			case it.Created:
				created++
			default:
				existing++ // done or in flight already: not run again
			}
		}
	}
	fmt.Fprintf(out, "%d items: %d enqueued, %d already done or in flight\n", len(items), created, existing)
	left := map[string]bool{}
	for _, it := range items {
		left[it.ID] = true
	}
	failed := map[string]int{}
	done := 0
	last := time.Now()
	for len(left) > 0 {
		ids := make([]string, 0, len(left))
		for id := range left {
			ids = append(ids, id)
		}
		var resp struct{ Calls []server.Call }
		if err := a.do(ctx, "POST", "/api/v1/calls:status", server.StatusRequest{IDs: ids}, &resp); err != nil {
			return err
		}
		for _, c := range resp.Calls {
			if !c.Final() {
				continue
			}
			delete(left, c.ID)
			done++
			if c.Result == nil || c.Result.Status != "ok" {
				st := c.State
				if c.Result != nil {
					st = c.Result.Status
				}
				failed[st]++
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Since(last) >= every {
			fmt.Fprintf(out, "progress: %d/%d done\n", done, len(items))
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d items without a result: %w", len(left), len(items), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	nf := 0
	for _, n := range failed {
		nf += n
	}
	fmt.Fprintf(out, "all %d items have a result: %d ok, %d failed", len(items), len(items)-nf, nf)
	if nf > 0 {
		fmt.Fprintf(out, " %v", failed)
	}
	fmt.Fprintln(out)
	if nf > 0 {
		return cli.ErrSilent
	}
	return nil
}
