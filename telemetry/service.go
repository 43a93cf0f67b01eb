// Package telemetry owns Outpost's network telemetry: it builds the
// collectors (gNMI client, SNMP poller and trap receiver), the hub that
// fans their updates out (time-series store, gNMI server cache, MQTT
// topics, task triggers), and the admin API and Go methods that query what
// was collected. Subpackages: model (the update model and paths), tsdb,
// snmp, gnmi (client) and gnmiserver.
//
// Lock order: Service.mu, then hub.mu; Service.placedMu is taken alone.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/telemetry/cluster"
	"github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/snmp"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// Update is the one shape every source produces (see package model).
type Update = model.Update

// Publisher sends a message to MQTT (the daemon's client or the embedded broker).
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, payload []byte) error
}

// Trigger hands a task call to the scheduler without blocking.
type Trigger interface {
	Submit(task string, input []byte, source string) error
}

// Sinks are what telemetry delivers to outside its package; both may be nil.
type Sinks struct {
	Publisher Publisher
	Trigger   Trigger
}

// ErrDisabled is returned by queries when telemetry is not configured.
var ErrDisabled = errors.New("telemetry is not enabled (no targets, trap receiver or gnmi server configured)")

// Service is the telemetry subsystem of one daemon.
type Service struct {
	cfg     Config
	dataDir string
	log     *slog.Logger
	reg     prometheus.Registerer
	sinks   Sinks

	mu      sync.Mutex
	metrics *tracked // what this Start registered; unregistered at Stop
	db      *tsdb.DB
	hub     *hub
	server  *gnmiserver.Server
	poller  *snmp.Poller
	traps   *snmp.TrapReceiver
	trapErr <-chan error
	client  *gnmi.Client
	node    *cluster.Node // nil: not clustered
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool

	placedMu sync.Mutex
	placed   map[string]placed // clustered: targets collected here
}

// New returns the service; it has no side effects. cfg gets its defaults here.
func New(cfg Config, dataDir string, log *slog.Logger, reg prometheus.Registerer, sinks Sinks) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg.WithDefaults(), dataDir: dataDir, log: log, reg: reg, sinks: sinks, placed: map[string]placed{}}
}

// Enabled reports whether anything is configured to collect or serve.
func (s *Service) Enabled() bool {
	c := s.cfg
	return len(c.GNMI.Targets) > 0 || len(c.SNMP.Targets) > 0 || c.SNMP.Traps.Listen != "" || c.GNMIServer.Listen != ""
}

