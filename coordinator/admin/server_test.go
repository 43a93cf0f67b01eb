package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
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

func start(t *testing.T, n Node) *Client {
	t.Helper()
	s := NewServer("127.0.0.1:0", n, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return NewClient(s.Addr())
}

func TestCalls(t *testing.T) {
	c := start(t, &node{})
	ctx := context.Background()
	out, err := c.Call(ctx, "echo", []byte(`{"x":1}`), 0)
	if err != nil || string(out) != `{"x":1}` {
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
			_, err := c.Call(ctx, tt.task, nil, tt.timeout)
			var ce *CallError
			if !errors.As(err, &ce) || ce.HTTPStatus != tt.status || ce.Doc.Error.Code != tt.code || ce.Doc.Task != tt.task {
				t.Fatalf("got %#v (%v), want HTTP %d code %s", ce, err, tt.status, tt.code)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	c := start(t, &node{})
	resp, err := http.Post(c.base+"/v1/tasks/echo/call?timeout=soon", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `timeout \"soon\" is not a positive duration`) {
		t.Errorf("bad timeout: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(c.base + "/v1/tasks/echo/call")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET on call: %d", resp.StatusCode)
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
