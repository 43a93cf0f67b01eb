package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
)

// Client speaks to a daemon's admin API.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client for the admin API at addr (host:port or a URL).
func NewClient(addr string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{base: strings.TrimSuffix(addr, "/"), http: &http.Client{}}
}

// CallError is a call that the daemon answered with an error document.
type CallError struct {
	HTTPStatus int
	Doc        calls.ErrorDoc
}

func (e *CallError) Error() string {
	return fmt.Sprintf("task %s: %s: %s", e.Doc.Task, e.Doc.Error.Code, e.Doc.Error.Message)
}

// Call runs task with input and returns its output. timeout 0 leaves the
// task's own limit in charge.
func (c *Client) Call(ctx context.Context, task string, input []byte, timeout time.Duration) ([]byte, error) {
	u := c.base + "/v1/tasks/" + url.PathEscape(task) + "/call"
	if timeout > 0 {
		u += "?timeout=" + url.QueryEscape(timeout.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(input))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	body, code, err := c.do(req)
	if err != nil {
		return nil, err
	}
	if code == http.StatusOK {
		return body, nil
	}
	e := &CallError{HTTPStatus: code}
	if json.Unmarshal(body, &e.Doc) != nil || e.Doc.Error.Code == "" {
		return nil, fmt.Errorf("call %s: unexpected answer %d: %s", task, code, bytes.TrimSpace(body))
	}
	if e.Doc.Task == "" {
		e.Doc.Task = task
	}
	return nil, e
}

// CallAsync journals a call of task with input on the daemon and returns
// its id once it is on disk; the result is read with GetCall.
func (c *Client) CallAsync(ctx context.Context, task string, input []byte) (string, error) {
	u := c.base + "/v1/tasks/" + url.PathEscape(task) + "/call?async=true"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(input))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	body, code, err := c.do(req)
	if err != nil {
		return "", err
	}
	if code == http.StatusAccepted {
		var a AsyncAccepted
		if err := json.Unmarshal(body, &a); err != nil || a.CallID == "" {
			return "", fmt.Errorf("call %s: bad answer: %s", task, bytes.TrimSpace(body))
		}
		return a.CallID, nil
	}
	e := &CallError{HTTPStatus: code}
	if json.Unmarshal(body, &e.Doc) != nil || e.Doc.Error.Code == "" {
		return "", fmt.Errorf("call %s: unexpected answer %d: %s", task, code, bytes.TrimSpace(body))
	}
	if e.Doc.Task == "" {
		e.Doc.Task = task
	}
	return "", e
}

// GetCall returns the journal record of a call (GET /v1/calls/{id}).
func (c *Client) GetCall(ctx context.Context, id string) (*calls.Record, error) {
	var r calls.Record
	if err := c.Get(ctx, "/v1/calls/"+url.PathEscape(id), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Health returns the daemon's health; a daemon that is not ok still answers.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	return h, c.getJSON(ctx, "/v1/health", &h, http.StatusOK, http.StatusServiceUnavailable)
}

// Tasks lists the daemon's tasks.
func (c *Client) Tasks(ctx context.Context) ([]Task, error) {
	var ts []Task
	return ts, c.getJSON(ctx, "/v1/tasks", &ts, http.StatusOK)
}

// Get fetches path (with its query) and decodes the JSON answer into v. An
// error answer ({"error": "…"}) is returned as an error carrying its message.
func (c *Client) Get(ctx context.Context, path string, v any) error {
	return c.getJSON(ctx, path, v, http.StatusOK)
}

// Post sends an empty POST to path and decodes the JSON answer into v, as
// Get does.
func (c *Client) Post(ctx context.Context, path string, v any) error {
	return c.requestJSON(ctx, http.MethodPost, path, v, http.StatusOK)
}

func (c *Client) getJSON(ctx context.Context, path string, v any, okCodes ...int) error {
	return c.requestJSON(ctx, http.MethodGet, path, v, okCodes...)
}

func (c *Client) requestJSON(ctx context.Context, method, path string, v any, okCodes ...int) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return err
	}
	body, code, err := c.do(req)
	if err != nil {
		return err
	}
	for _, ok := range okCodes {
		if code == ok {
			if err := json.Unmarshal(body, v); err != nil {
				return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
			}
			return nil
		}
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return fmt.Errorf("%s (HTTP %d)", e.Error, code)
	}
	return fmt.Errorf("%s %s: %d: %s", method, path, code, bytes.TrimSpace(body))
}

func (c *Client) do(req *http.Request) ([]byte, int, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot reach the outpost daemon at %s (is `outpost run` running? set --admin): %w", c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, fmt.Errorf("read answer from %s: %w", c.base, err)
	}
	return body, resp.StatusCode, nil
}
