// Command outpost-cloud is the reference control plane of the cloud link
// (docs/cloud-link.md) and its CLI: `serve` runs the server (state in
// badger); `enqueue`, `results`, `nodes`, `cancel`, `batch` and `object` speak to a
// running server's operator API.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rs/xid"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// app is the outpost-cloud command line.
var app cli.App

func init() {
	app = cli.App{
		Name:  "outpost-cloud",
		Title: "outpost-cloud: the reference cloud control plane for Outpost nodes.",
		Commands: []cli.Command{
			{Name: "serve", Summary: "run the control plane", Run: cmdServe},
			{Name: "enqueue", Summary: "queue one call for a node (--wait for its result)", Run: cmdEnqueue},
			{Name: "batch", Summary: "run a task over every line of a JSONL file, once per item", Run: cmdBatch},
			{Name: "results", Summary: "list calls and their results", Run: cmdResults},
			{Name: "nodes", Summary: "list nodes", Run: cmdNodes},
			{Name: "cancel", Summary: "cancel a call", Run: cmdCancel},
			{Name: "object", Summary: "put a code object (put FILE, prints sha256:HEX) or list them (ls)", Run: cmdObject}, // objects.go
		},
	}
}

func run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	return app.Run(ctx, args, in, out, errOut)
}

func newFlags(name string, errOut io.Writer) *flag.FlagSet {
	return cli.NewFlags("outpost-cloud", name, errOut)
}

