// Package cluster spreads telemetry collection over instances that share
// an etcd. Each instance registers as a member under its lease (with its
// gNMI address and capacity); every target is placed on one member by
// weighted rendezvous hashing; the member it is placed on takes the
// target's lock (an etcd election under the same lease, its value naming
// the holder, its creation revision the epoch) and collects only while its
// lease renewals are confirmed (see fence). The other members follow the
// holder: one gNMI stream per target (its gNMI server's history extension,
// stored points then live ones) into their own store, so a Get, Subscribe
// or query for the target at any instance is served from its replica, or
// passed to the holder while that replica is stale (Divert).
//
// Lock order: Node.mu, then follow.mu; fence.mu is taken alone.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Collector starts and stops this instance's collection of one target.
type Collector interface {
	// Collect starts collecting target under epoch; stop ends it and
	// returns once nothing more is collected.
	Collect(target string, epoch int64) (stop func())
}

// Holder is the instance that holds a target's lock.
type Holder struct {
	Member string `json:"member"`
	GNMI   string `json:"gnmi"`
	Epoch  int64  `json:"epoch"`
}

// Options are what a Node is built from.
type Options struct {
	Cfg       Config // with defaults applied (Config.WithDefaults)
	Targets   []string
	Collector Collector
	Local     Local // the store replicas are written to
	Log       *slog.Logger
	Reg       prometheus.Registerer // nil: no metrics
	Dial      []grpc.DialOption     // how to reach the others' gNMI servers; nil: plaintext
}

// Node is this instance's part in the cluster.
type Node struct {
	cfg     Config
	conns   *conns
	targets []string
	coll    Collector
	local   Local
	log     *slog.Logger
	cli     *clientv3.Client
	fence   *fence
	digest  string // of targets

	mu        sync.Mutex
	drained   bool
	drainRead bool              // the drained flag was read from etcd (at the first registration)
	members   map[string]Member // by name, from etcd
	holders   map[string]Holder // by target, from etcd
	holding   map[string]*task  // targets placed here, each trying to hold or holding
	// released are the holds of targets placed elsewhere since, which may
	// still be giving their lock key up: a new hold of the target waits
	// for its old one, whose key (named by the same lease) it would reuse.
	released  map[string]chan struct{}
	following map[string]*follow
	retiring  map[*follow]struct{}      // follows of a former holder finishing their stream
	writers   map[string]*replicaWriter // by target, shared by its follows
	epochs    map[string]int64          // target → epoch collected now
	// lockKeys is every election key by target, read by the locks watch
	// only (no lock needed).
	lockKeys map[string]map[string]Holder
	starts   slots // replica streams reading stored points
	catchUps slots
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	metrics
}

type task struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns the node; it has no side effects.
func New(o Options) *Node {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: o.Cfg, targets: slices.Clone(o.Targets), coll: o.Collector, local: o.Local, log: log, fence: newFence(),
		members: map[string]Member{}, holders: map[string]Holder{}, holding: map[string]*task{}, released: map[string]chan struct{}{},
		following: map[string]*follow{}, retiring: map[*follow]struct{}{}, writers: map[string]*replicaWriter{},
		epochs: map[string]int64{}, digest: targetsDigest(o.Targets),
		starts: make(slots, startSlots), catchUps: make(slots, catchUpSlots),
		conns: &conns{m: map[string]*sharedConn{}, opts: o.Dial}}
	if len(n.conns.opts) == 0 {
		n.conns.opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	n.metrics = newMetrics(n, o.Reg, log)
	return n
}

// Start connects to etcd and starts membership, placement, holding and
// replication in the background; it fails only when the client cannot be
// built (etcd being down is waited out). advertise, when not empty,
// replaces the configured gNMI address (the server's bound one).
func (n *Node) Start(ctx context.Context, advertise string) error {
	if advertise != "" {
		n.cfg.Advertise = advertise
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: n.cfg.Etcd, DialTimeout: n.cfg.LeaseTTL.Std(),
		DialKeepAliveTime: n.cfg.LeaseTTL.Std(), DialKeepAliveTimeout: n.cfg.LeaseTTL.Std() / 2,
		Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	n.cli = cli
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.mu.Lock()
	n.cancel = cancel
	n.mu.Unlock()
	for _, f := range []func(context.Context){
		n.runLease,
		func(ctx context.Context) { n.watchPrefix(ctx, n.cfg.Prefix+"/members/", n.membersChanged) },
		func(ctx context.Context) { n.watchPrefix(ctx, n.cfg.Prefix+"/locks/", n.locksChanged) },
	} {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); f(runCtx) }()
	}
	return nil
}

