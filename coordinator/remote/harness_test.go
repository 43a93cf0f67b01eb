package remote_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/store"
)

// cloudStore selects the engine of the test control plane: the link suite
// runs on badger by default and on PostgreSQL with -cloud-store postgres
// (scripts/test.sh runs it both ways).
var cloudStore = flag.String("cloud-store", "badger", "engine of the test control plane: badger or postgres")

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	pgtest.StopShared()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var quiet = slog.New(slog.DiscardHandler)

// cloud is a real control plane on a loopback port, behind a fault proxy.
type cloud struct {
	t     testing.TB
	dir   string
	srv   *server.Server
	hs    *httptest.Server
	proxy *httptest.Server
	opts  server.Options
	// fault, when set, sees every request first; it returns true if it
	// answered (or broke) the request itself.
	fault   atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
	mu      sync.Mutex
	seen    map[string]int // requests by "METHOD kind"
	backend atomic.Pointer[string]
}

func startCloudB(b *testing.B) *cloud { return startCloud(b, server.Options{}) }

func startCloud(t testing.TB, opts server.Options) *cloud {
	t.Helper()
	c := &cloud{t: t, dir: t.TempDir(), seen: map[string]int{}}
	if opts.Lease == 0 {
		opts.Lease = 2 * time.Second
	}
	if opts.LiveWindow == 0 {
		opts.LiveWindow = 300 * time.Millisecond
	}
	opts.Dir, opts.Log = c.dir, quiet
	switch *cloudStore {
	case "postgres":
		opts.Store = pgtest.Shared(t).NewDatabase()
	case "badger":
	default:
		t.Fatalf("-cloud-store %q: want badger or postgres", *cloudStore)
	}
	c.opts = opts
	c.open()
	c.proxy = httptest.NewServer(http.HandlerFunc(c.serveProxy))
	t.Cleanup(func() {
		c.proxy.CloseClientConnections()
		c.proxy.Close()
		c.hs.CloseClientConnections()
		c.hs.Close()
		_ = c.srv.Close()
	})
	return c
}

func (c *cloud) open() {
	srv, err := server.Open(c.opts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.srv = srv
	c.hs = httptest.NewServer(srv.Handler())
	u := c.hs.URL
	c.backend.Store(&u)
}

func (c *cloud) url() string { return *c.backend.Load() }

// restartLosingSessions restarts the server so that it has lost the
// nodes' sessions (their delivery seqs): a new server on the same state
// (the proxy address stays). Badger keeps sessions in memory, so a restart
// loses them; PostgreSQL keeps them in the nodes table, which is emptied
// first, as a database restored from an older backup would be.
func (c *cloud) restartLosingSessions() {
	c.hs.CloseClientConnections()
	c.hs.Close()
	_ = c.srv.Close()
	if c.opts.Store != "" {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, c.opts.Store)
		if err != nil {
			c.t.Fatal(err)
		}
		_, err = conn.Exec(ctx, `DELETE FROM nodes`)
		_ = conn.Close(ctx)
		if err != nil {
			c.t.Fatal(err)
		}
	}
	c.open()
}

func (c *cloud) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	if f == nil {
		c.fault.Store(nil)
		return
	}
	c.fault.Store(&f)
}

func kind(r *http.Request) string {
	switch {
	case r.Method == "POST" && len(r.URL.Path) > 5 && r.URL.Path[len(r.URL.Path)-5:] == "/poll":
		return "poll"
	case r.Method == "PUT":
		return "result"
	case r.Method == "POST":
		return "batch"
	}
	return r.Method
}

func (c *cloud) count(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[k]
}

func (c *cloud) serveProxy(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.seen[kind(r)]++
	c.mu.Unlock()
	if f := c.fault.Load(); f != nil && (*f)(w, r) {
		return
	}
	u, _ := url.Parse(c.url())
	p := httputil.NewSingleHostReverseProxy(u)
	p.ErrorLog = log.New(io.Discard, "", 0)
	p.ServeHTTP(w, r)
}

// forward sends r to the real server and returns its response, for faults
// that act after the server did its work.
func (c *cloud) forward(r *http.Request) (*http.Response, []byte) {
	body, _ := io.ReadAll(r.Body)
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, c.url()+r.URL.RequestURI(), bytesReader(body))
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// hangUp closes the client's connection without an answer.
func hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

