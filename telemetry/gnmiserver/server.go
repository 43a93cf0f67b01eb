// Package gnmiserver owns Outpost's gNMI server: the collected data (every
// target, as the hub hands it over) is kept in an openconfig/gnmi cache
// and served by Get and by Subscribe in ONCE and POLL (snapshot.go) and
// STREAM modes (SAMPLE with sample_interval, suppress_redundant and
// heartbeat_interval; ON_CHANGE; TARGET_DEFINED per leaf: see stream.go);
// with the history extension, Subscribe replays the telemetry store
// instead (history.go). What requests may ask for and what is refused,
// following the gNMI specification, is in request.go. So gnmic, Telegraf
// or gnmi_cli can subscribe to Outpost itself. TLS and username/password
// are optional; config validation refuses a listener beyond loopback
// without both.
package gnmiserver

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/openconfig/gnmi/cache"
	"github.com/openconfig/gnmi/ctree"
	"github.com/openconfig/gnmi/match"
	"github.com/openconfig/gnmi/path"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/subscribe"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/outpost-edge/outpost/internal/secretfile"
	tgnmi "github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Server serves collected telemetry over gNMI.
type Server struct {
	gpb.UnimplementedGNMIServer
	cfg      Config
	log      *slog.Logger
	epoch    time.Time // start of the monotonic arrival times in seen
	cache    *cache.Cache
	match    *match.Match // STREAM subscriptions waiting for changes
	user     string
	pass     string
	history  History                   // the telemetry store, for the history extension; nil: refused
	epochs   func(target string) int64 // see SetEpochs; nil: no epoch header
	divert   Divert                    // see SetDivert; nil: every request is answered here
	peerOpts []grpc.DialOption         // how divert reaches other instances
	tls      *tls.Config

	tailMu sync.Mutex
	tails  map[string]map[*tail]struct{} // target ("*": every one) → its followers (follow.go)

	mu      sync.RWMutex
	targets map[string]bool
	lists   map[string][]string            // list element (see keys.go) → its key names
	seen    map[string]map[string]seenPath // target → path → last update (see expire.go)
	grpc    *grpc.Server
	lis     net.Listener
	done    chan struct{}
	quit    chan struct{} // ends the expiry loop
	swept   chan struct{} // closed when the expiry loop ended
}

// New builds the server (reading the password and TLS files); Start listens.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	c := cache.New(nil)
	s := &Server{cfg: cfg, log: log, epoch: time.Now(), cache: c, match: match.New(), targets: map[string]bool{}, lists: map[string][]string{}, seen: map[string]map[string]seenPath{},
		tails: map[string]map[*tail]struct{}{}}
	c.SetClient(func(l *ctree.Leaf) {
		if n, ok := l.Value().(*gpb.Notification); ok {
			subscribe.UpdateNotification(s.match, l, n, path.ToStrings(n.GetPrefix(), true))
		}
	})
	if cfg.Username != "" {
		b, err := secretfile.Read(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("gnmi server password: %w", err)
		}
		s.user, s.pass = cfg.Username, strings.TrimRight(string(b), "\r\n")
	}
	if cfg.TLS.CertFile != "" {
		crt, err := secretfile.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("gnmi server certificate: %w", err)
		}
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{crt}}
	}
	return s, nil
}