// Stop stops collecting and following, resigns the locks, revokes the lease
// and closes the client. It is safe after a failed Start and twice.
func (n *Node) Stop() {
	n.mu.Lock()
	ts := make([]*task, 0, len(n.holding)+len(n.following))
	for t, h := range n.holding {
		h.cancel()
		ts = append(ts, h)
		delete(n.holding, t)
	}
	for t, f := range n.following {
		f.cancel()
		ts = append(ts, &f.task)
		delete(n.following, t)
	}
	for f := range n.retiring {
		f.cancel()
		ts = append(ts, &f.task)
	}
	cancel := n.cancel
	n.cancel = nil
	n.mu.Unlock()
	for _, t := range ts {
		<-t.done
	}
	if _, sess, _ := n.fence.state(); sess != nil && n.cli != nil {
		ctx, c := context.WithTimeout(context.Background(), time.Second)
		_, _ = n.cli.Revoke(ctx, sess.Lease()) // the others take over now rather than after the TTL
		c()
	}
	if cancel != nil {
		cancel()
	}
	n.wg.Wait()
	if n.cli != nil {
		n.cli.Close()
		n.cli = nil
	}
}

func (n *Node) memberKey() string { return n.cfg.Prefix + "/members/" + n.cfg.Name }

// drainKey exists, under no lease, while this instance is drained: the
// drain outlives a restart.
func (n *Node) drainKey() string { return n.cfg.Prefix + "/drained/" + n.cfg.Name }

func (n *Node) lockPrefix(target string) string { return n.cfg.Prefix + "/locks/" + target + "/" }

func (n *Node) self() Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	return Member{Name: n.cfg.Name, GNMI: n.cfg.Advertise, Admin: n.cfg.AdvertiseAdmin, Capacity: n.cfg.Capacity, Drained: n.drained, Targets: n.digest}
}

// register writes this member under lease; the first time, it reads
// whether this instance was drained before it (re)started.
func (n *Node) register(ctx context.Context, lease clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL.Std()/2)
	defer cancel()
	n.mu.Lock()
	read := n.drainRead
	n.mu.Unlock()
	if !read {
		r, err := n.cli.Get(ctx, n.drainKey())
		if err != nil {
			return fmt.Errorf("read the drained flag: %w", err)
		}
		n.mu.Lock()
		n.drained = n.drained || len(r.Kvs) > 0
		n.drainRead = true
		n.mu.Unlock()
	}
	b, _ := json.Marshal(n.self())
	_, err := n.cli.Put(ctx, n.memberKey(), string(b), clientv3.WithLease(lease))
	return err
}

// SetDrained drains this instance (its targets move to the others) or
// takes it back; the flag is kept in etcd, so a restarted instance stays
// drained.
func (n *Node) SetDrained(ctx context.Context, drained bool) error {
	pctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL.Std())
	defer cancel()
	var err error
	if drained {
		_, err = n.cli.Put(pctx, n.drainKey(), time.Now().UTC().Format(time.RFC3339))
	} else {
		_, err = n.cli.Delete(pctx, n.drainKey())
	}
	if err != nil {
		return fmt.Errorf("keep the drained flag in etcd: %w", err)
	}
	n.mu.Lock()
	n.drained, n.drainRead = drained, true
	n.mu.Unlock()
	lease, _, _ := n.fence.state()
	if lease == 0 {
		return errors.New("not a member now (no confirmed lease); the drain applies when it registers")
	}
	return n.register(ctx, lease)
}