// Start opens the store under <dataDir>/telemetry and starts the gNMI
// server, the trap receiver and the collectors. When telemetry is not
// configured it does nothing. On error, what was started is stopped.
func (s *Service) Start(ctx context.Context) (err error) {
	if !s.Enabled() {
		s.log.Info("telemetry disabled")
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("telemetry already started")
	}
	s.started = true
	defer func() {
		if err != nil {
			s.stopLocked(context.Background())
		}
	}()
	var reg prometheus.Registerer // nil when metrics are off
	if s.reg != nil {
		s.metrics = &tracked{reg: s.reg}
		reg = s.metrics
	}
	s.db, err = tsdb.Open(tsdb.Options{Dir: filepath.Join(s.dataDir, "telemetry"), Cfg: s.cfg.Store, Log: s.log.With("part", "tsdb"), Reg: reg})
	if err != nil {
		return err
	}
	s.db.Start()
	if s.cfg.GNMIServer.Listen != "" {
		srv := s.cfg.GNMIServer
		srv.ExpireAfter = confval.Duration(s.cfg.GNMIServerExpiry())
		if s.server, err = gnmiserver.New(srv, s.log.With("part", "gnmi-server")); err != nil {
			return err
		}
		s.server.SetHistory(s.db) // the history extension replays the store
		if s.cfg.Cluster.Enabled() {
			dial, err := gnmi.DialOptions(s.cfg.peerTarget())
			if err != nil {
				return fmt.Errorf("telemetry cluster: %w", err)
			}
			s.node = cluster.New(cluster.Options{Cfg: s.cfg.Cluster, Targets: s.cfg.targetNames(), Collector: s, Local: s,
				Log: s.log.With("part", "cluster"), Reg: reg, Dial: dial})
			s.server.SetEpochs(s.node.Epoch)                           // replicas check whom they copy from
			s.server.SetDivert(s.node.Divert, s.node.DialOptions()...) // a Get or Subscribe for a target a stale replica has goes to the holder
		}
		if err = s.server.Start(); err != nil {
			return err
		}
	}
	s.hub, err = newHub(s.cfg, s.db, s.server, s.sinks, s.log.With("part", "hub"), reg)
	if err != nil {
		return err
	}
	s.hub.start()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	if s.cfg.SNMP.Traps.Listen != "" {
		if s.traps, err = snmp.NewTrapReceiver(s.cfg.SNMP.Traps, filepath.Join(s.dataDir, "telemetry", "snmp_engine_boots"), s.hub.publish, s.log.With("part", "snmp-traps")); err != nil {
			return err
		}
		if !s.cfg.Cluster.Enabled() { // clustered: on the holder of the traps target (Collect)
			if s.trapErr, err = s.traps.Listen(s.cfg.SNMP.Traps.Listen); err != nil {
				s.traps = nil
				return err
			}
		}
		if reg != nil {
			tr := s.traps
			for _, c := range []prometheus.Collector{
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_telemetry_traps_total", Help: "SNMP traps and informs turned into events."}, func() float64 { return float64(tr.Received.Load()) }),
				trapRejects{tr},
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_telemetry_traps_not_in_time_window_total", Help: "Authenticated SNMPv3 traps and informs dropped as outside the 150 s time window (stale or replayed)."}, func() float64 { return float64(tr.NotInTimeWindow.Load()) }),
			} {
				if err := reg.Register(c); err != nil {
					s.log.Warn("register trap metrics", "err", err)
				}
			}
		}
	}
	if s.cfg.Cluster.Enabled() {
		if s.server == nil {
			return errors.New("a telemetry cluster needs the gnmi server (telemetry.gnmi_server.listen)")
		}
		advertise := "" // the configured one
		if cc := s.cfg.Cluster; cc.Advertise == "" || cc.Advertise == s.cfg.GNMIServer.Listen {
			advertise = s.server.Addr() // the bound port when listening on port 0
		}
		if err = s.node.Start(runCtx, advertise); err != nil {
			return err
		}
	}
	if len(s.cfg.SNMP.Targets) > 0 && s.node == nil {
		if s.poller, err = snmp.NewPoller(s.cfg.SNMP, s.hub.publish, s.log.With("part", "snmp")); err != nil {
			return err
		}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.poller.Run(runCtx) }()
	}
	if len(s.cfg.GNMI.Targets) > 0 && s.node == nil {
		if s.client, err = gnmi.New(s.cfg.GNMI, s.hub.publish, s.log.With("part", "gnmi")); err != nil {
			return err
		}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.client.Run(runCtx) }()
	}
	if reg != nil {
		if err := reg.Register(statusCollector{s}); err != nil {
			s.log.Warn("register telemetry status metrics", "err", err)
		}
	}
	s.log.Info("telemetry started", "gnmi_targets", len(s.cfg.GNMI.Targets), "snmp_targets", len(s.cfg.SNMP.Targets),
		"traps", s.cfg.SNMP.Traps.Listen, "gnmi_server", s.GNMIAddrLocked(), "cluster", s.cfg.Cluster.Etcd)
	return nil
}

// Stop stops the collectors, the trap receiver, the gNMI server and the
// hub, then flushes and closes the store. It is safe after a partial Start
// and twice.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(ctx)
}

func (s *Service) stopLocked(ctx context.Context) error {
	if s.node != nil {
		s.node.Stop() // stops the collectors of the targets held here
		s.node = nil
	}
	if s.cancel != nil {
		s.cancel()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("telemetry: collectors still stopping at the deadline")
	}
	if s.traps != nil {
		if s.trapErr != nil {
			s.traps.Close()
			<-s.trapErr
		}
		s.traps, s.trapErr = nil, nil
	}
	if s.server != nil {
		s.server.Stop(ctx)
		s.server = nil
	}
	if s.hub != nil {
		s.hub.stop()
		s.hub = nil
	}
	var err error
	if s.db != nil {
		err = s.db.Close()
		s.db = nil
	}
	s.cancel, s.client, s.poller = nil, nil, nil
	if s.metrics != nil {
		s.metrics.unregisterAll()
		s.metrics = nil
	}
	s.started = false
	return err
}

// GNMIAddr is the gNMI server's bound address ("" when off).
func (s *Service) GNMIAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.GNMIAddrLocked()
}

