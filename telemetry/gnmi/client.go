// Package gnmi owns Outpost's gNMI client: per target one gRPC connection
// (TLS with CA and client certificate, skip-verify only when asked,
// username and password from a file), one stream per configured
// subscription (STREAM with SAMPLE, ON_CHANGE or TARGET_DEFINED; POLL;
// ONCE), reconnects with exponential backoff and jitter, dead-stream
// detection (gRPC keepalive and a watchdog when no data arrives past the
// expected interval), Get for on-demand reads, and per-target status.
// Notifications leave as model.Updates.
package gnmi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/outpost-edge/outpost/internal/secretfile"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Sink receives converted updates; it must not keep the slice.
type Sink func([]model.Update)

// ErrStale is the cause when a stream sent nothing past its expected interval.
var ErrStale = errors.New("no data past the expected interval")

// Client collects from the configured gNMI targets.
type Client struct {
	log     *slog.Logger
	sink    Sink
	targets map[string]*target
	order   []*target
	wg      sync.WaitGroup
}

type target struct {
	cfg  Target
	conn *grpc.ClientConn
	gc   gpb.GNMIClient
	log  *slog.Logger

	mu      sync.Mutex
	status  model.TargetStatus
	streams int // streams up
}

// New builds the client: TLS material and passwords are read here; no
// connection is made until Run. Two targets with the same name are refused
// (a target is never subscribed twice).
func New(cfg Config, sink Sink, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{log: log, sink: sink, targets: map[string]*target{}}
	for _, tc := range cfg.Targets {
		if c.targets[tc.Name] != nil {
			c.close()
			return nil, fmt.Errorf("gnmi target %q configured twice", tc.Name)
		}
		opts, err := DialOptions(tc)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("gnmi target %s: %w", tc.Name, err)
		}
		conn, err := grpc.NewClient(tc.Address, opts...) // lazy: connects on first RPC
		if err != nil {
			c.close()
			return nil, fmt.Errorf("gnmi target %s: %w", tc.Name, err)
		}
		t := &target{cfg: tc, conn: conn, gc: gpb.NewGNMIClient(conn), log: log.With("target", tc.Name),
			status: model.TargetStatus{Name: tc.Name, Source: "gnmi", Address: tc.Address}}
		c.targets[tc.Name] = t
		c.order = append(c.order, t)
	}
	return c, nil
}

type passCreds struct {
	user, pass string
	secure     bool
}

func (p passCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"username": p.user, "password": p.pass}, nil
}
func (p passCreds) RequireTransportSecurity() bool { return p.secure }

// DialOptions are how a gNMI client reaches tc: TLS when tc.TLS says so
// (else plaintext), its username and password as per-RPC credentials.
func DialOptions(tc Target) ([]grpc.DialOption, error) {
	opts := []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
		// No gRPC service config from DNS: resolving a device's name would
		// also look up a TXT record (_grpc_config.<name>) before the first
		// RPC, and where the name server drops such queries each new
		// connection waits out its timeout (5 s by default): a new holder's
		// collectors started that late.
		grpc.WithDisableServiceConfig(),
	}
	if tc.TLS.Enabled || tc.TLS.CAFile != "" || tc.TLS.CertFile != "" {
		tcfg, err := ClientTLS(tc.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tcfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if tc.Username != "" {
		b, err := secretfile.Read(tc.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(passCreds{tc.Username, strings.TrimRight(string(b), "\r\n"), tc.TLS.Enabled}))
	}
	return opts, nil
}

// ClientTLS builds a client TLS config from files.
func ClientTLS(t TLS) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // only when configured
	if t.CAFile != "" {
		pool, err := secretfile.CertPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		crt, err := secretfile.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{crt}
	}
	return cfg, nil
}

func (c *Client) close() {
	for _, t := range c.order {
		t.conn.Close()
	}
}

// Run runs every subscription until ctx ends, then closes the connections.
func (c *Client) Run(ctx context.Context) {
	for _, t := range c.order {
		for _, s := range t.cfg.Subscriptions {
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.loop(ctx, t, s)
			}()
		}
	}
	<-ctx.Done()
	c.wg.Wait()
	c.close()
}

// Status returns the state of every target.
func (c *Client) Status() []model.TargetStatus {
	out := make([]model.TargetStatus, 0, len(c.order))
	for _, t := range c.order {
		t.mu.Lock()
		out = append(out, t.status)
		t.mu.Unlock()
	}
	return out
}

