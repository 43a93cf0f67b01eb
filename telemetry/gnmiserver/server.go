// Package gnmiserver owns Outpost's gNMI server: the collected data (every
// target, as the hub hands it over) is kept in an openconfig/gnmi cache;
// Subscribe in POLL and ONCE modes is served by openconfig's subscribe
// package, STREAM by this package (SAMPLE with sample_interval,
// suppress_redundant and heartbeat_interval; ON_CHANGE; TARGET_DEFINED per
// leaf: see stream.go), plus Get from the same cache, so gnmic, Telegraf or
// gnmi_cli can subscribe to Outpost itself. TLS and username/password are optional;
// config validation refuses a listener beyond loopback without both.
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
	"os"
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
	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/coordinator/config"
	tgnmi "github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Server serves collected telemetry over gNMI.
type Server struct {
	gpb.UnimplementedGNMIServer
	cfg   config.GNMIServer
	log   *slog.Logger
	epoch time.Time // start of the monotonic arrival times in seen
	cache *cache.Cache
	sub   *subscribe.Server // ONCE and POLL
	match *match.Match      // STREAM subscriptions waiting for changes
	user  string
	pass  string
	tls   *tls.Config

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
func New(cfg config.GNMIServer, log *slog.Logger) (*Server, error) {
	c := cache.New(nil)
	sub, err := subscribe.NewServer(c)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, epoch: time.Now(), cache: c, sub: sub, match: match.New(), targets: map[string]bool{}, lists: map[string][]string{}, seen: map[string]map[string]seenPath{}}
	c.SetClient(func(l *ctree.Leaf) {
		if n, ok := l.Value().(*gpb.Notification); ok {
			subscribe.UpdateNotification(s.match, l, n, path.ToStrings(n.GetPrefix(), true))
		}
	})
	if cfg.Username != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("gnmi server password: %w", err)
		}
		s.user, s.pass = cfg.Username, strings.TrimRight(string(b), "\r\n")
	}
	if cfg.TLS.CertFile != "" {
		crt, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
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

// Subscribe serves STREAM (stream.go), POLL and ONCE from the cache. A
// prefix without a target means every target ("*"), as for Get; list
// elements without keys match every entry (keys.go).
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
		return status.Error(codes.InvalidArgument, "the first request must be a subscription list")
	}
	list = proto.Clone(list).(*gpb.SubscriptionList)
	for _, sub := range list.GetSubscription() {
		_, sub.Path = s.withKeys(list.GetPrefix(), sub.GetPath())
	}
	list.Prefix, _ = s.withKeys(list.GetPrefix(), nil)
	if list.Prefix.Target == "" {
		list.Prefix.Target = "*"
	}
	req = &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: list}}
	if list.GetMode() == gpb.SubscriptionList_STREAM {
		return s.serveStream(stream, list)
	}
	return s.sub.Subscribe(&replayStream{GNMI_SubscribeServer: stream, first: req})
}

// replayStream hands the already read first request to the subscribe package.
type replayStream struct {
	gpb.GNMI_SubscribeServer
	first *gpb.SubscribeRequest
}

func (r *replayStream) Recv() (*gpb.SubscribeRequest, error) {
	if f := r.first; f != nil {
		r.first = nil
		return f, nil
	}
	return r.GNMI_SubscribeServer.Recv()
}

// Capabilities reports the encodings served.
func (s *Server) Capabilities(context.Context, *gpb.CapabilityRequest) (*gpb.CapabilityResponse, error) {
	return &gpb.CapabilityResponse{SupportedEncodings: []gpb.Encoding{gpb.Encoding_JSON_IETF, gpb.Encoding_PROTO}, GNMIVersion: "0.10.0"}, nil
}

// Get answers from the cache: one notification per leaf; list elements
// without keys match every entry (keys.go).
func (s *Server) Get(_ context.Context, req *gpb.GetRequest) (*gpb.GetResponse, error) {
	target := req.GetPrefix().GetTarget()
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
	for _, p := range paths {
		full, err := path.CompletePath(s.withKeys(req.GetPrefix(), p))
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "bad path: %v", err)
		}
		err = s.cache.Query(target, full, func(_ []string, l *ctree.Leaf, v any) error {
			if n, ok := v.(*gpb.Notification); ok && !isMeta(n) {
				resp.Notification = append(resp.Notification, proto.Clone(n).(*gpb.Notification))
			}
			return nil
		})
		if err != nil {
			return nil, status.Errorf(codes.Internal, "query: %v", err)
		}
	}
	if len(resp.Notification) == 0 {
		return nil, status.Error(codes.NotFound, "no data at the requested paths")
	}
	return resp, nil
}

func isMeta(n *gpb.Notification) bool {
	for _, u := range n.GetUpdate() {
		if e := u.GetPath().GetElem(); len(e) > 0 && e[0].GetName() == "meta" {
			return true
		}
	}
	return false
}