// Update puts updates into the cache (and so to subscribers).
func (s *Server) Update(us []model.Update) {
	now := int64(time.Since(s.epoch)) // monotonic: a wall clock step expires nothing
	ns := make([]*gpb.Notification, 0, len(us))
	s.mu.Lock()
	for i := range us {
		u := &us[i]
		if u.Value.Kind == model.KindDeleted {
			if sp, ok := s.seen[u.Target][u.Path]; ok {
				delete(s.seen[u.Target], u.Path)
				if p, err := model.ParsePath(u.Path); err == nil {
					ns = append(ns, deleteNotification(u.Target, p, max(u.Time, sp.ts+1)))
				}
			}
			continue
		}
		p, err := model.ParsePath(u.Path)
		tv := tgnmi.TypedValue(u.Value)
		if err != nil || tv == nil {
			continue
		}
		if !s.targets[u.Target] {
			s.cache.Add(u.Target)
			s.cache.Connect(u.Target)
			s.cache.Sync(u.Target)
			s.targets[u.Target] = true
			s.seen[u.Target] = map[string]seenPath{}
		}
		s.learnListsLocked(p)
		s.seen[u.Target][u.Path] = seenPath{at: now, ts: u.Time}
		ns = append(ns, &gpb.Notification{Timestamp: u.Time, Prefix: &gpb.Path{Target: u.Target}, Update: []*gpb.Update{{Path: p.ToGNMI(), Val: tv}}})
	}
	s.mu.Unlock()
	for _, n := range ns {
		_ = s.cache.GnmiUpdate(n) // older timestamps than the cached value are refused: fine
	}
	s.feedTails(us)
}

// Start listens on cfg.Listen and serves in a goroutine Stop waits for.
func (s *Server) Start() error {
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gnmi server listen on %s: %w", s.cfg.Listen, err)
	}
	opts := []grpc.ServerOption{grpc.StreamInterceptor(s.authStream), grpc.UnaryInterceptor(s.authUnary)}
	if s.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.tls)))
	}
	g := grpc.NewServer(opts...)
	gpb.RegisterGNMIServer(g, s)
	s.mu.Lock()
	s.grpc, s.lis, s.done = g, lis, make(chan struct{})
	if s.cfg.ExpireAfter > 0 {
		s.quit, s.swept = make(chan struct{}), make(chan struct{})
		go s.expireLoop(s.quit, s.swept)
	}
	s.mu.Unlock()
	go func() {
		defer close(s.done)
		if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("gnmi server", "err", err)
		}
	}()
	s.log.Info("gnmi server listening", "addr", lis.Addr().String(), "tls", s.tls != nil, "auth", s.user != "")
	return nil
}

// Addr is the bound address (after Start).
func (s *Server) Addr() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.lis == nil {
		return ""
	}
	return s.lis.Addr().String()
}

// Stop ends every stream within the deadline of ctx, then stops hard.
func (s *Server) Stop(ctx context.Context) {
	s.mu.Lock()
	g, done, quit := s.grpc, s.done, s.quit
	s.grpc, s.quit = nil, nil
	s.mu.Unlock()
	if quit != nil {
		close(quit)
		<-s.swept
	}
	if g == nil {
		return
	}
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		g.Stop()
	case <-time.After(2 * time.Second): // streaming subscriptions never end by themselves
		g.Stop()
	}
	<-stopped
	<-done
}

