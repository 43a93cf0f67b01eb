package admin

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
)

// asyncNode is a node that takes asynchronous calls and keeps them.
type asyncNode struct {
	node
	mu   sync.Mutex
	took []*calls.Call
}

var _ AsyncNode = (*asyncNode)(nil)

func (n *asyncNode) CallAsync(c *calls.Call) error {
	switch c.Task {
	case "echo":
		n.mu.Lock()
		n.took = append(n.took, c)
		n.mu.Unlock()
		return nil
	case "busy":
		return calls.ErrQueueFull
	case "full-disk":
		return errors.New("journal calls: no space left on device")
	}
	return calls.ErrUnknownTask
}

func TestAsyncCall(t *testing.T) {
	n := &asyncNode{}
	c := start(t, n)
	id, err := c.CallAsync(context.Background(), "echo", []byte("in"), CallOptions{})
	if err != nil || len(id) != 20 {
		t.Fatalf("CallAsync: %q %v", id, err)
	}
	if len(n.took) != 1 || n.took[0].ID != id || string(n.took[0].Input) != "in" || n.took[0].Source.Kind != "admin" {
		t.Fatalf("node took %+v", n.took)
	}
	for _, tc := range []struct {
		name, task string
		http       int
		code       calls.Status
	}{
		{"unknown task", "nope", http.StatusNotFound, calls.StatusUnknown},
		{"queue full", "busy", http.StatusServiceUnavailable, calls.StatusRejected},
		{"journal failed", "full-disk", http.StatusInternalServerError, calls.StatusRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CallAsync(context.Background(), tc.task, nil, CallOptions{})
			var ce *CallError
			if !errors.As(err, &ce) || ce.HTTPStatus != tc.http || ce.Doc.Error.Code != tc.code {
				t.Fatalf("got %v, want HTTP %d %s", err, tc.http, tc.code)
			}
		})
	}
	t.Run("timeout is the whole call's deadline", func(t *testing.T) {
		before := time.Now()
		if _, err := c.CallAsync(context.Background(), "echo", nil, CallOptions{Timeout: time.Minute}); err != nil {
			t.Fatal(err)
		}
		got := n.took[len(n.took)-1].Deadline
		if got.Before(before.Add(time.Minute)) || got.After(time.Now().Add(time.Minute)) {
			t.Fatalf("deadline %v, want a minute from the request", got)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, q := range []string{"async=maybe", "async=true&timeout=-1s"} {
			if code, b := send(t, c, http.MethodPost, "/v1/tasks/echo/call?"+q); code != http.StatusBadRequest {
				t.Errorf("%s: %d %s", q, code, b)
			}
		}
	})
}

// A node without asynchronous calls says so; the sync path is unchanged.
func TestAsyncCallNotSupported(t *testing.T) {
	c := start(t, &node{})
	_, err := c.CallAsync(context.Background(), "echo", nil, CallOptions{})
	var ce *CallError
	if !errors.As(err, &ce) || ce.HTTPStatus != http.StatusNotImplemented {
		t.Fatalf("got %v, want 501", err)
	}
	if out, err := c.Call(context.Background(), "echo", []byte("x"), CallOptions{}); err != nil || string(out.Output) != "x" {
		t.Fatalf("sync call: %q %v", out, err)
	}
}
