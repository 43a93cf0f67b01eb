package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// node answers calls by task name, as the coordinator would.
type node struct{ draining bool }

func (n *node) Health() Health {
	h := Health{Status: "ok", Node: "n1"}
	if n.draining {
		h.Status = "draining"
	}
	return h
}

func (n *node) Tasks() []Task { return []Task{{Name: "echo", ABI: "reactor", Concurrency: 4}} }

func (n *node) Call(ctx context.Context, c *calls.Call) (calls.Result, error) {
	c.Started = time.Now()
	defer func() { c.Finished = time.Now() }()
	switch c.Task {
	case "echo":
		return calls.Result{Status: calls.StatusOK, Output: c.Input}, nil
	case "slow":
		<-ctx.Done()
		return calls.Result{}, ctx.Err()
	case "trap":
		c.Result = calls.Result{Status: calls.StatusTrap, Error: "wasm error: unreachable"}
		return c.Result, nil
	case "busy":
		return calls.Result{}, calls.ErrQueueFull
	}
	return calls.Result{}, errors.New(`unknown task "` + c.Task + `"`) // not wrapped: the server must not 404 on text
}

// newServer returns a server for n that keeps its token in a temporary
// dir, not yet started.
func newServer(t *testing.T, n Node, reg prometheus.Registerer) *Server {
	t.Helper()
	opts := Options{Listen: "127.0.0.1:0", TokenFile: filepath.Join(t.TempDir(), TokenFileName), CreateToken: true}
	return NewServer(opts, n, reg, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// run starts s and returns a client that found its token as the CLI does.
func run(t *testing.T, s *Server) *Client {
	t.Helper()
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	c, err := Dial(ClientOptions{Addr: s.Addr(), DaemonTokenFile: s.opts.TokenFile})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func start(t *testing.T, n Node) *Client {
	t.Helper()
	return run(t, newServer(t, n, prometheus.NewRegistry()))
}

// send makes a request with the client's token and returns the answer.
func send(t *testing.T, c *Client, method, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, code, err := c.do(req)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

func TestCalls(t *testing.T) {
	c := start(t, &node{})
	ctx := context.Background()
	out, err := c.Call(ctx, "echo", []byte(`{"x":1}`), CallOptions{})
	if err != nil || string(out.Output) != `{"x":1}` {
		t.Fatalf("echo: %q %v", out, err)
	}
	tests := []struct {
		task    string
		timeout time.Duration
		status  int
		code    calls.Status
	}{
		{"trap", 0, http.StatusUnprocessableEntity, calls.StatusTrap},
		{"slow", 50 * time.Millisecond, http.StatusGatewayTimeout, calls.StatusTimeout},
		{"busy", 0, http.StatusServiceUnavailable, calls.StatusRejected},
	}
	for _, tt := range tests {
		t.Run(tt.task, func(t *testing.T) {
			_, err := c.Call(ctx, tt.task, nil, CallOptions{Timeout: tt.timeout})
			var ce *CallError
			if !errors.As(err, &ce) || ce.HTTPStatus != tt.status || ce.Doc.Error.Code != tt.code || ce.Doc.Task != tt.task {
				t.Fatalf("got %#v (%v), want HTTP %d code %s", ce, err, tt.status, tt.code)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	c := start(t, &node{})
	code, body := send(t, c, http.MethodPost, "/v1/tasks/echo/call?timeout=soon")
	if code != http.StatusBadRequest || !strings.Contains(string(body), `timeout \"soon\" is not a positive duration`) {
		t.Errorf("bad timeout: %d %s", code, body)
	}
	if code, _ := send(t, c, http.MethodGet, "/v1/tasks/echo/call"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET on call: %d", code)
	}
}

func TestHealthAndTasks(t *testing.T) {
	n := &node{}
	c := start(t, n)
	ctx := context.Background()
	h, err := c.Health(ctx)
	if err != nil || h.Status != "ok" || h.Node != "n1" {
		t.Fatalf("health %+v %v", h, err)
	}
	n.draining = true
	if h, err := c.Health(ctx); err != nil || h.Status != "draining" {
		t.Fatalf("draining health %+v %v", h, err)
	}
	ts, err := c.Tasks(ctx)
	if err != nil || len(ts) != 1 || ts[0].Name != "echo" {
		t.Fatalf("tasks %+v %v", ts, err)
	}
	resp, err := http.Get(c.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/metrics: %d", resp.StatusCode)
	}
}

func TestUnreachable(t *testing.T) {
	addr := mqtttest.FreeAddr(t) // nothing listens there
	_, err := NewClient(addr).Health(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot reach the outpost daemon at http://"+addr) {
		t.Fatalf("got %v", err)
	}
}