// parse parses flags, allowing positional arguments before flags.
func parse(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, false
			}
			return nil, 2, false
		}
		if fs.NArg() == 0 {
			return pos, 0, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func cmdServe(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	fs := newFlags("serve", errOut)
	listen := fs.String("listen", "127.0.0.1:8480", "address to listen on (port 0: a free port, printed)")
	dir := fs.String("data", "./cloud-data", "state directory (badger)")
	tokens := fs.String("tokens", "", "file of `NODE TOKEN` lines; empty: no authentication (loopback only)")
	opToken := fs.String("operator-token-file", "", "file holding the operator API's bearer token (re-read when it changes); required beyond loopback")
	lease := fs.Duration("lease", 30*time.Second, "default lease of a delivered call")
	live := fs.Duration("live-window", 5*time.Second, "a poller that polled this recently still owns its node")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this certificate")
	tlsKey := fs.String("tls-key", "", "and this key")
	if _, code, ok := parse(fs, args); !ok {
		return code
	}
	log := slog.New(slog.NewTextHandler(errOut, nil)).With("part", "cloud")
	opts := server.Options{Dir: *dir, Lease: *lease, LiveWindow: *live, Log: log, OperatorTokenFile: *opToken}
	if *tokens != "" {
		m, err := readTokens(*tokens)
		if err != nil {
			fmt.Fprintf(errOut, "outpost-cloud serve: %v\n", err)
			return 2
		}
		opts.Tokens = m
	}
	if *tlsCert != "" {
		if err := secretfile.Check(*tlsKey); err != nil {
			fmt.Fprintf(errOut, "outpost-cloud serve: --tls-key: %v\n", err)
			return 1
		}
	}
	srv, err := server.Open(opts)
	if err != nil {
		fmt.Fprintf(errOut, "outpost-cloud serve: %v\n", err)
		return 1
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(errOut, "outpost-cloud serve: %v\n", err)
		return 1
	}
	if err := checkOperatorAuth(ln.Addr(), *opToken, log); err != nil {
		_ = ln.Close()
		fmt.Fprintf(errOut, "outpost-cloud serve: %v\n", err)
		return 2
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(out, "listening on %s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() {
		if *tlsCert != "" {
			errc <- hs.ServeTLS(ln, *tlsCert, *tlsKey)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		fmt.Fprintf(errOut, "outpost-cloud serve: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return 0
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
		return fmt.Errorf("%s %s: %w", method, path, err)
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

func cmdEnqueue(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	fs := newFlags("enqueue", errOut)
	srv := addServer(fs)
	nodeID := fs.String("node", "", "node id (required)")
	task := fs.String("task", "", "task name (required)")
	data := fs.String("data", "", "input: a literal, @FILE, or - for standard input")
	id := fs.String("id", "", "call id (default: a new one); enqueueing an existing id does nothing")
	effect := fs.String("effect", "at_most_once", "idempotent or at_most_once")
	queue := fs.String("queue", "", "queue on the node (control, default, or a configured one)")
	prio := fs.Int("priority", 0, "priority in the node's cloud queue (higher first)")
	ttl := fs.Duration("ttl", 0, "start-by: expire if not started within this (0: never)")
	wait := fs.Bool("wait", false, "wait for the result and print its output")
	timeout := fs.Duration("timeout", 5*time.Minute, "with --wait: give up after this")
	digest := fs.String("digest", "", "sha256:HEX of an object (object put) the task runs: a node without the task fetches and deploys it")
	if _, code, ok := parse(fs, args); !ok {
		return code
	}
	if !checkDigest("enqueue", *digest, errOut) {
		return 2
	}
	if *nodeID == "" || *task == "" {
		fmt.Fprintln(errOut, "outpost-cloud enqueue: --node and --task are required")
		return 2
	}
	if *effect != "idempotent" && *effect != "at_most_once" {
		fmt.Fprintf(errOut, "outpost-cloud enqueue: --effect %q: want idempotent or at_most_once\n", *effect)
		return 2
	}
	input, err := cli.ReadInput(*data, in)
	if err != nil {
		fmt.Fprintf(errOut, "outpost-cloud enqueue: %v\n", err)
		return 2
	}
	if *id == "" {
		*id = xid.New().String()
	}
	a := srv.api()
	var resp struct{ Calls []server.EnqueueItem }
	c := server.Call{ID: *id, Node: *nodeID, Task: *task, Input: input, Effect: *effect, Queue: *queue, Priority: *prio, TTLMS: ttl.Milliseconds(), Digest: *digest}
	if err := a.do(ctx, "POST", "/api/v1/calls", server.EnqueueRequest{Calls: []server.Call{c}}, &resp); err != nil {
		fmt.Fprintf(errOut, "outpost-cloud enqueue: %v\n", err)
		return 1
	}
	if len(resp.Calls) != 1 || resp.Calls[0].Error != "" {
		fmt.Fprintf(errOut, "outpost-cloud enqueue: refused: %+v\n", resp.Calls)
		return 1
	}
	if !*wait {
		fmt.Fprintln(out, *id)
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for {
		var got server.Call
		if err := a.do(ctx, "GET", "/api/v1/calls/"+*id+"?wait=30s", nil, &got); err != nil {
			fmt.Fprintf(errOut, "outpost-cloud enqueue: waiting for %s: %v\n", *id, err)
			return 1
		}
		if !got.Final() {
			continue
		}
		if got.Result == nil || got.Result.Status != "ok" {
			msg := got.State
			if got.Result != nil {
				msg = got.Result.Status + ": " + got.Result.Error
			}
			fmt.Fprintf(errOut, "outpost-cloud enqueue: call %s: %s\n", *id, msg)
			return 1
		}
		_, _ = out.Write(got.Result.Output)
		if n := len(got.Result.Output); n > 0 && got.Result.Output[n-1] != '\n' {
			fmt.Fprintln(out)
		}
		return 0
	}
}

func cmdResults(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	fs := newFlags("results", errOut)
	srv := addServer(fs)
	nodeID := fs.String("node", "", "only this node's calls")
	state := fs.String("state", "", "only calls in this state (pending, leased, done, cancelled, expired)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, code, ok := parse(fs, args); !ok {
		return code
	}
	var resp struct{ Calls []server.Call }
	q := "?node=" + *nodeID + "&state=" + *state
	if err := srv.api().do(ctx, "GET", "/api/v1/calls"+q, nil, &resp); err != nil {
		fmt.Fprintf(errOut, "outpost-cloud results: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(resp.Calls)
		return 0
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNODE\tTASK\tSTATE\tATTEMPT\tDELIVERIES\tSTATUS\tOUTPUT")
	for _, c := range resp.Calls {
		st, o := "", ""
		if c.Result != nil {
			st, o = c.Result.Status, string(c.Result.Output)
			if c.Result.Error != "" {
				o = c.Result.Error
			}
		}
		if len(o) > 40 {
			o = o[:40] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%q\n", c.ID, c.Node, c.Task, c.State, c.Attempt, c.Deliveries, st, o)
	}
	_ = tw.Flush()
	return 0
}

func cmdNodes(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	fs := newFlags("nodes", errOut)
	srv := addServer(fs)
	if _, code, ok := parse(fs, args); !ok {
		return code
	}
	var resp struct{ Nodes []server.NodeInfo }
	if err := srv.api().do(ctx, "GET", "/api/v1/nodes", nil, &resp); err != nil {
		fmt.Fprintf(errOut, "outpost-cloud nodes: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPOLLING\tPENDING\tHELD\tLAST SEEN\tBOOT")
	for _, n := range resp.Nodes {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%s\t%s\n", n.ID, n.Polling, n.Pending, n.Held, n.LastSeen.Format(time.RFC3339), n.Boot)
	}
	_ = tw.Flush()
	return 0
}

func cmdCancel(ctx context.Context, args []string, _ io.Reader, _, errOut io.Writer) int {
	fs := newFlags("cancel", errOut)
	srv := addServer(fs)
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(errOut, "Usage: outpost-cloud cancel CALL_ID")
		return 2
	}
	if err := srv.api().do(ctx, "DELETE", "/api/v1/calls/"+pos[0], nil, nil); err != nil {
		fmt.Fprintf(errOut, "outpost-cloud cancel: %v\n", err)
		return 1
	}
	return 0
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

func cmdBatch(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	fs := newFlags("batch", errOut)
	srv := addServer(fs)
	nodeID := fs.String("node", "", "node id (required)")
	task := fs.String("task", "", "task name (required)")
	effect := fs.String("effect", "idempotent", "idempotent or at_most_once")
	chunk := fs.Int("chunk", 500, "calls per enqueue request")
	every := fs.Duration("progress", time.Second, "progress line interval")
	timeout := fs.Duration("timeout", 0, "give up after this (0: never)")
	digest := fs.String("digest", "", "sha256:HEX of an object (object put) the task runs: a node without the task fetches and deploys it")
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if !checkDigest("batch", *digest, errOut) {
		return 2
	}
	if *nodeID == "" || *task == "" || len(pos) != 1 {
		fmt.Fprintln(errOut, "Usage: outpost-cloud batch --node N --task T ITEMS.jsonl")
		return 2
	}
	f, err := os.Open(pos[0])
	if err != nil {
		fmt.Fprintf(errOut, "outpost-cloud batch: %v\n", err)
		return 2
	}
	defer f.Close()
	var items []server.Call
	seen := map[string]bool{} // in-process cache: the same item twice is one call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if !json.Valid(b) {
			fmt.Fprintf(errOut, "outpost-cloud batch: %s:%d: not a JSON value\n", pos[0], line)
			return 2
		}
		id := itemID(*nodeID, *task, *digest, b)
		if seen[id] {
			continue
		}
		seen[id] = true
		items = append(items, server.Call{ID: id, Node: *nodeID, Task: *task, Input: append([]byte(nil), b...), Effect: *effect, Digest: *digest})
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(errOut, "outpost-cloud batch: %s: %v\n", pos[0], err)
		return 2
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	a := srv.api()
	created, existing := 0, 0
	for i := 0; i < len(items); i += *chunk {
		part := items[i:min(i+*chunk, len(items))]
		var resp struct{ Calls []server.EnqueueItem }
		if err := a.do(ctx, "POST", "/api/v1/calls", server.EnqueueRequest{Calls: part}, &resp); err != nil {
			fmt.Fprintf(errOut, "outpost-cloud batch: %v\n", err)
			return 1
		}
		for _, it := range resp.Calls {
			switch {
			case it.Error != "":
				fmt.Fprintf(errOut, "outpost-cloud batch: item %s refused: %s\n", it.ID, it.Error)
				return 1
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
			fmt.Fprintf(errOut, "outpost-cloud batch: %v\n", err)
			return 1
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
		if time.Since(last) >= *every {
			fmt.Fprintf(out, "progress: %d/%d done\n", done, len(items))
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(errOut, "outpost-cloud batch: %d of %d items without a result: %v\n", len(left), len(items), ctx.Err())
			return 1
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
		return 1
	}
	return 0
}