func (n *Node) membersChanged(kvs map[string]*mvccpb.KeyValue, _ []string, _ bool) {
	ms := map[string]Member{}
	for _, kv := range kvs {
		var m Member
		if err := json.Unmarshal(kv.Value, &m); err != nil || m.Name == "" {
			continue
		}
		ms[m.Name] = m
	}
	n.mu.Lock()
	n.members = ms
	n.reconcileLocked()
	n.mu.Unlock()
	for _, m := range ms {
		if m.Targets != n.digest {
			n.log.Warn("cluster: a member has other targets configured: targets placed on members that lack them are not collected", "member", m.Name)
		}
	}
}

// locksChanged updates the holders of the targets whose election keys
// changed: each key's value is read once, when it changes, so the cost of
// a change does not grow with the number of targets (a cluster settling
// changes every lock, and every instance sees every change).
func (n *Node) locksChanged(kvs map[string]*mvccpb.KeyValue, keys []string, reset bool) {
	if reset {
		n.lockKeys = map[string]map[string]Holder{}
	}
	touched := map[string]bool{}
	for _, k := range keys {
		target, _, ok := strings.Cut(strings.TrimPrefix(k, n.cfg.Prefix+"/locks/"), "/")
		if !ok {
			continue
		}
		touched[target] = true
		ks := n.lockKeys[target]
		kv := kvs[k]
		var m Member
		if kv == nil || json.Unmarshal(kv.Value, &m) != nil {
			delete(ks, k)
			continue
		}
		if ks == nil {
			ks = map[string]Holder{}
			n.lockKeys[target] = ks
		}
		ks[k] = Holder{Member: m.Name, GNMI: m.GNMI, Epoch: kv.CreateRevision}
	}
	lease, sess, _ := n.fence.state()
	n.mu.Lock()
	defer n.mu.Unlock()
	if reset {
		n.holders = map[string]Holder{}
	}
	for t := range touched {
		if sess != nil {
			n.sweepLocked(t, fmt.Sprintf("%s%x", n.lockPrefix(t), lease), sess)
		}
		// The holder is the key created first (the lowest revision).
		var first Holder
		for _, h := range n.lockKeys[t] {
			if first.Epoch == 0 || h.Epoch < first.Epoch {
				first = h
			}
		}
		if first.Epoch == 0 {
			delete(n.holders, t)
			delete(n.lockKeys, t)
		} else {
			n.holders[t] = first
		}
	}
	n.reconcileLocked()
}

// reconcileLocked starts holding the targets placed here, stops holding the
// others, and follows each target another member holds.
func (n *Node) reconcileLocked() {
	if n.cancel == nil {
		return // stopped
	}
	ms := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		ms = append(ms, m)
	}
	_, registered := n.members[n.cfg.Name]
	want := map[string]bool{}
	for _, t := range n.targets {
		if p, ok := Place(t, ms); ok && p == n.cfg.Name && registered {
			want[t] = true
		}
	}
	for t, h := range n.holding {
		if !want[t] {
			h.cancel()
			delete(n.holding, t)
			n.released[t] = h.done
		}
	}
	for t := range want {
		if n.holding[t] == nil {
			ctx, cancel := context.WithCancel(context.Background())
			h := &task{cancel: cancel, done: make(chan struct{})}
			n.holding[t] = h
			prev := n.released[t]
			delete(n.released, t)
			go func() {
				defer close(h.done)
				if prev != nil {
					select {
					case <-prev:
					case <-ctx.Done():
						return
					}
				}
				n.hold(ctx, t)
			}()
		}
	}
	for _, t := range n.targets {
		h, ok := n.holders[t]
		f := n.following[t]
		if ok && h.Member != n.cfg.Name && h.GNMI != "" {
			if f != nil && f.holder == h {
				continue
			}
			if f != nil {
				n.retireLocked(f)
			}
			n.following[t] = n.startFollow(t, h)
		} else if f != nil {
			n.retireLocked(f)
			delete(n.following, t)
		}
	}
}

// hold campaigns for target's lock while it is placed here (ctx), and
// collects while the lock is held under a confirmed lease.
func (n *Node) hold(ctx context.Context, target string) {
	for ctx.Err() == nil {
		lease, sess, changed := n.fence.state()
		if lease == 0 || sess == nil {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			continue
		}
		e := concurrency.NewElection(sess, strings.TrimSuffix(n.lockPrefix(target), "/"))
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
				cancel()
			case <-cctx.Done():
			}
		}()
		b, _ := json.Marshal(n.self())
		err := e.Campaign(cctx, string(b))
		if err != nil {
			cancel()
			// A campaign cancelled while its put was in flight may have left
			// its key behind (Campaign returns without resigning then); it
			// would block every later candidate while this lease lives.
			_ = n.dropKey(sess, fmt.Sprintf("%s%x", n.lockPrefix(target), sess.Lease()))
			if ctx.Err() == nil {
				sleep(ctx, 200*time.Millisecond)
			}
			continue
		}
		caught := make(chan struct{})
		go func() { defer close(caught); n.catchUp(cctx, target) }()
		n.serve(cctx, lease, target, e.Rev())
		cancel()
		<-caught
		if ctx.Err() != nil { // placed elsewhere or stopping: resign
			_ = n.dropKey(sess, e.Key())
		}
	}
}

// sweepLocked gives up this instance's lock key of target when the locks
// watch shows it while no hold of target runs here and none is still
// giving its key up: the put of a cancelled campaign can land in etcd after
// the delete that cleaned up behind it, and the key would block every other
// candidate while this instance lives. A hold of target placed here
// meanwhile waits for the sweep, as for a released hold.
func (n *Node) sweepLocked(target, key string, sess *concurrency.Session) {
	if _, ok := n.lockKeys[target][key]; !ok {
		return
	}
	if _, held := n.holding[target]; held {
		return
	}
	if prev := n.released[target]; prev != nil {
		select {
		case <-prev:
		default:
			return // its hold is still giving the key up
		}
	}
	done := make(chan struct{})
	n.released[target] = done
	go func() {
		defer close(done)
		if n.dropKey(sess, key) { // else the watch had not shown its hold's delete yet
			n.log.Info("cluster: dropped a lock key no hold owned", "target", target, "key", key)
		}
	}()
}

// dropKey deletes this instance's lock key of a target (a resignation, or
// what a campaign that did not win left), trying again until it is gone
// or its lease ends with the session: a key left behind would block every
// later candidate for the target while this instance lives.
// It reports whether the delete found the key.
func (n *Node) dropKey(sess *concurrency.Session, key string) bool {
	for {
		dctx, c := context.WithTimeout(context.Background(), n.cfg.LeaseTTL.Std()/2)
		r, err := n.cli.Delete(dctx, key)
		c()
		if err == nil {
			return r.Deleted > 0
		}
		n.log.Warn("cluster: delete a lock key left by a campaign; trying again", "key", key, "err", err)
		select {
		case <-sess.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serve collects target under epoch while the fence holds lease valid,
// until ctx ends (placed elsewhere, stopped, or the session ended).
func (n *Node) serve(ctx context.Context, lease clientv3.LeaseID, target string, epoch int64) {
	for ctx.Err() == nil {
		l, _, changed := n.fence.state()
		if l != lease {
			select {
			case <-ctx.Done():
			case <-changed:
			}
			continue
		}
		n.log.Info("cluster: collecting", "target", target, "epoch", epoch)
		n.setEpoch(target, epoch) // replicas may follow from now: their streams get what is collected
		stop := n.coll.Collect(target, epoch)
		n.mCollecting.Inc()
		for n.fence.valid(lease) && ctx.Err() == nil {
			_, _, changed = n.fence.state()
			if !n.fence.valid(lease) {
				break
			}
			select {
			case <-ctx.Done():
			case <-changed:
			}
		}
		n.setEpoch(target, 0) // no new replica streams: those open end after the last points
		stop()
		n.mCollecting.Dec()
		n.log.Info("cluster: collection stopped", "target", target, "epoch", epoch)
	}
}

func (n *Node) setEpoch(target string, epoch int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if epoch == 0 {
		delete(n.epochs, target)
	} else {
		n.epochs[target] = epoch
	}
}

// Epoch is the epoch under which this instance collects target now (0:
// it does not).
func (n *Node) Epoch(target string) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.epochs[target]
}

// Holder returns the holder of target as last seen in etcd.
func (n *Node) Holder(target string) (Holder, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.holders[target]
	return h, ok
}

// Name is this instance's name in the cluster.
func (n *Node) Name() string { return n.cfg.Name }
