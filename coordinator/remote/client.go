package remote

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/xid"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

// SourceKind is the Source.Kind of calls from the cloud.
const SourceKind = "cloud"

// Node is what the link needs from the daemon: the journaled calls
// (calls.Durable and its journal provide it).
type Node interface {
	Accept(cs []*calls.Call) ([]calls.Outcome, error)
	Unfinished(kind string) []string
	Cancel(id string) bool
	QueueRoom() int
	Outbox(kind string, max int) ([]*calls.Record, int, int64)
	MarkReported(ids ...string) error
	// Flush returns once every journal write so far is on disk; called
	// before results leave the node.
	Flush() error
}

// Config configures a Client.
type Config struct {
	URL            string // base URL of the control plane
	NodeID         string
	TokenFile      string      // bearer token file; "" with mTLS or none
	TLS            *tls.Config // nil: system roots
	PollWait       time.Duration
	BackoffBase    time.Duration
	BackoffMax     time.Duration
	BatchSize      int
	MaxInflight    int   // cloud calls held at once (capacity ceiling)
	OutboxMaxBytes int64 // over it the node advertises capacity 0
	Queues         []string
	// QueueWeights and AgingAfter are the node's scheduler queues, sent
	// in every poll so the server hands calls out in the same order.
	QueueWeights map[string]int
	AgingAfter   time.Duration
	// ReadTimeout bounds one whole request, response body included (a
	// slow-drip answer ends there); 0: PollWait + 10s.
	ReadTimeout time.Duration
	// DialContext, when set, opens the link's TCP connections in place of
	// the default dialer (name resolution included). It is a seam for
	// tests (a resolver that fails, a loopback stand-in for the control
	// plane) and for deployments that dial through their own proxy.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Link states, the values of outpost_cloud_link_state's state label.
const (
	StateConnecting = "connecting"
	StateUp         = "up"
	StateBackoff    = "backoff"
	StateConflict   = "conflict"  // another poller serves this node id
	StateForbidden  = "forbidden" // 403: polling stopped
	StateTLSError   = "tls_error" // the server's certificate was refused; backing off
	StateStopped    = "stopped"
)

// Client is the node side of the cloud link: a long-poll loop and an
// independent results uploader.
type Client struct {
	cfg  Config
	node Node
	log  *slog.Logger
	hc   *http.Client
	m    *metrics
	boot string
	// stats is the link's measured rate and round trip (provision.go).
	stats LinkMeter
	// runs is the control plane's cloud-run pool its last poll answer
	// advertised (runs.go).
	runs runsSeen

	token   atomic.Pointer[string]
	state   atomic.Pointer[string]
	notify  chan struct{}
	stop    chan struct{}
	stopped sync.WaitGroup
	once    sync.Once

	spool   *Spool        // device messages for the cloud (SetSpool); nil: none
	msgWake chan struct{} // a message was spooled

	mu     sync.Mutex
	leases map[string]time.Duration // held calls → lease length
}

// New returns a client; Start begins polling.
func New(cfg Config, node Node, log *slog.Logger, reg prometheus.Registerer) *Client {
	if cfg.PollWait <= 0 {
		cfg.PollWait = 25 * time.Second
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Minute
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = cfg.PollWait + 10*time.Second
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 256
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment, TLSClientConfig: cfg.TLS, ForceAttemptHTTP2: true,
		MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second,
		ResponseHeaderTimeout: cfg.ReadTimeout,
	}
	if cfg.DialContext != nil {
		tr.DialContext = cfg.DialContext
	}
	c := &Client{
		cfg: cfg, node: node, log: log, m: newMetrics(reg),
		hc:     &http.Client{Transport: tr, Timeout: cfg.ReadTimeout},
		boot:   xid.New().String(),
		notify: make(chan struct{}, 1), stop: make(chan struct{}), msgWake: make(chan struct{}, 1),
		leases: map[string]time.Duration{},
	}
	c.setState(StateConnecting)
	return c
}

// SetNode sets the node when it is built after the client (the node's
// finish callback notifies the client). Call before Start.
func (c *Client) SetNode(n Node) { c.node = n }

// Start loads the token and starts the poll and upload loops.
func (c *Client) Start(context.Context) error {
	if err := c.loadToken(); err != nil {
		return err
	}
	c.stopped.Add(2)
	go c.pollLoop()
	go c.uploadLoop()
	if c.spool != nil {
		c.stopped.Add(1)
		go c.messageLoop()
	}
	c.log.Info("cloud link started", "url", c.cfg.URL, "node", c.cfg.NodeID, "boot", c.boot)
	return nil
}

// StopPolling stops taking calls (the poll loop); uploads go on until Stop.
func (c *Client) StopPolling() {
	c.once.Do(func() { close(c.stop) })
}

// Stop stops both loops; it flushes results finished so far first, for as
// long as ctx allows.
func (c *Client) Stop(ctx context.Context) error {
	c.StopPolling()
	done := make(chan struct{})
	go func() { c.stopped.Wait(); close(done) }()
	select {
	case <-done:
		c.setState(StateStopped)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop cloud link: %w", ctx.Err())
	}
}

// Notify tells the uploader that a result is ready. It never blocks.
func (c *Client) Notify() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// State is the link's state for health.
func (c *Client) State() string { return *c.state.Load() }

// BootID identifies this process to the control plane.
func (c *Client) BootID() string { return c.boot }

func (c *Client) setState(s string) {
	c.state.Store(&s)
	for _, st := range []string{StateConnecting, StateUp, StateBackoff, StateConflict, StateForbidden, StateTLSError, StateStopped} {
		v := 0.0
		if st == s {
			v = 1
		}
		c.m.state.WithLabelValues(st).Set(v)
	}
}

func (c *Client) loadToken() error {
	if c.cfg.TokenFile == "" {
		return nil
	}
	b, err := secretfile.Read(c.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("read cloud token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return fmt.Errorf("read cloud token: %s is empty", c.cfg.TokenFile)
	}
	c.token.Store(&tok)
	return nil
}

// response is what one request came back with.
type response struct {
	status int
	body   []byte
	header http.Header
}

func (c *Client) endpoint(parts ...string) string {
	p := []string{"edge", "v1", "nodes", url.PathEscape(c.cfg.NodeID)}
	for _, s := range parts {
		p = append(p, url.PathEscape(s))
	}
	return strings.TrimRight(c.cfg.URL, "/") + "/" + strings.Join(p, "/")
}

func (c *Client) do(ctx context.Context, method, u string, body any) (response, error) {
	var rd io.Reader
	gz := false
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, fmt.Errorf("encode request: %w", err)
		}
		if len(b) > 1024 {
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			_, _ = w.Write(b)
			_ = w.Close()
			b, gz = buf.Bytes(), true
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return response{}, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set(HeaderProtocol, Protocol)
	req.Header.Set("Content-Type", "application/json")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	if t := c.token.Load(); t != nil {
		req.Header.Set("Authorization", "Bearer "+*t)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := readResponse(resp)
	if err != nil {
		return response{}, fmt.Errorf("read %s response: %w", method, err)
	}
	return response{status: resp.StatusCode, body: b, header: resp.Header}, nil
}

// readResponse reads a response body of at most MaxResponseBody bytes
// (after decompression): into one buffer sized by the Content-Length, or
// one that doubles but never past the limit; a larger body is an error
// wrapping ErrProtocol, read no further.
func readResponse(resp *http.Response) ([]byte, error) {
	tooLarge := fmt.Errorf("%w: body larger than %d bytes", ErrProtocol, MaxResponseBody)
	if resp.ContentLength > MaxResponseBody {
		return nil, tooLarge
	}
	size := 4096
	if resp.ContentLength >= 0 {
		size = int(resp.ContentLength) + 1 // room to read the EOF
	}
	b := make([]byte, 0, size)
	for {
		if len(b) == cap(b) {
			if len(b) > MaxResponseBody {
				return nil, tooLarge
			}
			nb := make([]byte, len(b), min(2*cap(b), MaxResponseBody+1))
			copy(nb, b)
			b = nb
		}
		n, err := resp.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		switch {
		case len(b) > MaxResponseBody:
			return nil, tooLarge
		case err == io.EOF:
			return b, nil
		case err != nil:
			return nil, err
		}
	}
}

// backoff is exponential backoff with full jitter: the n-th wait is
// uniform in [0, min(max, base·2^n)).
type backoff struct {
	base, max time.Duration
	n         int
}

func (b *backoff) next() time.Duration {
	ceil := b.max
	if b.n < 30 {
		ceil = min(b.max, b.base<<b.n)
	}
	b.n++
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits d or until stop; it reports false on stop.
func (c *Client) sleep(d time.Duration, stop <-chan struct{}) bool {
	c.m.backoff.Set(d.Seconds())
	defer c.m.backoff.Set(0)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

// retryWait is how long to wait after a failed response: Retry-After
// when usable (and at least the backoff's draw), else the backoff.
func retryWait(r response, b *backoff) time.Duration {
	d := b.next()
	if r.header != nil {
		if ra, ok := ParseRetryAfter(r.header.Get("Retry-After"), r.header.Get("Date"), time.Now()); ok {
			d = max(d, ra)
		}
	}
	return d
}

func (c *Client) capacity() int {
	_, _, bytes := c.node.Outbox(SourceKind, 0)
	if c.cfg.OutboxMaxBytes > 0 && bytes >= c.cfg.OutboxMaxBytes {
		c.m.outboxFull.Set(1)
		return 0
	}
	c.m.outboxFull.Set(0)
	held := len(c.node.Unfinished(SourceKind))
	return max(0, min(c.cfg.MaxInflight-held, c.node.QueueRoom()))
}

func (c *Client) pollLoop() {
	defer c.stopped.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-c.stop; cancel() }()
	b := &backoff{base: c.cfg.BackoffBase, max: c.cfg.BackoffMax}
	var ackThrough uint64
	retried401, cutOnce := false, false
	for ctx.Err() == nil {
		renew := c.node.Unfinished(SourceKind)
		wait := c.cfg.PollWait
		c.mu.Lock()
		for _, id := range renew {
			if l, ok := c.leases[id]; ok {
				wait = min(wait, l/3)
			}
		}
		c.mu.Unlock()
		req := PollRequest{BootID: c.boot, AckThrough: ackThrough, Renew: renew, Capacity: c.capacity(), Queues: c.cfg.Queues,
			QueueWeights: c.cfg.QueueWeights, AgingMS: c.cfg.AgingAfter.Milliseconds(), WaitMS: wait.Milliseconds()}
		start := time.Now()
		r, err := c.do(ctx, http.MethodPost, c.endpoint("poll"), req)
		c.m.pollSeconds.Observe(time.Since(start).Seconds())
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// A proxy cutting an idle poll, or EOF: retried once at once.
			if !cutOnce && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
				cutOnce = true
				c.m.polls.WithLabelValues("cut").Inc()
				continue
			}
			d := b.next()
			var dnsErr *net.DNSError
			if problem := tlsProblem(err); problem != "" {
				// No insecure fallback: the request never left, back off.
				c.m.polls.WithLabelValues("tls_error").Inc()
				c.setState(StateTLSError)
				c.log.Error("cloud link: TLS handshake with the control plane failed: "+problem, "url", c.cfg.URL, "err", err, "retry_in", d)
			} else if errors.Is(err, ErrProtocol) {
				// Not read whole (over MaxResponseBody): not acknowledged, the
				// server redelivers.
				c.m.polls.WithLabelValues("bad_response").Inc()
				c.setState(StateBackoff)
				c.log.Error("bad poll response: not acknowledged, the server will redeliver", "err", err, "retry_in", d)
			} else if errors.As(err, &dnsErr) {
				// No request left: the control plane's host name did not resolve.
				c.m.polls.WithLabelValues("dns_error").Inc()
				c.setState(StateBackoff)
				c.log.Error("cloud link: cannot resolve the control plane's host name "+dnsErr.Name, "host", dnsErr.Name, "not_found", dnsErr.IsNotFound, "err", err, "retry_in", d)
			} else {
				c.m.polls.WithLabelValues("error").Inc()
				c.setState(StateBackoff)
				c.log.Warn("cloud poll failed", "err", err, "retry_in", d)
			}
			if !c.sleep(d, c.stop) {
				return
			}
			continue
		}
		cutOnce = false
		c.runs.note(r.header)
		switch r.status {
		case http.StatusOK:
			resp, err := ParsePollResponse(r.body)
			if err != nil {
				c.m.polls.WithLabelValues("bad_response").Inc()
				d := b.next()
				c.log.Error("bad poll response: not acknowledged, the server will redeliver", "err", err, "retry_in", d)
				if !c.sleep(d, c.stop) {
					return
				}
				continue
			}
			if seq, ok := c.take(resp, b); ok {
				ackThrough = max(ackThrough, seq)
			} else if !c.sleep(b.next(), c.stop) {
				return
			}
			c.m.polls.WithLabelValues("ok").Inc()
			c.setState(StateUp)
			retried401 = false
			if resp.NextPollMS > 0 && !c.sleep(time.Duration(resp.NextPollMS)*time.Millisecond, c.stop) {
				return
			}
		case http.StatusNoContent:
			c.m.polls.WithLabelValues("empty").Inc()
			c.setState(StateUp)
			b.reset()
			retried401 = false
		case http.StatusUnauthorized:
			c.m.polls.WithLabelValues("unauthorized").Inc()
			if err := c.loadToken(); err != nil {
				c.log.Error("cloud token reload failed", "err", err)
			}
			if !retried401 {
				retried401 = true
				continue
			}
			d := b.next()
			c.setState(StateBackoff)
			c.log.Error("cloud link: 401 unauthorized after a token reload", "retry_in", d)
			if !c.sleep(d, c.stop) {
				return
			}
		case http.StatusForbidden:
			c.m.polls.WithLabelValues("forbidden").Inc()
			c.setState(StateForbidden)
			c.log.Error("cloud link: 403 forbidden: polling stopped until restart or reload", "node", c.cfg.NodeID, "body", trim(r.body))
			return
		case http.StatusConflict:
			c.m.polls.WithLabelValues("conflict").Inc()
			c.setState(StateConflict)
			d := retryWait(r, b)
			c.log.Warn("cloud link: another poller serves this node id", "node", c.cfg.NodeID, "retry_in", d)
			if !c.sleep(d, c.stop) {
				return
			}
		case http.StatusGone:
			c.m.polls.WithLabelValues("gone").Inc()
			c.log.Warn("cloud link: session gone (410): reconciling", "body", trim(r.body))
			if err := c.reconcile(ctx); err != nil {
				c.log.Warn("reconcile failed", "err", err)
				if !c.sleep(b.next(), c.stop) {
					return
				}
				continue
			}
			ackThrough = 0
		default:
			c.m.polls.WithLabelValues(strconv.Itoa(r.status)).Inc()
			d := retryWait(r, b)
			c.setState(StateBackoff)
			c.log.Warn("cloud poll refused", "status", r.status, "body", trim(r.body), "retry_in", d)
			if !c.sleep(d, c.stop) {
				return
			}
		}
	}
}

// tlsProblem names why the server's certificate was refused, or "" when
// err is not a certificate failure.
func tlsProblem(err error) string {
	var (
		inv  x509.CertificateInvalidError
		host x509.HostnameError
		ca   x509.UnknownAuthorityError
		ver  *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return "certificate expired or not yet valid"
	case errors.As(err, &inv):
		return "certificate invalid"
	case errors.As(err, &host):
		return "certificate is for another host name"
	case errors.As(err, &ca):
		return "certificate signed by an unknown authority"
	case errors.As(err, &ver):
		return "certificate refused"
	}
	if errors.Is(err, ErrClientCertificate) {
		return "our client certificate is unusable (see err)"
	}
	var rec tls.RecordHeaderError
	if errors.As(err, &rec) {
		return "the server does not speak TLS"
	}
	return ""
}

func trim(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.TrimSpace(string(b))
}

// take journals the calls of a poll response and handles cancels; it
// returns the highest seq now safe to acknowledge.
func (c *Client) take(resp PollResponse, b *backoff) (uint64, bool) {
	for _, id := range resp.Cancel {
		c.m.cancels.Inc()
		c.node.Cancel(id)
	}
	for _, id := range resp.Lost {
		c.m.lost.Inc()
		c.log.Warn("cloud lease lost", "call", id)
	}
	if len(resp.Calls) == 0 {
		b.reset()
		return 0, true
	}
	now := time.Now()
	cs := make([]*calls.Call, len(resp.Calls))
	var seq uint64
	for i, w := range resp.Calls {
		cc := &calls.Call{
			ID: w.ID, Task: w.Task, Input: w.Input, Source: calls.Source{Kind: SourceKind, Ref: strconv.FormatUint(w.Seq, 10)},
			Queue: w.Queue, Priority: w.Priority, Labels: w.Labels, IdempotencyKey: w.IdempotencyKey, Attempt: w.Attempt,
			Effect: calls.Effect(w.Effect), Received: now, MaxRun: time.Duration(w.MaxRunMS) * time.Millisecond,
			Digest: w.Digest,
		}
		if w.StartByMS > 0 {
			cc.StartBy = now.Add(time.Duration(w.StartByMS) * time.Millisecond)
		}
		cs[i] = cc
		seq = max(seq, w.Seq)
	}
	outs, err := c.node.Accept(cs)
	if err != nil {
		c.m.journalErrors.Inc()
		c.log.Error("cloud calls not journaled: not acknowledged, the server will redeliver", "calls", len(cs), "err", err)
		return 0, false
	}
	c.mu.Lock()
	for i, w := range resp.Calls {
		c.leases[w.ID] = time.Duration(w.LeaseMS) * time.Millisecond
		switch outs[i] {
		case calls.Accepted:
			c.m.received.Inc()
		default:
			c.m.duplicates.WithLabelValues(outs[i].String()).Inc()
		}
	}
	c.mu.Unlock()
	b.reset()
	return seq, true
}

// reconcile asks what the server holds for this node after a 410 and
// re-sends finished results it still lacks.
func (c *Client) reconcile(ctx context.Context) error {
	r, err := c.do(ctx, http.MethodGet, c.endpoint("calls")+"?state=leased,pending", nil)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if r.status != http.StatusOK {
		return fmt.Errorf("reconcile: status %d: %s", r.status, trim(r.body))
	}
	var list CallList
	if err := json.Unmarshal(r.body, &list); err != nil {
		return fmt.Errorf("%w: reconcile: %w", ErrProtocol, err)
	}
	c.log.Info("reconciled with the control plane", "server_holds", len(list.Calls))
	c.Notify()
	return nil
}

// uploadLoop uploads finished results from the outbox.
func (c *Client) uploadLoop() {
	c.drain("cloud result upload failed", "cloud results left in the outbox at stop: sent after restart", c.notify,
		func(b *backoff) (int, time.Duration, error) {
			recs, count, bytes := c.node.Outbox(SourceKind, c.cfg.BatchSize)
			recs = batchBySize(recs, recordSize)
			c.m.outboxResults.Set(float64(count))
			c.m.outboxBytes.Set(float64(bytes))
			if len(recs) == 0 {
				return 0, 0, nil
			}
			wait, err := c.upload(recs, b)
			return len(recs), wait, err
		})
}

// drain runs send, which uploads one batch and says how many items it
// sent (0: nothing to send), until it has nothing to send; then it waits
// for wake. A failure is logged (failed) and retried after the wait send
// returns. After StopPolling it goes on until nothing is left or a
// failure (stopped is logged): the daemon's stop deadline bounds it.
func (c *Client) drain(failed, stopped string, wake <-chan struct{}, send func(*backoff) (int, time.Duration, error)) {
	defer c.stopped.Done()
	b := &backoff{base: c.cfg.BackoffBase, max: c.cfg.BackoffMax}
	stopping := false
	for {
		n, wait, err := send(b)
		switch {
		case err == nil && n > 0:
			b.reset()
			continue
		case err == nil:
			if stopping {
				return
			}
			select {
			case <-wake:
			case <-c.stop:
				stopping = true
			}
			continue
		case stopping:
			c.log.Warn(stopped, "items", n, "err", err)
			return
		}
		c.log.Warn(failed, "items", n, "err", err, "retry_in", wait)
		select {
		case <-time.After(wait):
		case <-c.stop:
			stopping = true
		}
	}
}

// recordSize is what a record's result adds to a results batch, before
// base64 and JSON.
func recordSize(r *calls.Record) int {
	if r.Result == nil {
		return 0
	}
	return len(r.Result.Output) + len(r.Result.Error)
}

func toResult(r *calls.Record) Result {
	res := Result{CallID: r.ID, Attempt: r.Attempt}
	if r.Result != nil {
		res.Status, res.Output, res.Error = string(r.Result.Status), r.Result.Output, r.Result.Error
		res.Env, res.Rule = r.Result.Env, r.Result.Rule
	}
	res.Hash = ResultHash(res.Status, res.Output, res.Error)
	return res
}

// upload sends results (one PUT, or a batch) and marks the settled ones
// reported. On failure it returns how long to wait.
func (c *Client) upload(recs []*calls.Record, b *backoff) (time.Duration, error) {
	if err := c.node.Flush(); err != nil {
		return b.next(), fmt.Errorf("flush journal before upload: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ReadTimeout)
	defer cancel()
	var items []BatchItem
	if len(recs) == 1 {
		res := toResult(recs[0])
		r, err := c.do(ctx, http.MethodPut, c.endpoint("calls", res.CallID, "attempts", strconv.Itoa(res.Attempt), "result"), res)
		if err != nil {
			return b.next(), err
		}
		if !settled(r.status) {
			c.uploadRefused(r.status)
			return retryWait(r, b), fmt.Errorf("result upload: status %d: %s", r.status, trim(r.body))
		}
		items = []BatchItem{{CallID: res.CallID, Attempt: res.Attempt, Status: r.status}}
	} else {
		req := BatchRequest{Results: make([]Result, len(recs))}
		for i, r := range recs {
			req.Results[i] = toResult(r)
		}
		r, err := c.do(ctx, http.MethodPost, c.endpoint("results:batch"), req)
		if err != nil {
			return b.next(), err
		}
		if r.status != http.StatusOK {
			c.uploadRefused(r.status)
			return retryWait(r, b), fmt.Errorf("results upload: status %d: %s", r.status, trim(r.body))
		}
		resp, err := ParseBatchResponse(r.body)
		if err != nil {
			return b.next(), err
		}
		items = resp.Items
	}
	var done []string
	for _, it := range items {
		c.m.uploaded.WithLabelValues(strconv.Itoa(it.Status)).Inc()
		switch {
		case it.Status == http.StatusConflict:
			c.log.Error("cloud kept a different result for this call (first wins): not retried", "call", it.CallID, "attempt", it.Attempt)
		case it.Status == http.StatusBadRequest:
			c.log.Error("cloud refused a result as malformed: dropped", "call", it.CallID)
		}
		if settled(it.Status) || it.Status == http.StatusBadRequest {
			done = append(done, it.CallID)
		}
	}
	if err := c.node.MarkReported(done...); err != nil {
		return b.next(), err
	}
	c.mu.Lock()
	for _, id := range done {
		delete(c.leases, id)
	}
	c.mu.Unlock()
	return 0, nil
}

// uploadRefused re-reads the token after a 401 (the next try uses it).
func (c *Client) uploadRefused(status int) {
	if status == http.StatusUnauthorized {
		if err := c.loadToken(); err != nil {
			c.log.Error("cloud token reload failed", "err", err)
		}
	}
}

// settled reports whether a result status ends its upload.
func settled(code int) bool {
	switch code {
	case http.StatusOK, http.StatusCreated, http.StatusNotFound, http.StatusConflict, http.StatusGone:
		return true
	}
	return false
}

type metrics struct {
	polls                      *prometheus.CounterVec
	pollSeconds                prometheus.Histogram
	received, cancels, lost    prometheus.Counter
	journalErrors              prometheus.Counter
	duplicates, uploaded       *prometheus.CounterVec
	outboxResults, outboxBytes prometheus.Gauge
	outboxFull, backoff        prometheus.Gauge
	state                      *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_cloud_polls_total", Help: "Polls, by result (ok, empty, error, dns_error, tls_error, cut, bad_response, conflict, gone, unauthorized, forbidden, or the HTTP status)."}, []string{"result"}),
		pollSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outpost_cloud_poll_seconds", Help: "Time a poll request took (long polls included).",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60}}),
		received:      prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cloud_calls_received_total", Help: "New calls taken from the cloud and journaled."}),
		cancels:       prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cloud_cancels_total", Help: "Cancel requests from the cloud."}),
		lost:          prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cloud_leases_lost_total", Help: "Leases the cloud said the node lost."}),
		journalErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cloud_journal_errors_total", Help: "Poll responses not acknowledged because the journal write failed."}),
		duplicates:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_cloud_duplicates_dropped_total", Help: "Redelivered calls not run again, by outcome (in_flight, replayed)."}, []string{"outcome"}),
		uploaded:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_cloud_results_uploaded_total", Help: "Result uploads, by HTTP status."}, []string{"status"}),
		outboxResults: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_cloud_outbox_results", Help: "Results waiting to be uploaded."}),
		outboxBytes:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_cloud_outbox_bytes", Help: "Bytes of results waiting to be uploaded."}),
		outboxFull:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_cloud_outbox_full", Help: "1 while the outbox is over its byte cap (capacity 0 advertised)."}),
		backoff:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_cloud_backoff_seconds", Help: "The current backoff wait, 0 when not backing off."}),
		state:         prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outpost_cloud_link_state", Help: "1 for the link's current state."}, []string{"state"}),
	}
	if reg != nil {
		reg.MustRegister(m.polls, m.pollSeconds, m.received, m.cancels, m.lost, m.journalErrors, m.duplicates, m.uploaded,
			m.outboxResults, m.outboxBytes, m.outboxFull, m.backoff, m.state)
	}
	return m
}