// loop runs one subscription with reconnects: backoff doubles from
// BackoffMin to BackoffMax with ±50 % jitter, and starts over after a
// stream that delivered data.
func (c *Client) loop(ctx context.Context, t *target, s Subscription) {
	backoff := t.cfg.BackoffMin.Std()
	for ctx.Err() == nil {
		got, err := c.session(ctx, t, s)
		if ctx.Err() != nil {
			return
		}
		if got {
			backoff = t.cfg.BackoffMin.Std()
		}
		t.mu.Lock()
		if err != nil {
			t.status.Errors++
			t.status.LastError, t.status.ErrorTime = fmt.Sprintf("%s: %v", s.Name, err), time.Now()
		}
		t.status.Reconnects++
		t.mu.Unlock()
		if err != nil {
			t.log.Warn("gnmi subscription ended", "subscription", s.Name, "err", err, "retry_in", backoff)
		}
		wait := s.Interval.Std()
		if err != nil || s.Mode == "stream" || s.Mode == "poll" {
			wait = time.Duration(float64(backoff) * (0.5 + rand.Float64()))
			backoff = min(backoff*2, t.cfg.BackoffMax.Std())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (t *target) setUp(up bool) {
	t.mu.Lock()
	if up {
		t.streams++
	} else {
		t.streams--
	}
	t.status.Connected = t.streams > 0
	t.mu.Unlock()
}

// Request builds the SubscribeRequest of a subscription.
func Request(s Subscription) (*gpb.SubscribeRequest, error) {
	list := &gpb.SubscriptionList{Encoding: encodings[s.Encoding]}
	switch s.Mode {
	case "poll":
		list.Mode = gpb.SubscriptionList_POLL
	case "once":
		list.Mode = gpb.SubscriptionList_ONCE
	default:
		list.Mode = gpb.SubscriptionList_STREAM
	}
	if s.Prefix != "" {
		p, err := model.ParsePath(s.Prefix)
		if err != nil {
			return nil, err
		}
		list.Prefix = p.ToGNMI()
	}
	for _, ps := range s.Paths {
		p, err := model.ParsePath(ps)
		if err != nil {
			return nil, err
		}
		sub := &gpb.Subscription{Path: p.ToGNMI(), SuppressRedundant: s.SuppressRedundant,
			SampleInterval: uint64(s.SampleInterval.Std()), HeartbeatInterval: uint64(s.HeartbeatInterval.Std())}
		switch s.StreamMode {
		case "on_change":
			sub.Mode = gpb.SubscriptionMode_ON_CHANGE
		case "target_defined":
			sub.Mode = gpb.SubscriptionMode_TARGET_DEFINED
		default:
			sub.Mode = gpb.SubscriptionMode_SAMPLE
		}
		list.Subscription = append(list.Subscription, sub)
	}
	return &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: list}}, nil
}

var encodings = map[string]gpb.Encoding{"json": gpb.Encoding_JSON, "json_ietf": gpb.Encoding_JSON_IETF, "proto": gpb.Encoding_PROTO}

// staleAfter is how long a stream may stay silent before it counts as dead.
func staleAfter(s Subscription) time.Duration {
	switch {
	case s.Mode == "poll" || s.Mode == "once":
		return max(s.Interval.Std()*3, 10*time.Second)
	case s.HeartbeatInterval > 0:
		return max(s.HeartbeatInterval.Std()*3, time.Second)
	case s.StreamMode == "sample" && s.SampleInterval > 0:
		return max(s.SampleInterval.Std()*3, time.Second)
	}
	return 0 // on_change without heartbeat: only gRPC keepalive tells
}

// session runs one stream until it ends; got reports whether data came.
func (c *Client) session(ctx context.Context, t *target, s Subscription) (got bool, err error) {
	req, err := Request(s)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := t.gc.Subscribe(sctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(req); err != nil {
		return false, err
	}
	t.setUp(true)
	defer t.setUp(false)

	stale := staleAfter(s)
	var watchdog *time.Timer
	if stale > 0 {
		watchdog = time.AfterFunc(stale, func() { cancel(fmt.Errorf("%w (%s)", ErrStale, stale)) })
		defer watchdog.Stop()
	}
	if s.Mode == "poll" {
		go func() {
			tk := time.NewTicker(s.Interval.Std())
			defer tk.Stop()
			for {
				select {
				case <-sctx.Done():
					return
				case <-tk.C:
					if err := stream.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Poll{Poll: &gpb.Poll{}}}); err != nil {
						cancel(fmt.Errorf("send poll: %w", err))
						return
					}
				}
			}
		}()
	}
	buf := make([]model.Update, 0, 64)
	for {
		resp, err := stream.Recv()
		if err != nil {
			if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
				return got, cause
			}
			if errors.Is(err, io.EOF) {
				if s.Mode == "once" {
					return got, nil
				}
				return got, errors.New("stream closed by the target")
			}
			return got, err
		}
		if watchdog != nil {
			watchdog.Reset(stale)
		}
		switch r := resp.Response.(type) {
		case *gpb.SubscribeResponse_Update:
			buf = Updates(buf[:0], t.cfg.Name, r.Update)
			if len(buf) > 0 {
				got = true
				if c.sink != nil {
					c.sink(buf)
				}
				t.mu.Lock()
				t.status.LastUpdate = time.Now()
				t.status.Updates += uint64(len(buf))
				t.mu.Unlock()
			}
		case *gpb.SubscribeResponse_SyncResponse:
			if s.Mode == "once" {
				return got, nil
			}
		}
	}
}

// Updates appends the updates of a notification (deletes are skipped).
func Updates(buf []model.Update, target string, n *gpb.Notification) []model.Update {
	ts := n.GetTimestamp()
	if ts == 0 {
		ts = time.Now().UnixNano()
	}
	var pb [256]byte
	prefix := model.AppendGNMI(pb[:0], n.GetPrefix())
	np := len(prefix)
	for _, u := range n.GetUpdate() {
		v, ok := Value(u.GetVal())
		if !ok {
			continue
		}
		p := model.AppendGNMI(prefix[:np], u.GetPath())
		if len(p) == 0 {
			p = append(p, '/')
		}
		prefix = p[:np] // keep a grown buffer
		buf = append(buf, model.Update{Target: target, Path: string(p), Time: ts, Value: v})
	}
	return buf
}

// Get reads paths from a target now.
func (c *Client) Get(ctx context.Context, name string, paths []string) ([]model.Update, error) {
	t := c.targets[name]
	if t == nil {
		return nil, fmt.Errorf("no gnmi target %q", name)
	}
	req := &gpb.GetRequest{Encoding: gpb.Encoding_JSON_IETF}
	for _, ps := range paths {
		p, err := model.ParsePath(ps)
		if err != nil {
			return nil, err
		}
		req.Path = append(req.Path, p.ToGNMI())
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout.Std())
	defer cancel()
	resp, err := t.gc.Get(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("gnmi get from %s: %w", name, err)
	}
	var out []model.Update
	for _, n := range resp.GetNotification() {
		out = Updates(out, name, n)
	}
	return out, nil
}