func (s *Server) check(ctx context.Context) error {
	if s.user == "" {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	u, p := first(md, "username"), first(md, "password")
	if subtle.ConstantTimeCompare([]byte(u), []byte(s.user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(s.pass)) != 1 {
		return status.Error(codes.Unauthenticated, "wrong username or password")
	}
	return nil
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (s *Server) authStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.check(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}

func (s *Server) authUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Subscribe serves one subscription list: ONCE and POLL (snapshot.go),
// STREAM (stream.go), and the history extension (history.go). Options
// common to Get and Subscribe are checked in request.go.
func (s *Server) Subscribe(stream gpb.GNMI_SubscribeServer) error {
	req, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	list := req.GetSubscribe()
	if list == nil {
		return status.Error(codes.InvalidArgument, "the first request must be a subscription list (poll and aliases need a subscription)")
	}
	target := list.GetPrefix().GetTarget()
	o, err := parseOptions(target, list.GetEncoding(), list.GetUseModels(), req.GetExtension(), true)
	if err != nil {
		return err
	}
	if m := list.GetQos().GetMarking(); m != 0 {
		return status.Errorf(codes.Unimplemented, "qos marking %d is not supported: responses use the default marking (0)", m)
	}
	if len(list.GetSubscription()) == 0 {
		return status.Error(codes.InvalidArgument, "no subscriptions")
	}
	if target == "" {
		target = "*" // every target; answers carry none (see view)
	}
	if o.history == nil {
		to, err := s.route(stream.Context(), target, stream.SetHeader)
		if err != nil {
			return err
		}
		if to != "" {
			return s.relaySubscribe(stream, req, to)
		}
	}
	if target != "*" && !s.cache.HasTarget(target) && o.history == nil {
		return status.Errorf(codes.NotFound, "no such target: %q", target)
	}
	sels := make([]selection, len(list.GetSubscription()))
	for i, sub := range list.GetSubscription() {
		if sels[i], err = s.selectPath(list.GetPrefix(), sub.GetPath(), o.depth); err != nil {
			return err
		}
	}
	if o.history != nil {
		return s.serveHistory(stream, list, sels, o, target)
	}
	switch list.GetMode() {
	case gpb.SubscriptionList_STREAM:
		return s.serveStream(stream, list, sels, o.view, target)
	case gpb.SubscriptionList_ONCE, gpb.SubscriptionList_POLL:
		return s.serveSnapshots(stream, list, sels, o.view, target)
	}
	return status.Errorf(codes.InvalidArgument, "subscription list mode %v not supported", list.GetMode())
}

// Capabilities reports the encodings served; no schema models are known.
func (s *Server) Capabilities(context.Context, *gpb.CapabilityRequest) (*gpb.CapabilityResponse, error) {
	return &gpb.CapabilityResponse{SupportedEncodings: supportedEncodings, GNMIVersion: "0.10.0"}, nil
}

// Get answers from the cache: one notification per leaf. Every leaf
// Outpost serves is read-only (there is no Set), so it is STATE (and
// OPERATIONAL) data, and CONFIG selects none of it: a path that has data
// gets one notification without updates, a path without data NotFound as
// for every type.
func (s *Server) Get(ctx context.Context, req *gpb.GetRequest) (*gpb.GetResponse, error) {
	target := req.GetPrefix().GetTarget()
	if resp, ok, err := s.diverted(ctx, target, req); ok || err != nil {
		return resp, err
	}
	o, err := parseOptions(target, req.GetEncoding(), req.GetUseModels(), req.GetExtension(), false)
	if err != nil {
		return nil, err
	}
	config := false
	switch req.GetType() {
	case gpb.GetRequest_ALL, gpb.GetRequest_STATE, gpb.GetRequest_OPERATIONAL:
	case gpb.GetRequest_CONFIG:
		config = true
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown data type %v", req.GetType())
	}
	if target == "" {
		target = "*" // every target
	}
	if target != "*" && !s.cache.HasTarget(target) {
		return nil, status.Errorf(codes.NotFound, "no such target: %q", target)
	}
	resp := &gpb.GetResponse{}
	paths := req.GetPath()
	if len(paths) == 0 {
		paths = []*gpb.Path{{}}
	}
	found := false
	for _, p := range paths {
		sel, err := s.selectPath(req.GetPrefix(), p, o.depth)
		if err != nil {
			return nil, err
		}
		xs, err := s.leaves(target, sel)
		if err != nil {
			return nil, err
		}
		found = found || len(xs) > 0
		if config {
			if len(xs) > 0 {
				n := &gpb.Notification{Timestamp: time.Now().UnixNano()}
				if o.target != "" {
					n.Prefix = &gpb.Path{Target: o.target}
				}
				resp.Notification = append(resp.Notification, n)
			}
			continue
		}
		for _, x := range xs {
			resp.Notification = append(resp.Notification, o.out(x.n))
		}
	}
	if !found {
		return nil, status.Error(codes.NotFound, "no data at the requested paths")
	}
	return resp, nil
}
