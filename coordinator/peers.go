package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/placement"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/internal/ratelog"
)

// The peer environment (docs/placement.md, "The peer environment"): other
// Outpost instances run calls of this one. Each peer is reached at its
// admin API with its admin token (admin.MountPeer's routes). Its health
// and load are read every placement.peers.refresh, not per call, and are
// what the rules see as envs['peer:NAME'] and envs['peer'] (the healthy
// peer with the most free workers).
//
// A call placed on a peer names its task version by the module's digest
// and carries a manifest of it (its objects as sha256:HEX) and the call's
// labels, which the calls it makes there inherit; a peer that
// lacks the task answers with the objects it lacks, which are sent
// content-addressed before the call is sent again. The peer runs the call
// in its own scheduler and runtime, never placing it again. A peer that
// cannot be reached before it took the call, or that answers with an
// error, is marked down until its next refresh and the call is placed
// again. A peer that disappears while it runs the call leaves the call
// as a crash would: an idempotent call is placed again (run elsewhere),
// an at-most-once one finishes interrupted.

// peerSource is the source kind of calls run for a peer.
const peerSource = "peer"

// fromPeer marks a task version deployed for a peer's call.
const fromPeer = "peer"

// peers is this node's view of its peers: the configured ones, and the
// telemetry cluster's members that advertise an admin URL
// (placement.peers.cluster), found again at every refresh.
type peers struct {
	c       *Coordinator
	static  []*peer
	list    atomic.Pointer[[]*peer] // static, then the cluster's
	up      *prometheus.GaugeVec
	stop    context.CancelFunc
	done    chan struct{}
	dialLog ratelog.Limiter // cluster members that cannot be dialed

	mu   sync.Mutex
	pkgs map[string]*peerPackage // by task, for its module of the moment
}

// peer is one other instance.
type peer struct {
	name, url string
	client    *admin.Client
	state     atomic.Pointer[peerState] // nil until its first refresh
	// held is what it is known to hold of this node's code objects, and
	// meter the link to it, measured by status reads and objects sent:
	// its expected provisioning time (provisiontime.go).
	held  heldObjects
	meter remote.LinkMeter
}

// peerState is what the last refresh (or a failed call) found.
type peerState struct {
	ok     bool
	status admin.PeerStatus
}

// peerPackage is a task version as a peer receives it: its module's
// digest, a manifest naming every object by digest, and where each
// object is on this node.
type peerPackage struct {
	module   string // hex
	manifest []byte
	objects  map[string]string // hex digest → file
	// sized lists the objects in manifest order (module, libraries,
	// files) with their sizes.
	sized []remote.PackedObject
}

func newPeers(c *Coordinator) *peers {
	p := &peers{c: c, pkgs: map[string]*peerPackage{}, dialLog: ratelog.Limiter{Every: time.Minute},
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outpost_placement_peer_up",
			Help: "Whether a peer answered its last status read and takes calls (1) or not (0), by peer.",
		}, []string{"peer"})}
	c.reg.MustRegister(p.up)
	return p
}