func (c *cloud) enqueue(calls ...server.Call) {
	c.t.Helper()
	items, err := c.srv.Enqueue(calls)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, it := range items {
		if it.Error != "" || !it.Created {
			c.t.Fatalf("enqueue %+v", it)
		}
	}
}

func (c *cloud) waitFinal(ids []string, d time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := c.srv.WaitFinal(ctx, ids...); err != nil {
		c.t.Fatal(err)
	}
}

// edge is a node: store, journal, scheduler, Durable and a link client.
type edge struct {
	t      testing.TB
	db     *store.DB
	j      *calls.Journal
	s      *calls.Scheduler
	d      *calls.Durable
	c      *remote.Client
	ex     *testExec
	reg    *prometheus.Registry
	closed bool
}

// testExec runs tasks: echo returns its input; slow sleeps for its
// input's duration then echoes; it counts executions by call id.
type testExec struct {
	mu   sync.Mutex
	runs map[string]int
}

func (x *testExec) Concurrency(task string) (int, bool) {
	return 8, task == "echo" || task == "slow"
}

func (x *testExec) Execute(ctx context.Context, c *calls.Call) calls.Result {
	x.mu.Lock()
	x.runs[c.ID]++
	x.mu.Unlock()
	if c.Task == "slow" {
		d, _ := time.ParseDuration(string(c.Input))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return calls.Result{Status: calls.StatusTimeout, Error: ctx.Err().Error()}
		}
	}
	return calls.Result{Status: calls.StatusOK, Output: c.Input}
}

func (x *testExec) count(id string) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.runs[id]
}

func startEdgeB(b *testing.B, cl *cloud, mod func(*remote.Config)) *edge {
	return startEdge(b, cl, b.TempDir(), mod)
}

func startEdge(t testing.TB, cl *cloud, dir string, mod func(*remote.Config)) *edge {
	t.Helper()
	return startEdgeLog(t, cl, dir, mod, quiet)
}

// startEdgeLog is startEdge with the link's logger.
func startEdgeLog(t testing.TB, cl *cloud, dir string, mod func(*remote.Config), lg *slog.Logger) *edge {
	t.Helper()
	db, err := store.Open(dir, store.Defaults(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	e := &edge{t: t, db: db, ex: &testExec{runs: map[string]int{}}, reg: prometheus.NewRegistry()}
	if e.j, err = calls.OpenJournal(db, calls.JournalOptions{}, quiet, nil); err != nil {
		t.Fatal(err)
	}
	e.s = calls.NewScheduler(e.ex, calls.Options{Workers: 4, QueueSize: 1000}, quiet, nil)
	cfg := remote.Config{URL: cl.proxy.URL, NodeID: "edge-1", PollWait: 500 * time.Millisecond, BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	var link atomic.Pointer[remote.Client]
	e.d = calls.NewDurable(e.j, e.s, quiet, func(*calls.Record) {
		if l := link.Load(); l != nil {
			l.Notify()
		}
	})
	e.c = remote.New(cfg, remote.NewNode(e.d), lg, e.reg)
	link.Store(e.c)
	if err := e.d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

func (e *edge) close() {
	if e.closed {
		return
	}
	e.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.c.StopPolling()
	_ = e.s.Drain(ctx)
	_ = e.c.Stop(ctx)
	_ = e.j.Close()
	_ = e.db.Close()
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func echoCalls(node string, idList []string, effect string) []server.Call {
	out := make([]server.Call, len(idList))
	for i, id := range idList {
		out[i] = server.Call{ID: id, Node: node, Task: "echo", Input: []byte("in " + id), Effect: effect}
	}
	return out
}

// checkOnce asserts each call has an ok result with its echo and ran once.
func (e *edge) checkOnce(cl *cloud, idList []string) {
	e.t.Helper()
	for _, id := range idList {
		c, ok := cl.srv.Get(id)
		if !ok || c.State != "done" || c.Result == nil || c.Result.Status != "ok" || string(c.Result.Output) != "in "+id {
			e.t.Errorf("%s: %+v", id, c)
		}
		if n := e.ex.count(id); n != 1 {
			e.t.Errorf("%s ran %d times", id, n)
		}
	}
}

func tempFile(t *testing.T, content string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "tok")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(content)
	_ = f.Close()
	return f.Name()
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }

// logBuf collects log records for assertions.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }
