// Package admin owns the daemon's local HTTP API: health, tasks, synchronous
// calls and Prometheus metrics, and the Go client the CLI uses to speak to
// it. It listens on loopback by default, asks for the bearer token kept in
// the data dir on every request but health and metrics from loopback,
// serves beyond loopback only with TLS, and knows the rest of the daemon
// only through the Node interface.
package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/loopback"
	"github.com/outpost-edge/outpost/internal/ratelog"
)

// MaxInput bounds the body of a call request, whatever the task's
// max_input.
const MaxInput = 32 << 20

// InputLimiter is an optional interface of a Node: MaxInput is the
// largest input task takes (false: no such task). A call whose body is
// larger is refused with 413 before it is read (by its Content-Length) or
// as soon as it passes the limit.
type InputLimiter interface {
	MaxInput(task string) (int64, bool)
}

// Node is what the admin API serves.
type Node interface {
	Health() Health
	Tasks() []Task
	// Call runs a task synchronously.
	Call(ctx context.Context, c *calls.Call) (calls.Result, error)
}

// AsyncNode is a Node that takes asynchronous calls: CallAsync journals
// the call (on disk when it returns) and queues it; its state and result
// are read with GET /v1/calls/{id}, which the node mounts.
type AsyncNode interface {
	CallAsync(c *calls.Call) error
}

// AsyncAccepted is the body of a 202 answer to an asynchronous call.
type AsyncAccepted struct {
	CallID string `json:"call_id"`
	Task   string `json:"task"`
	State  string `json:"state"`
}

// Health is the body of GET /v1/health.
type Health struct {
	Status    string         `json:"status"` // ok, degraded, draining
	Node      string         `json:"node"`
	Version   string         `json:"version"`
	Uptime    float64        `json:"uptime_seconds"`
	MQTT      MQTTHealth     `json:"mqtt"`
	Cloud     *CloudHealth   `json:"cloud,omitempty"` // nil without a cloud link
	Scheduler SchedulerStats `json:"scheduler"`
	Tasks     int            `json:"tasks"`
	Problems  []string       `json:"problems,omitempty"`
}

// MQTTHealth describes the broker connection.
type MQTTHealth struct {
	Broker    string `json:"broker"` // embedded or external
	Addr      string `json:"addr"`
	Connected bool   `json:"connected"`
}

// CloudHealth describes the link to the cloud control plane.
type CloudHealth struct {
	URL   string `json:"url"`
	State string `json:"state"` // connecting, up, backoff, conflict, forbidden, tls_error, stopped
}

// SchedulerStats is the scheduler's load.
type SchedulerStats struct {
	Queued   int  `json:"queued"`
	Running  int  `json:"running"`
	Workers  int  `json:"workers"`
	Draining bool `json:"draining"`
}

// Task is one entry of GET /v1/tasks.
type Task struct {
	Name        string  `json:"name"`
	ABI         string  `json:"abi"`
	Module      string  `json:"module"`
	Digest      string  `json:"digest"`
	Size        int     `json:"size"`
	MemoryLimit uint64  `json:"memory_limit"`
	Timeout     float64 `json:"timeout_seconds"`
	Concurrency int     `json:"concurrency"`
}

// Options configure a Server.
type Options struct {
	// Listen is the address (host:port) to serve on.
	Listen string
	// TokenFile holds the bearer token every protected request must carry.
	TokenFile string
	// CreateToken: a missing TokenFile is created with a new random token
	// (mode 0600); otherwise it must exist (a token the operator provisioned).
	CreateToken bool
	// TLSCertFile and TLSKeyFile make the server speak HTTPS; required to
	// listen beyond loopback. TLSClientCAFile also requires every client to
	// present a certificate it signed (mTLS).
	TLSCertFile, TLSKeyFile, TLSClientCAFile string
}

// Server is the admin HTTP server.
type Server struct {
	opts   Options
	node   Node
	log    *slog.Logger
	mux    *http.ServeMux
	srv    *http.Server
	ln     net.Listener
	served chan error

	creds        atomic.Pointer[credentials] // set by Start, swapped by ReloadCredentials
	authFailures *prometheus.CounterVec
	refusedLog   *ratelog.Limiter
	streams      streams // long responses Stop cuts (backup.go)
	sessions     sessionStore
	// publicPrefixes are the paths served without a credential
	// (HandlePublic), set before Start.
	publicPrefixes []string
}

// NewServer returns a server for node, exposing gatherer at /metrics and
// registering its own metrics with reg.
func NewServer(opts Options, node Node, reg prometheus.Registerer, gatherer prometheus.Gatherer, log *slog.Logger) *Server {
	s := &Server{opts: opts, node: node, log: log, mux: http.NewServeMux(), refusedLog: &ratelog.Limiter{Every: logEvery}}
	s.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outpost_admin_auth_failures_total",
		Help: "Admin API requests refused for a missing (reason=missing) or wrong (reason=invalid) bearer token.",
	}, []string{"reason"})
	for _, r := range []string{reasonMissing, reasonInvalid, reasonSession, reasonCSRF} {
		s.authFailures.WithLabelValues(r)
	}
	reg.MustRegister(s.authFailures, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_admin_sessions", Help: "Browser sessions of the web console kept (logged in, not expired).",
	}, func() float64 { return float64(s.sessions.count()) }))
	s.mux.HandleFunc("POST "+sessionPath, s.login)
	s.mux.HandleFunc("GET "+sessionPath, s.sessionInfo)
	s.mux.HandleFunc("DELETE "+sessionPath, s.logout)
	s.mux.HandleFunc("GET /v1/health", s.health)
	s.mux.HandleFunc("GET /v1/tasks", s.tasks)
	s.mux.HandleFunc("POST /v1/tasks/{name}/call", s.call)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	s.srv = &http.Server{Handler: s.authorize(s.mux), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return s
}

// Handle mounts another subsystem's handler (for example telemetry) on the server.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandlePublic mounts h on every path under prefix ("/ui/") and serves it
// without a credential: for what holds no data, such as the console's
// assets. Call it before Start.
func (s *Server) HandlePublic(prefix string, h http.Handler) {
	s.publicPrefixes = append(s.publicPrefixes, prefix)
	s.mux.Handle("GET "+prefix, h)
}

// Streaming registers a long response (a backup, an event stream): Stop
// fails its writes first, so that it holds neither the stop nor the stores
// behind it. It returns false once Stop has begun; done unregisters it.
func (s *Server) Streaming(w http.ResponseWriter) (done func(), ok bool) {
	rc := http.NewResponseController(w)
	if !s.streams.add(rc) {
		return nil, false
	}
	return func() { s.streams.remove(rc) }, true
}

// Start reads (or first creates) the token, loads the TLS material,
// listens and serves in the background. It refuses to serve without TLS on
// an address beyond loopback.
func (s *Server) Start(ctx context.Context) error {
	creds, err := s.opts.loadCredentials()
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	s.creds.Store(creds)
	tcfg := creds.tls
	if tcfg == nil && !loopback.HostPort(s.opts.Listen) {
		return fmt.Errorf("admin API: listen on %s: %w", s.opts.Listen, ErrPlainBeyondLoopback)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("admin API: listen on %s: %w", s.opts.Listen, err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); tcfg == nil && (!ok || !tcp.IP.IsLoopback()) { // localhost resolved elsewhere
		_ = ln.Close()
		return fmt.Errorf("admin API: listen on %s: %w", ln.Addr(), ErrPlainBeyondLoopback)
	}
	if tcfg != nil {
		// Each handshake takes the credentials of the moment, so a reload
		// applies to the next connection.
		ln = tls.NewListener(ln, &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.creds.Load().tls, nil
		}})
	}
	s.ln = ln
	s.served = make(chan error, 1)
	go func() { s.served <- s.srv.Serve(ln) }()
	s.log.Info("admin API listening", "addr", ln.Addr().String(), "tls", tcfg != nil, "mtls", s.opts.TLSClientCAFile != "", "token_file", s.opts.TokenFile)
	return nil
}

// Addr is the address the server listens on, after Start.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop waits for requests in flight until ctx ends, then closes.
func (s *Server) Stop(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	s.streams.cut()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	if serr := <-s.served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	h := s.node.Health()
	code := http.StatusOK
	if h.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func (s *Server) tasks(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.node.Tasks())
}

// call runs a task with the request body as input. The output is the
// response body; a failure is an error document with a status that says
// whose fault it was.
func (s *Server) call(w http.ResponseWriter, r *http.Request) {
	task := r.PathValue("name")
	ctx := r.Context()
	var timeout time.Duration
	if t := r.URL.Query().Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		timeout = d
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, calls.ErrorDoc{Task: task, Error: calls.ErrorBody{Code: "bad_request", Message: fmt.Sprintf("timeout %q is not a positive duration", t)}})
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	async := false
	if a := r.URL.Query().Get("async"); a != "" {
		var err error
		if async, err = strconv.ParseBool(a); err != nil {
			writeError(w, http.StatusBadRequest, calls.ErrorDoc{Task: task, Error: calls.ErrorBody{Code: "bad_request", Message: fmt.Sprintf("async %q is not a boolean", a)}})
			return
		}
	}
	labels, err := confval.ParseLabels(r.URL.Query()["label"])
	if err != nil {
		writeError(w, http.StatusBadRequest, calls.ErrorDoc{Task: task, Error: calls.ErrorBody{Code: "bad_request", Message: err.Error()}})
		return
	}
	input, ok := s.readInput(w, r, task)
	if !ok {
		return
	}
	c := calls.New(task, input, calls.Source{Kind: "admin", Ref: r.RemoteAddr})
	c.Labels = labels
	if async {
		if timeout > 0 {
			// The whole call's deadline, journaled: queueing, every run
			// and every suspended step of it.
			c.Deadline = time.Now().Add(timeout)
		}
		s.callAsync(w, c)
		return
	}
	res, err := s.node.Call(ctx, c)
	if err != nil {
		code, status := http.StatusServiceUnavailable, calls.StatusRejected
		switch {
		case errors.Is(err, calls.ErrUnknownTask):
			code, status = http.StatusNotFound, calls.StatusUnknown
		case errors.Is(err, calls.ErrQueueFull):
			w.Header().Set("Retry-After", "1")
		case errors.Is(err, context.DeadlineExceeded):
			code, status = http.StatusGatewayTimeout, calls.StatusTimeout
		}
		writeError(w, code, calls.ErrorDoc{Task: task, CallID: c.ID, Error: calls.ErrorBody{Code: status, Message: err.Error()}})
		return
	}
	w.Header().Set(HeaderCallID, c.ID)
	w.Header().Set("X-Outpost-Duration", strconv.FormatFloat(c.Finished.Sub(c.Started).Seconds(), 'f', 6, 64))
	if res.Env != "" {
		w.Header().Set(HeaderEnv, res.Env)
		w.Header().Set(HeaderRule, res.Rule)
	}
	if res.OK() {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(res.Output)
		return
	}
	writeError(w, statusCode(res.Status), c.ErrorDoc())
}