// start dials the configured peers and, every placement.peers.refresh
// until close, finds the cluster's and reads each one's state.
func (p *peers) start(context.Context) error {
	cfg := p.c.cfg.Load().Placement.Peers
	for _, pc := range cfg.List {
		cl, err := admin.Dial(admin.ClientOptions{Addr: pc.URL, TokenFile: pc.TokenFile, CAFile: pc.CAFile, CertFile: pc.CertFile, KeyFile: pc.KeyFile})
		if err != nil {
			return fmt.Errorf("peer %s: %w", pc.Name, err)
		}
		p.static = append(p.static, &peer{name: pc.Name, url: pc.URL, client: cl})
		p.up.WithLabelValues(pc.Name).Set(0)
	}
	list := slices.Clone(p.static)
	p.list.Store(&list)
	if len(p.static) == 0 && !cfg.Cluster.Enabled() {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.stop, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		every := cfg.Refresh.Std()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			p.discover()
			var wg sync.WaitGroup
			for _, pr := range p.all() {
				wg.Go(func() { p.refresh(ctx, pr, every) })
			}
			wg.Wait()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

func (p *peers) close(context.Context) error {
	if p.stop != nil {
		p.stop()
		<-p.done
	}
	return nil
}

// all lists the peers of the moment.
func (p *peers) all() []*peer {
	if l := p.list.Load(); l != nil {
		return *l
	}
	return nil
}

// discover makes the list the configured peers and the telemetry
// cluster's other members that advertise an admin URL, keeping the state
// of those already known.
func (p *peers) discover() {
	cfg := p.c.cfg.Load().Placement.Peers.Cluster
	node := p.c.tele.Cluster()
	if !cfg.Enabled() || node == nil {
		return
	}
	st := node.Status()
	known := map[string]*peer{}
	for _, pr := range p.all() {
		known[pr.name] = pr
	}
	next := slices.Clone(p.static)
	taken := map[string]bool{}
	for _, pr := range p.static {
		taken[pr.name] = true
	}
	for _, m := range st.Members {
		if m.Name == st.Name || m.Admin == "" || taken[m.Name] {
			continue
		}
		taken[m.Name] = true
		if pr := known[m.Name]; pr != nil && pr.url == m.Admin {
			next = append(next, pr)
			continue
		}
		cl, err := admin.Dial(admin.ClientOptions{Addr: m.Admin, TokenFile: cfg.TokenFile, CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile})
		if err != nil {
			if n, ok := p.dialLog.Allow(time.Now()); ok {
				p.c.log.Warn("cluster member not usable as a peer", "peer", m.Name, "url", m.Admin, "err", err, "not_logged", n)
			}
			continue
		}
		p.c.log.Info("peer found in the cluster", "peer", m.Name, "url", m.Admin)
		next = append(next, &peer{name: m.Name, url: m.Admin, client: cl})
		p.up.WithLabelValues(m.Name).Set(0)
	}
	for name := range known {
		if !taken[name] {
			p.c.log.Info("peer left the cluster", "peer", name)
			p.up.DeleteLabelValues(name)
		}
	}
	p.list.Store(&next)
}

// refresh reads pr's status, within timeout.
func (p *peers) refresh(ctx context.Context, pr *peer, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	st, err := pr.client.PeerStatus(ctx)
	if rtt := time.Since(start); err == nil {
		pr.meter.Measure(0, rtt, rtt)
	}
	if err = transportErr(err); err != nil {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			p.down(pr, err)
		}
		return
	}
	prev := pr.state.Swap(&peerState{ok: true, status: st})
	if prev == nil || !prev.ok {
		p.c.log.Info("peer up", "peer", pr.name, "workers", st.Workers, "running", st.Running, "queued", st.Queued)
	}
	p.up.WithLabelValues(pr.name).Set(boolGauge(!st.Draining))
}

// down marks pr unreachable until its next refresh.
func (p *peers) down(pr *peer, err error) {
	prev := pr.state.Swap(&peerState{})
	if prev == nil || prev.ok {
		p.c.log.Warn("peer down: calls placed there go elsewhere until it answers again", "peer", pr.name, "err", err)
	}
	p.up.WithLabelValues(pr.name).Set(0)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// env is what the rules see of pr.
func (pr *peer) env() placement.Env {
	s := pr.state.Load()
	if s == nil || !s.ok {
		return placement.Env{}
	}
	st := s.status
	return placement.Env{Healthy: !st.Draining, Running: int64(st.Running), Capacity: int64(st.Workers),
		Load: float64(st.Running) / float64(max(st.Workers, 1)), Free: int64(max(st.Workers-st.Running, 0)), Queued: int64(st.Queued)}
}

// addEnvs adds each peer's entry (peer:NAME) and the best one's (peer) to
// m, for a call of task t.
func (p *peers) addEnvs(m map[string]placement.Env, t tasks.Task) {
	var best placement.Env
	var pkg *peerPackage
	if p.sendable(t) {
		pkg, _ = p.pkg(t) // a task whose objects cannot be read here: none sent, none to count
	}
	for _, pr := range p.all() {
		e := pr.env()
		if pkg != nil {
			e.ProvisionSeconds = pr.held.provisionSeconds(pkg.sized, pr.meter.Link())
		}
		m[placement.PeerPrefix+pr.name] = e
		if e.Healthy && (!best.Healthy || better(e, best)) {
			best = e
		}
	}
	m[placement.Peer] = best
}

// better says whether a peer with a takes a call before one with b: more
// free workers, then a shorter queue.
func better(a, b placement.Env) bool {
	if a.Free != b.Free {
		return a.Free > b.Free
	}
	return a.Queued < b.Queued
}

// pick returns the peer of environment env: peer:NAME, or the best
// healthy one for peer; nil if it is not healthy (or not known).
func (p *peers) pick(env string) *peer {
	var (
		found *peer
		best  placement.Env
	)
	for _, pr := range p.all() {
		e := pr.env()
		switch {
		case !e.Healthy:
		case env == placement.PeerPrefix+pr.name:
			return pr
		case env == placement.Peer && (found == nil || better(e, best)):
			found, best = pr, e
		}
	}
	return found
}

// sendable says whether t's code can be sent to a peer: a module file (a
// builtin module is the peer's own to have).
func (p *peers) sendable(t tasks.Task) bool {
	return len(p.all()) > 0 && t.Module != "" && !strings.HasPrefix(t.Module, "builtin:")
}

// run runs c of task t on the peer of environment env and returns the
// result and that peer's environment (peer:NAME). done is false when the
// call is to be placed again: no such peer is healthy, the peer did not
// take it, or (idempotent calls) it disappeared while it ran.
func (p *peers) run(ctx context.Context, c *calls.Call, t tasks.Task, env string) (calls.Result, string, bool) {
	pr := p.pick(env)
	if pr == nil {
		return calls.Result{}, env, false
	}
	res, done := p.runOn(ctx, pr, c, t)
	return res, placement.PeerPrefix + pr.name, done
}

// runOn is run on the peer pr.
func (p *peers) runOn(ctx context.Context, pr *peer, c *calls.Call, t tasks.Task) (res calls.Result, done bool) {
	pkg, err := p.pkg(t)
	if err != nil {
		return calls.Result{Status: calls.StatusFailed, Error: fmt.Sprintf("peer %s: %v", pr.name, err)}, true
	}
	pc := admin.PeerCall{ID: c.ID, Caller: p.c.cfg.Load().Node.ID, Task: c.Task, Digest: remote.DigestPrefix + pkg.module,
		Manifest: pkg.manifest, Input: c.Input, IdempotencyKey: c.IdempotencyKey, Attempt: c.Attempt, Labels: c.Labels}
	if dl, ok := ctx.Deadline(); ok {
		pc.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
	}
	if r := c.Resume; r != nil {
		pc.Resume = &admin.PeerResume{State: r.State, Waits: r.Waits}
	}
	call := func() (calls.Result, error) {
		res, err := pr.client.PeerCall(ctx, pc)
		return res, transportErr(err)
	}
	res, err = call()
	if me, ok := errors.AsType[*admin.PeerMissingError](err); ok {
		pr.held.add(pkg.refs()...) // it holds all but what it lacks
		pr.held.remove(me.Missing...)
		err = p.send(ctx, pr, pkg, me.Missing)
		if err == nil {
			res, err = call()
		} else if ctx.Err() == nil {
			p.down(pr, err) // the call was not sent
			return calls.Result{}, false
		}
	}
	switch {
	case err == nil:
		pr.held.add(pkg.refs()...) // it ran the task: it holds its objects
		return res, true
	case ctx.Err() != nil:
		return ctxResult(ctx, "on peer "+pr.name), true
	case !sent(err):
		p.down(pr, err)
		return calls.Result{}, false
	}
	p.down(pr, err)
	if c.Effect == calls.Idempotent {
		p.c.log.Warn("peer lost while it ran a call: placing the idempotent call again", "peer", pr.name, "call", c.ID, "task", c.Task, "err", err)
		return calls.Result{}, false
	}
	return calls.Result{Status: calls.StatusInterrupted, Error: fmt.Sprintf(
		"peer %s stopped answering while it ran the call (%v); at-most-once calls are not run again", pr.name, err)}, true
}

// sent says whether a failed peer call may have run on the peer: any
// error but one in dialing it, or an answer that it did not run it (it
// refused the call or the token, or lacks objects still).
func sent(err error) bool {
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "dial" {
		return false
	}
	_, refused := errors.AsType[*admin.PeerAnswerError](err)
	return !refused && !errors.Is(err, admin.ErrUnauthorized) && !errors.Is(err, admin.ErrPeerMissing)
}

// transportErr is the part of a failed peer request's error that says
// what went wrong on the way (the admin client's adds advice for people
// at a terminal).
func transportErr(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue
	}
	return err
}

// ctxResult is how a call ends whose context ended.
func ctxResult(ctx context.Context, where string) calls.Result {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return calls.Result{Status: calls.StatusTimeout, Error: "deadline passed " + where}
	}
	return calls.Result{Status: calls.StatusCanceled, Error: "canceled " + where}
}