// GNMIAddrLocked is GNMIAddr with s.mu held.
func (s *Service) GNMIAddrLocked() string {
	if s.server == nil {
		return ""
	}
	return s.server.Addr()
}

func (s *Service) store() (*tsdb.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil, ErrDisabled
	}
	return s.db, nil
}

// Backup writes a backup stream of the telemetry store to w
// (tsdb.DB.Backup); ErrDisabled when telemetry is not running.
func (s *Service) Backup(w io.Writer) error {
	db, err := s.store()
	if err != nil {
		return err
	}
	return db.Backup(w)
}

// Publish hands updates from another source (tests, a future source) to the hub.
func (s *Service) Publish(us []Update) error {
	s.mu.Lock()
	h := s.hub
	s.mu.Unlock()
	if h == nil {
		return ErrDisabled
	}
	h.publish(us)
	return nil
}

// Latest returns the latest value of each series matching a target glob ("" all) and path pattern.
// In a cluster, one target (not a glob) whose replica here is stale is read at its holder.
func (s *Service) Latest(target, path string) ([]model.Point, error) {
	pts, _, err := s.latest(target, path)
	return pts, err
}

// latest is Latest, with the member that answered when it was passed on.
func (s *Service) latest(target, path string) (pts []model.Point, proxiedTo string, err error) {
	db, err := s.store()
	if err != nil {
		return nil, "", err
	}
	pat, err := model.ParsePattern(path)
	if err != nil {
		return nil, "", err
	}
	var us []model.Update
	if node, addr, member := s.proxyFor(target); addr != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		all, err := node.RemoteLatest(ctx, addr, target)
		if err != nil {
			return nil, "", err
		}
		for _, u := range all {
			if pat.MatchString(u.Path) {
				us = append(us, u)
			}
		}
		proxiedTo = member
	} else {
		us = db.Latest(target, pat)
	}
	out := make([]model.Point, len(us))
	for i, u := range us {
		out[i] = u.Point()
	}
	return out, proxiedTo, nil
}

// proxyFor returns, when a read of target here goes to its holder (one
// target, not a glob, whose replica here is stale), the holder's gNMI
// address and name; addr is "" otherwise.
func (s *Service) proxyFor(target string) (node *cluster.Node, addr, member string) {
	node = s.Cluster()
	if node == nil || target == "" || strings.ContainsAny(target, "*?") {
		return nil, "", ""
	}
	addr, _ = node.Divert(target)
	if addr == "" {
		return nil, "", ""
	}
	h, _ := node.Holder(target)
	return node, addr, h.Member
}

// QueryRequest selects points; see tsdb.Query.
type QueryRequest struct {
	Target string
	Path   string
	Since  time.Time
	Until  time.Time
	Bucket time.Duration
	Limit  int
}

// Query returns points (or buckets when Bucket > 0) per series; it stops
// with an error wrapping ctx's cause when ctx ends. In a cluster, one
// target (not a glob) whose replica here is stale is read at its holder.
func (s *Service) Query(ctx context.Context, q QueryRequest) ([]tsdb.Series, error) {
	res, _, err := s.query(ctx, q)
	return res, err
}

// query is Query, with the member that answered when it was passed on.
func (s *Service) query(ctx context.Context, q QueryRequest) (res []tsdb.Series, proxiedTo string, err error) {
	db, err := s.store()
	if err != nil {
		return nil, "", err
	}
	pat, err := model.ParsePattern(q.Path)
	if err != nil {
		return nil, "", err
	}
	if q.Bucket < 0 {
		return nil, "", fmt.Errorf("bucket must not be negative")
	}
	tq := tsdb.Query{Target: q.Target, Path: pat, Since: q.Since, Until: q.Until, Bucket: q.Bucket, Limit: q.Limit}
	if node, addr, member := s.proxyFor(q.Target); addr != "" {
		until := time.Now()
		if !q.Until.IsZero() && q.Until.Before(until) {
			until = q.Until // a range ending later would be followed
		}
		us, err := node.RemoteRange(ctx, addr, q.Target, q.Since.UnixNano(), until.UnixNano())
		if err != nil {
			return nil, "", err
		}
		return tq.Answer(us), member, nil
	}
	res, err = db.Query(ctx, tq)
	return res, "", err
}