// Headers of a synchronous call's answer: its id, the execution
// environment it ran in and the placement rule that chose it.
const (
	HeaderCallID = "X-Outpost-Call-Id"
	HeaderEnv    = "X-Outpost-Environment"
	HeaderRule   = "X-Outpost-Placement-Rule"
)

// readInput reads the body of a call of task, at most the task's
// max_input (InputLimiter) and MaxInput, into one buffer sized by the
// Content-Length; it answers the error itself and returns false.
func (s *Server) readInput(w http.ResponseWriter, r *http.Request, task string) ([]byte, bool) {
	limit, what := int64(MaxInput), "the admin API's limit"
	if l, ok := s.node.(InputLimiter); ok {
		if n, ok := l.MaxInput(task); ok && n < limit {
			limit, what = n, "the task's limits.max_input"
		}
	}
	tooLarge := func(msg string) ([]byte, bool) {
		writeError(w, http.StatusRequestEntityTooLarge, calls.ErrorDoc{Task: task, Error: calls.ErrorBody{Code: calls.StatusTooLarge, Message: msg}})
		return nil, false
	}
	if r.ContentLength > limit {
		return tooLarge(fmt.Sprintf("input of %d bytes exceeds %s of %d bytes", r.ContentLength, what, limit))
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return tooLarge(fmt.Sprintf("input larger than %s of %d bytes", what, limit))
		}
		writeError(w, http.StatusBadRequest, calls.ErrorDoc{Task: task, Error: calls.ErrorBody{Code: "bad_request", Message: fmt.Sprintf("read input: %v", err)}})
		return nil, false
	}
	return buf.Bytes(), true
}

// callAsync journals c and answers 202 with its id once it is on disk.
func (s *Server) callAsync(w http.ResponseWriter, c *calls.Call) {
	an, ok := s.node.(AsyncNode)
	if !ok {
		writeError(w, http.StatusNotImplemented, calls.ErrorDoc{Task: c.Task, Error: calls.ErrorBody{Code: "bad_request", Message: "this daemon takes no asynchronous calls"}})
		return
	}
	if err := an.CallAsync(c); err != nil {
		code, status := http.StatusServiceUnavailable, calls.StatusRejected
		switch {
		case errors.Is(err, calls.ErrUnknownTask):
			code, status = http.StatusNotFound, calls.StatusUnknown
		case errors.Is(err, calls.ErrQueueFull):
			w.Header().Set("Retry-After", "1")
		case errors.Is(err, calls.ErrDraining):
		default:
			code = http.StatusInternalServerError // the journal could not write it
		}
		writeError(w, code, calls.ErrorDoc{Task: c.Task, CallID: c.ID, Error: calls.ErrorBody{Code: status, Message: err.Error()}})
		return
	}
	w.Header().Set(HeaderCallID, c.ID)
	w.Header().Set("Location", "/v1/calls/"+c.ID)
	writeJSON(w, http.StatusAccepted, AsyncAccepted{CallID: c.ID, Task: c.Task, State: calls.Received.String()})
}

// statusCode maps how a call ended to an HTTP status.
func statusCode(st calls.Status) int {
	switch st {
	case calls.StatusTimeout:
		return http.StatusGatewayTimeout
	case calls.StatusUnknown:
		return http.StatusNotFound
	case calls.StatusRejected, calls.StatusCanceled:
		return http.StatusServiceUnavailable
	case calls.StatusTooLarge:
		return http.StatusRequestEntityTooLarge
	default: // the task ran and failed: trap, memory, failed, invalid
		return http.StatusUnprocessableEntity
	}
}

func writeError(w http.ResponseWriter, code int, doc calls.ErrorDoc) { writeJSON(w, code, doc) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