// send sends the objects a peer lacks (digests sha256:HEX) from pkg.
func (p *peers) send(ctx context.Context, pr *peer, pkg *peerPackage, missing []string) error {
	for _, ref := range missing {
		path, ok := pkg.objects[strings.TrimPrefix(ref, remote.DigestPrefix)]
		if !ok {
			return fmt.Errorf("peer %s asks for %s, which the task does not name", pr.name, ref)
		}
		if err := p.sendFile(ctx, pr, ref, path); err != nil {
			return err
		}
		pr.held.add(ref)
	}
	p.c.log.Info("task sent to a peer", "peer", pr.name, "objects", len(missing))
	return nil
}

func (p *peers) sendFile(ctx context.Context, pr *peer, ref, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("send %s to peer %s: %w", ref, pr.name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("send %s to peer %s: %w", ref, pr.name, err)
	}
	start := time.Now()
	if err := pr.client.PutPeerObject(ctx, ref, f, st.Size()); err != nil {
		return transportErr(err)
	}
	// The answer comes once every byte is there: the round trip last
	// measured is the part of it that is not the transfer.
	pr.meter.Measure(st.Size(), pr.meter.Link().RTT, time.Since(start))
	return nil
}

// refs lists the package's objects, "sha256:HEX" each.
func (pk *peerPackage) refs() []string {
	out := make([]string, len(pk.sized))
	for i, o := range pk.sized {
		out[i] = o.Digest
	}
	return out
}