// Status returns every target's state, gNMI first then SNMP.
func (s *Service) Status() []model.TargetStatus {
	s.mu.Lock()
	c, p := s.client, s.poller
	s.mu.Unlock()
	out := s.placedStatus()
	if c != nil {
		out = append(out, c.Status()...)
	}
	if p != nil {
		out = append(out, p.Status()...)
	}
	return out
}

type statusCollector struct{ s *Service }

// trapRejects exports the trap receiver's drops by reason (every reason,
// zeros included, so the label set is fixed).
type trapRejects struct{ r *snmp.TrapReceiver }

var descTrapRejected = prometheus.NewDesc("outpost_telemetry_traps_rejected_total",
	"SNMP traps and informs dropped, by reason: unknown_community, unknown_user, wrong_digest (auth password), decryption_error (priv password), security_level, no_trap_oid, malformed.",
	[]string{"reason"}, nil)

func (c trapRejects) Describe(ch chan<- *prometheus.Desc) { ch <- descTrapRejected }

func (c trapRejects) Collect(ch chan<- prometheus.Metric) {
	for _, reason := range snmp.RejectReasons {
		ch <- prometheus.MustNewConstMetric(descTrapRejected, prometheus.CounterValue, float64(c.r.Rejected(reason)), reason)
	}
}

var (
	descUp      = prometheus.NewDesc("outpost_telemetry_target_up", "1 when the target's stream is up (gNMI) or its last poll answered (SNMP).", []string{"target", "source"}, nil)
	descUpdates = prometheus.NewDesc("outpost_telemetry_target_updates_total", "Values collected from the target.", []string{"target", "source"}, nil)
	descErrors  = prometheus.NewDesc("outpost_telemetry_target_errors_total", "Failed polls or ended streams of the target.", []string{"target", "source"}, nil)
	descLast    = prometheus.NewDesc("outpost_telemetry_target_last_update_timestamp_seconds", "When the target last sent data.", []string{"target", "source"}, nil)
	descRound   = prometheus.NewDesc("outpost_telemetry_target_round_seconds", "How long the target's last polling round took, waiting for a poll slot included (SNMP).", []string{"target", "source"}, nil)
	descOverrun = prometheus.NewDesc("outpost_telemetry_target_overruns_total", "Polling rounds of the target that took its interval or longer, so the next started at once (SNMP).", []string{"target", "source"}, nil)
	descMissing = prometheus.NewDesc("outpost_telemetry_target_missing_objects", "Objects the target stopped returning (deleted paths) or answers with noSuchObject or noSuchInstance (SNMP).", []string{"target", "source"}, nil)
)

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descUp
	ch <- descUpdates
	ch <- descErrors
	ch <- descLast
	ch <- descRound
	ch <- descOverrun
	ch <- descMissing
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.s.Status() {
		up := 0.0
		if st.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, st.Name, st.Source)
		ch <- prometheus.MustNewConstMetric(descUpdates, prometheus.CounterValue, float64(st.Updates), st.Name, st.Source)
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(st.Errors), st.Name, st.Source)
		if !st.LastUpdate.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, float64(st.LastUpdate.UnixNano())/1e9, st.Name, st.Source)
		}
		if st.Source == "snmp" {
			ch <- prometheus.MustNewConstMetric(descRound, prometheus.GaugeValue, st.RoundSeconds, st.Name, st.Source)
			ch <- prometheus.MustNewConstMetric(descOverrun, prometheus.CounterValue, float64(st.Overruns), st.Name, st.Source)
			ch <- prometheus.MustNewConstMetric(descMissing, prometheus.GaugeValue, float64(st.Missing), st.Name, st.Source)
		}
	}
}

// Get reads paths from a gNMI target now (on-demand read); the values are
// returned and also handed to the hub like collected ones.
func (s *Service) Get(ctx context.Context, target string, paths []string) ([]Update, error) {
	s.mu.Lock()
	c, h, node := s.client, s.hub, s.node
	s.mu.Unlock()
	if pc := s.placedClient(target); pc != nil {
		c = pc
	}
	if c == nil && node != nil {
		h, _ := node.Holder(target)
		return nil, fmt.Errorf("target %q is collected by %q, not here: read it there or from the replica here", target, h.Member)
	}
	if c == nil {
		return nil, fmt.Errorf("no gnmi targets: %w", ErrDisabled)
	}
	us, err := c.Get(ctx, target, paths)
	if err == nil && h != nil {
		h.publish(us)
	}
	return us, err
}
