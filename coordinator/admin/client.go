package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/internal/loopback"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

// ErrUnauthorized: the daemon refused a request for want of its admin token.
var ErrUnauthorized = errors.New("unauthorized")

// Client speaks to a daemon's admin API.
type Client struct {
	base string
	http *http.Client
	// token is sent as a bearer token; from says where it was found. When
	// there is none, noToken says why.
	token, from string
	noToken     error
}

// NewClient returns a client for the admin API at addr (host:port or a
// URL) that carries no token: enough for health and metrics on loopback.
func NewClient(addr string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{base: strings.TrimSuffix(addr, "/"), http: &http.Client{}, noToken: errors.New("no token given")}
}

// ClientOptions locate a daemon's admin API and its token.
type ClientOptions struct {
	// Addr is host:port or a URL (https://host:port for a TLS listener).
	Addr string
	// TokenFile is a token file named explicitly (a flag); it wins over
	// $OUTPOST_TOKEN, which wins over DaemonTokenFile.
	TokenFile string
	// DaemonTokenFile is the file the daemon keeps its token in, as its
	// config says (admin.token_file, else admin.token in the data dir). It
	// is read if it can be: a user who is not the daemon's usually cannot.
	DaemonTokenFile string
	// CAFile verifies an HTTPS server (default: the system roots);
	// CertFile and KeyFile are a client certificate for mTLS.
	CAFile, CertFile, KeyFile string
}

// Dial returns a client for the daemon o locates, with the first token it
// finds. A TokenFile that cannot be read is an error; a DaemonTokenFile
// that cannot be read is said when the daemon asks for a token. The token
// is only sent over HTTPS or to a loopback address.
func Dial(o ClientOptions) (*Client, error) {
	c := NewClient(o.Addr)
	if strings.HasPrefix(c.base, "https://") {
		tr, err := o.transport()
		if err != nil {
			return nil, err
		}
		c.http.Transport = tr
	}
	switch env := strings.TrimSpace(os.Getenv(TokenEnv)); {
	case o.TokenFile != "":
		tok, err := ReadToken(o.TokenFile)
		if err != nil {
			return nil, err
		}
		c.token, c.from = string(tok), o.TokenFile
	case env != "":
		c.token, c.from = env, "$"+TokenEnv
	case o.DaemonTokenFile != "":
		tok, err := ReadToken(o.DaemonTokenFile)
		if err != nil {
			c.noToken = err
			break
		}
		c.token, c.from = string(tok), o.DaemonTokenFile
	}
	if c.token != "" && !c.private() {
		c.token, c.noToken = "", fmt.Errorf("the token from %s is only sent over https or to a loopback address, not to %s", c.from, c.base)
	}
	return c, nil
}

// private reports whether a token may travel to the server: over TLS, or
// to a loopback address.
func (c *Client) private() bool {
	u, err := url.Parse(c.base)
	return err == nil && (u.Scheme == "https" || loopback.Host(u.Hostname()))
}

func (o ClientOptions) transport() (*http.Transport, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pool, err := secretfile.CertPool(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("admin tls: %w", err)
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" {
		crt, err := secretfile.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("admin tls: %w", err)
		}
		cfg.Certificates = []tls.Certificate{crt}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return tr, nil
}

// CallError is a call that the daemon answered with an error document.
type CallError struct {
	HTTPStatus int
	Doc        calls.ErrorDoc
}

func (e *CallError) Error() string {
	return fmt.Sprintf("task %s: %s: %s", e.Doc.Task, e.Doc.Error.Code, e.Doc.Error.Message)
}

// CallOptions are a call's settings besides its task and input.
type CallOptions struct {
	// Timeout is the call's deadline (0: the task's own limit); of an
	// asynchronous call, the deadline of the whole call, suspended steps
	// included.
	Timeout time.Duration
	// Labels are the call's labels (placement rules see them as
	// call.labels).
	Labels map[string]string
}

// callURL is the URL of a call of task with o (asynchronous with async).
func (c *Client) callURL(task string, async bool, o CallOptions) string {
	v := url.Values{}
	if async {
		v.Set("async", "true")
	}
	if o.Timeout > 0 {
		v.Set("timeout", o.Timeout.String())
	}
	for _, k := range slices.Sorted(maps.Keys(o.Labels)) {
		v.Add("label", k+"="+o.Labels[k])
	}
	u := c.base + "/v1/tasks/" + url.PathEscape(task) + "/call"
	if len(v) > 0 {
		u += "?" + v.Encode()
	}
	return u
}

// Call runs task with input and returns its output.
func (c *Client) Call(ctx context.Context, task string, input []byte, o CallOptions) (Answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.callURL(task, false, o), bytes.NewReader(input))
	if err != nil {
		return Answer{}, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	body, h, code, err := c.doHeader(req)
	if err != nil {
		return Answer{}, err
	}
	if code == http.StatusOK {
		return Answer{Output: body, CallID: h.Get(HeaderCallID), Env: h.Get(HeaderEnv), Rule: h.Get(HeaderRule)}, nil
	}
	e := &CallError{HTTPStatus: code}
	if json.Unmarshal(body, &e.Doc) != nil || e.Doc.Error.Code == "" {
		return Answer{}, fmt.Errorf("call %s: unexpected answer %d: %s", task, code, bytes.TrimSpace(body))
	}
	if e.Doc.Task == "" {
		e.Doc.Task = task
	}
	return Answer{}, e
}

// Answer is a synchronous call's output, its id, and where it ran: the
// execution environment and the placement rule that chose it.
type Answer struct {
	Output            []byte
	CallID, Env, Rule string
}

// CallAsync journals a call of task with input on the daemon and returns
// its id once it is on disk; the result is read with GetCall.
func (c *Client) CallAsync(ctx context.Context, task string, input []byte, o CallOptions) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.callURL(task, true, o), bytes.NewReader(input))
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

// CallsQuery selects journaled calls: at most Limit (0: all), and, where
// set, only those in State (received, started, suspended, finished, reported), of Task,
// from a source of kind Source (mqtt, admin, cloud, task, telemetry, peer)
// and with every one of Labels.
type CallsQuery struct {
	Limit               int
	State, Task, Source string
	Labels              map[string]string
}

// Calls lists the journal's calls that q selects (GET /v1/calls).
func (c *Client) Calls(ctx context.Context, q CallsQuery) ([]calls.Record, error) {
	v := url.Values{"limit": {strconv.Itoa(q.Limit)}}
	for k, val := range map[string]string{"state": q.State, "task": q.Task, "source": q.Source} {
		if val != "" {
			v.Set(k, val)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(q.Labels)) {
		v.Add("label", k+"="+q.Labels[k])
	}
	var resp struct {
		Calls []calls.Record `json:"calls"`
	}
	if err := c.Get(ctx, "/v1/calls?"+v.Encode(), &resp); err != nil {
		return nil, err
	}
	return resp.Calls, nil
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
	body, _, code, err := c.doHeader(req)
	return body, code, err
}

// doHeader is do that also returns the answer's header.
func (c *Client) doHeader(req *http.Request) ([]byte, http.Header, int, error) {
	resp, err := c.send(req)
	if err != nil {
		return nil, nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read answer from %s: %w", c.base, err)
	}
	return body, resp.Header, resp.StatusCode, nil
}

// unauthorized says why the daemon refused req and what to do about it.
func (c *Client) unauthorized(req *http.Request) error {
	what := req.Method + " " + req.URL.Path
	if c.token == "" {
		return fmt.Errorf("%s: %w: the daemon wants its admin token and none was found (%v): run as the daemon's user (who can read %s in its data dir), give --config of the daemon, or set %s or --token-file", what, ErrUnauthorized, c.noToken, TokenFileName, TokenEnv)
	}
	return fmt.Errorf("%s: %w: the daemon refused the token from %s (another daemon's or an old token?)", what, ErrUnauthorized, c.from)
}

// send sends req with the token; a daemon that cannot be reached, or that
// refuses the token, gets an error that says what to do.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the outpost daemon at %s (is `outpost run` running? give its admin.listen with --admin or $OUTPOST_ADMIN): %w", c.base, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		return nil, c.unauthorized(req)
	}
	return resp, nil
}