// pkg returns t's package for peers, built once per module.
func (p *peers) pkg(t tasks.Task) (*peerPackage, error) {
	module, ok := p.c.moduleOf(t.Name)
	if !ok {
		return nil, fmt.Errorf("task %s is not loaded", t.Name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if pk := p.pkgs[t.Name]; pk != nil && pk.module == module {
		return pk, nil
	}
	st, err := os.Stat(t.Module)
	if err != nil {
		return nil, fmt.Errorf("module of %s: %w", t.Name, err)
	}
	pk := &peerPackage{module: module, objects: map[string]string{module: t.Module},
		sized: []remote.PackedObject{{Digest: remote.DigestPrefix + module, Size: st.Size()}}}
	m := tasks.Manifest{ABI: t.ABI, Limits: t.Limits, Permissions: t.Permissions, FreshInstance: t.FreshInstance,
		Module: remote.DigestPrefix + module}
	object := func(path string) (string, error) {
		d, size, err := fileDigest(path)
		if err != nil {
			return "", err
		}
		pk.objects[d] = path
		pk.sized = append(pk.sized, remote.PackedObject{Digest: remote.DigestPrefix + d, Size: size})
		return remote.DigestPrefix + d, nil
	}
	for _, l := range t.Libraries {
		ref, err := object(l.Module)
		if err != nil {
			return nil, fmt.Errorf("library %s: %w", l.Name, err)
		}
		m.Libraries = append(m.Libraries, tasks.Library{Name: l.Name, Module: ref})
	}
	for _, f := range t.Files {
		ref, err := object(f.Source)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Path, err)
		}
		m.Files = append(m.Files, tasks.File{Path: f.Path, Source: ref})
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", t.Name, err)
	}
	pk.manifest = b
	p.pkgs[t.Name] = pk
	return pk, nil
}
