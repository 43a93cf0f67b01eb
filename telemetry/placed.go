package telemetry

import (
	"context"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/telemetry/cluster"
	"github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/snmp"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// In a cluster, each target is collected by the instance that holds its
// lock: the node calls Collect when this instance takes a target and the
// returned stop when it must let go. Each held target has its own gNMI
// client or SNMP poller; the trap receiver is the collector of the target
// traps are recorded under, so it listens on one instance only. What other
// instances hold arrives as replicas (Replicate), stored and served but
// neither published to MQTT nor triggering tasks, which run on the holder.
//
// The node's calls (Collect, its stop, Newest, Times, Replicate) read s.hub,
// s.db, s.server and s.traps without Service.mu: they are set before the node starts and
// cleared after it stopped, and Stop holds Service.mu while it waits for
// the node.

var (
	_ cluster.Collector = (*Service)(nil)
	_ cluster.Local     = (*Service)(nil)
)

// placed is a target collected here under an epoch.
type placed struct {
	epoch  int64
	client *gnmi.Client
	poller *snmp.Poller
}

func (p placed) status() []model.TargetStatus {
	switch {
	case p.client != nil:
		return p.client.Status()
	case p.poller != nil:
		return p.poller.Status()
	}
	return nil // the trap receiver
}

// Collect starts collecting one configured target; stop returns once its
// collector has stopped.
func (s *Service) Collect(target string, epoch int64) (stop func()) {
	h := s.hub
	p := placed{epoch: epoch}
	var run func(context.Context)
	var err error
	log := s.log.With("target", target, "epoch", epoch)
	if g, ok := s.gnmiTarget(target); ok {
		c := s.cfg.GNMI
		c.Targets = []gnmi.Target{g}
		if p.client, err = gnmi.New(c, h.publish, log.With("part", "gnmi")); err == nil {
			run = p.client.Run
		}
	} else if t, ok := s.snmpTarget(target); ok {
		c := s.cfg.SNMP
		c.Targets = []snmp.Target{t}
		if p.poller, err = snmp.NewPoller(c, h.publish, log.With("part", "snmp")); err == nil {
			run = p.poller.Run
		}
	} else if target == s.cfg.SNMP.Traps.Target && s.traps != nil {
		return s.receiveTraps(target, p)
	} else {
		err = fmt.Errorf("no target %q configured", target)
	}
	if err != nil {
		s.log.Error("telemetry: cannot collect a placed target", "target", target, "err", err)
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.place(target, p)
	go func() { defer close(done); run(ctx) }()
	return func() {
		cancel()
		<-done
		s.unplace(target)
	}
}

// receiveTraps listens for traps while this instance holds their target.
func (s *Service) receiveTraps(target string, p placed) (stop func()) {
	errc, err := s.traps.Listen(s.cfg.SNMP.Traps.Listen)
	if err != nil {
		s.log.Error("telemetry: cannot receive traps", "err", err)
		return func() {}
	}
	s.place(target, p)
	return func() {
		s.traps.Close()
		<-errc
		s.unplace(target)
	}
}

func (s *Service) place(target string, p placed) {
	s.placedMu.Lock()
	defer s.placedMu.Unlock()
	s.placed[target] = p
}

// unplace forgets a target whose collector stopped; the replicas' streams
// of it end after its last points.
func (s *Service) unplace(target string) {
	s.placedMu.Lock()
	delete(s.placed, target)
	s.placedMu.Unlock()
	s.server.Released(target)
}

func (s *Service) gnmiTarget(name string) (gnmi.Target, bool) {
	for _, t := range s.cfg.GNMI.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return gnmi.Target{}, false
}

func (s *Service) snmpTarget(name string) (snmp.Target, bool) {
	for _, t := range s.cfg.SNMP.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return snmp.Target{}, false
}

// targetNames lists every configured target, gNMI then SNMP, then the
// one traps are recorded under when the receiver is on.
func (c Config) targetNames() []string {
	var out []string
	for _, t := range c.GNMI.Targets {
		out = append(out, t.Name)
	}
	for _, t := range c.SNMP.Targets {
		out = append(out, t.Name)
	}
	if c.SNMP.Traps.Listen != "" {
		out = append(out, c.SNMP.Traps.Target)
	}
	return out
}

// placedStatus is the state of the targets collected here.
func (s *Service) placedStatus() []model.TargetStatus {
	s.placedMu.Lock()
	defer s.placedMu.Unlock()
	var out []model.TargetStatus
	for _, p := range s.placed {
		out = append(out, p.status()...)
	}
	return out
}

// placedClient is the gNMI client of target when it is collected here.
func (s *Service) placedClient(target string) *gnmi.Client {
	s.placedMu.Lock()
	defer s.placedMu.Unlock()
	return s.placed[target].client
}

// Newest is the newest stored timestamp of each of target's series.
func (s *Service) Newest(target string) map[string]int64 {
	out := map[string]int64{}
	for _, u := range s.db.Latest(target, model.MustPattern("/...")) {
		out[u.Path] = max(out[u.Path], u.Time)
	}
	return out
}

// Times returns the timestamps of the points of target's series path
// stored in [from, to].
func (s *Service) Times(target, path string, from, to int64) map[int64]bool {
	out := map[int64]bool{}
	pat, err := model.ParsePattern(path)
	if err != nil {
		return out
	}
	ss, err := s.db.Query(context.Background(), tsdb.Query{Target: target, Path: pat, Since: time.Unix(0, from), Until: time.Unix(0, to)})
	if err != nil {
		return out
	}
	for _, se := range ss {
		for _, p := range se.Points {
			out[p.Time.UnixNano()] = true
		}
	}
	return out
}

// Replicate stores what a target's holder collected: into the store and
// the gNMI server's cache.
func (s *Service) Replicate(us []model.Update) {
	if err := s.db.Append(us); err != nil {
		s.log.Warn("telemetry replica append", "err", err)
	}
	s.server.Update(us)
}

// Cluster returns the cluster node, nil when this instance is not clustered
// or not started.
func (s *Service) Cluster() *cluster.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node
}
