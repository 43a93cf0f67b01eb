package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"

	tgnmi "github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Local is this instance's store, where replicas are kept.
type Local interface {
	// Newest returns the newest stored timestamp of each of target's
	// series, by path.
	Newest(target string) map[string]int64
	// Times returns the timestamps of the points of target's series path
	// stored in [from, to].
	Times(target, path string, from, to int64) map[int64]bool
	// Replicate stores updates copied from a target's holder (the store and
	// the gNMI server's cache, not MQTT or triggers: those run on the
	// holder).
	Replicate(us []model.Update)
}

// settle is how far before its newest copied point a replica resumes: a
// point of another series stamped earlier may have reached the holder
// later.
const settle = time.Second

// follow copies one target from its holder over one gNMI stream at a
// time: the holder's stored points from where the replica stopped, then
// its live ones (gnmiserver's follow).
type follow struct {
	task
	holder Holder

	mu      sync.Mutex
	live    bool      // the stream is past the holder's stored points
	down    time.Time // when the stream was last live (zero: never)
	latency time.Duration
	points  uint64
	err     string
	retired bool // the holder changed: finish the stream, never reconnect
}

func (n *Node) startFollow(target string, h Holder) *follow {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follow{task: task{cancel: cancel, done: make(chan struct{})}, holder: h}
	w := n.writerLocked(target)
	go func() {
		defer close(f.done)
		n.replicate(ctx, target, f, w)
		n.mu.Lock()
		delete(n.retiring, f)
		n.releaseWriterLocked(target)
		n.mu.Unlock()
	}()
	return f
}

// retireLocked lets f finish its stream (the holder it follows ends it
// once it stopped collecting, after its last points: a planned move loses
// none) but not reconnect; it is cut after the lease TTL.
func (n *Node) retireLocked(f *follow) {
	f.mu.Lock()
	f.retired = true
	f.mu.Unlock()
	n.retiring[f] = struct{}{}
	time.AfterFunc(n.cfg.LeaseTTL.Std(), f.cancel)
}

// replicate follows the holder until ctx ends or, once retired, its
// stream ends: each stream starts settle before the newest point copied
// (nothing at first: everything the holder kept), so a reconnect or a
// restart resumes without a gap the holder still has; w drops what was
// copied already.
func (n *Node) replicate(ctx context.Context, target string, f *follow, w *replicaWriter) {
	conn, err := n.conns.get(f.holder.GNMI)
	if err != nil {
		f.setErr(err)
		return
	}
	defer n.conns.put(f.holder.GNMI)
	gc := gpb.NewGNMIClient(conn)
	for !f.isRetired() {
		retry := n.cfg.ReplicaInterval.Std()
		// The stored part of a stream is the costly one (a store read at
		// the holder, writes here): at most startSlots at once.
		release, ok := n.starts.acquire(ctx)
		if !ok {
			return
		}
		from := w.resumeFrom()
		err := readStream(ctx, gc, target, f.holder.Epoch, from, math.MaxInt64, func(us []model.Update, live bool) {
			if live {
				release()
			}
			kept := w.write(us)
			n.mReplicated.Add(float64(kept))
			now := time.Now()
			f.mu.Lock()
			f.points += uint64(kept)
			f.live = f.live || live
			if len(us) > 0 && f.live {
				f.latency = now.Sub(time.Unix(0, us[len(us)-1].Time))
				n.mLatency.Observe(f.latency.Seconds())
			}
			if f.live {
				f.err = ""
			}
			f.mu.Unlock()
		})
		release()
		f.mu.Lock()
		if f.live {
			f.down = time.Now()
		}
		f.live = false
		f.mu.Unlock()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil: // the holder stopped collecting: it resumes or is replaced
		case errors.Is(err, errNotHolder):
			// etcd names it the holder but it does not collect (yet, or
			// again after a renewal it could not confirm): ask again soon.
			n.mRefused.Inc()
			f.setErr(err)
			retry = min(retry, refusedRetry)
		default:
			n.mReplicaErrors.Inc()
			f.setErr(err)
		}
		if !f.isRetired() {
			sleep(ctx, retry)
		}
	}
}

// lag is how far the replica is behind the holder: while its stream is
// live, the time from the last point's timestamp to its arrival here;
// otherwise the time since the stream was last live (-1: never).
func (f *follow) lag() (seconds float64, live bool, points uint64, err string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live {
		return f.latency.Seconds(), true, f.points, f.err
	}
	return secondsSince(f.down), false, f.points, f.err
}

func (f *follow) isRetired() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.retired
}

func (f *follow) setErr(err error) {
	f.mu.Lock()
	f.err = err.Error()
	f.mu.Unlock()
}

// startSlots bounds the replica streams of an instance reading their
// holder's stored points at once, and catchUpSlots its catch-ups: when an
// instance starts, or takes over a dead one's targets, hundreds of them
// would otherwise start together, each a store read at another instance,
// and starve the lease renewals that let it collect.
const (
	startSlots   = 8
	catchUpSlots = 4
)

// slots is a counting semaphore.
type slots chan struct{}

// acquire takes a slot, waiting while all are taken (false: ctx ended);
// release gives it back and may be called more than once.
func (s slots) acquire(ctx context.Context) (release func(), ok bool) {
	select {
	case s <- struct{}{}:
	case <-ctx.Done():
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { <-s }) }, true
}

// refusedRetry is how soon a replica asks again a holder that refused it.
const refusedRetry = 200 * time.Millisecond

// errNotHolder is a holder's answer under another epoch than the one
// followed: it no longer holds the target (or not yet again).
var errNotHolder = errors.New("the instance answered under another epoch: it does not hold the target now")

// readStream reads target's points in [from, to) from a gNMI server with
// the history extension: got receives the stored ones, then, when to is
// still ahead (a range followed), after the sync response (live true) the
// live ones. When epoch is not 0 the stream's header must carry it (see
// gnmiserver.EpochHeader): that server collects target under it, and ends
// the stream (nil here) when it stops.
func readStream(ctx context.Context, gc gpb.GNMIClient, target string, epoch, from, to int64, got func(us []model.Update, live bool)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := gc.Subscribe(ctx)
	if err != nil {
		return fmt.Errorf("subscribe to holder: %w", err)
	}
	req := &gpb.SubscribeRequest{
		Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
			Prefix: &gpb.Path{Target: target}, Mode: gpb.SubscriptionList_STREAM, UpdatesOnly: true,
			Encoding: gpb.Encoding_PROTO, Subscription: []*gpb.Subscription{{Path: &gpb.Path{}}},
		}},
		Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{
			Request: &gnmi_ext.History_Range{Range: &gnmi_ext.TimeRange{Start: from, End: to}}}}}},
	}
	if err := st.Send(req); err != nil {
		return fmt.Errorf("subscribe to holder: %w", err)
	}
	md, err := st.Header()
	if err != nil {
		return fmt.Errorf("replicate from holder: %w", err)
	}
	if e := md.Get(gnmiserver.EpochHeader); epoch != 0 && (len(e) != 1 || e[0] != strconv.FormatInt(epoch, 10)) {
		return fmt.Errorf("%w (epoch %v, want %d)", errNotHolder, e, epoch)
	}
	live := false
	var us []model.Update
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("replicate from holder: %w", err)
		}
		if r.GetSyncResponse() {
			live = true
			got(nil, true)
			continue
		}
		if n := r.GetUpdate(); n != nil {
			us = tgnmi.Updates(us[:0], target, n)
			got(us, live)
		}
	}
}

// replicaWriter stores one target's copied points, each once: the streams
// of an old and a new holder, a resumed stream and a new holder's catch-up
// overlap. A point newer than its series' newest is new; an older one is
// looked up in the store.
type replicaWriter struct {
	local Local
	refs  int // follows using it (under Node.mu)

	mu     sync.Mutex
	last   map[string]int64 // path → newest stored timestamp
	newest int64
}

// writerLocked returns target's writer, read from the store when no
// follow of target has one.
func (n *Node) writerLocked(target string) *replicaWriter {
	w := n.writers[target]
	if w == nil {
		w = &replicaWriter{local: n.local, last: map[string]int64{}}
		for path, ts := range n.local.Newest(target) {
			w.last[path] = ts
			w.newest = max(w.newest, ts)
		}
		n.writers[target] = w
	}
	w.refs++
	return w
}

func (n *Node) releaseWriterLocked(target string) {
	if w := n.writers[target]; w != nil {
		if w.refs--; w.refs == 0 {
			delete(n.writers, target)
		}
	}
}

// resumeFrom is where a new stream starts: settle before the newest point
// stored (0, everything the holder kept, when there is none).
func (w *replicaWriter) resumeFrom() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.newest == 0 {
		return 0
	}
	return w.newest - int64(settle)
}

// write stores the points of us (of one target) that the store lacks and
// returns how many.
func (w *replicaWriter) write(us []model.Update) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	kept := make([]model.Update, 0, len(us))
	older := map[string][]model.Update{} // by path: not newer than the series' newest
	for _, u := range us {
		if last, ok := w.last[u.Path]; ok && u.Time <= last {
			if u.Time != last {
				older[u.Path] = append(older[u.Path], u)
			}
			continue
		}
		w.last[u.Path] = u.Time
		w.newest = max(w.newest, u.Time)
		kept = append(kept, u)
	}
	for path, ps := range older { // one store read per series
		lo, hi := ps[0].Time, ps[0].Time
		for _, p := range ps {
			lo, hi = min(lo, p.Time), max(hi, p.Time)
		}
		have := w.local.Times(ps[0].Target, path, lo, hi)
		if have == nil {
			have = map[int64]bool{}
		}
		for _, p := range ps {
			if !have[p.Time] {
				have[p.Time] = true
				kept = append(kept, p)
			}
		}
	}
	if len(kept) > 0 {
		w.local.Replicate(kept)
	}
	return len(kept)
}

// Divert says where a gNMI Get, a Subscribe or an admin query for target
// is answered (see gnmiserver.Divert): here when this instance collects it
// or its replica's stream from the holder is live, otherwise at the
// holder.
func (n *Node) Divert(target string) (proxyTo, servedFrom string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.epochs[target] != 0 {
		return "", RoleHolder
	}
	if f := n.following[target]; f != nil {
		f.mu.Lock()
		live := f.live
		f.mu.Unlock()
		if live {
			return "", RoleReplica
		}
	}
	if h, ok := n.holders[target]; ok && h.Member != n.cfg.Name && h.GNMI != "" {
		return h.GNMI, "proxy " + h.Member
	}
	return "", RoleReplica
}

// catchUp copies into the local store what any other member has of target
// from the last catchUpWindow and this instance lacks: run by a new
// holder, it gets what its predecessor collected that it had not
// received (a holder it never followed, one that joined and took the
// target at once, or the last points of one that died). Every point in a
// member's store was collected under a lock (see fence), so any member
// may be asked; what is copied reaches this holder's replicas through
// their streams.
func (n *Node) catchUp(ctx context.Context, target string) {
	n.mu.Lock()
	var addrs []string
	for _, m := range n.members {
		if m.Name != n.cfg.Name && m.GNMI != "" {
			addrs = append(addrs, m.GNMI)
		}
	}
	w := n.writerLocked(target)
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.releaseWriterLocked(target)
		n.mu.Unlock()
	}()
	release, ok := n.catchUps.acquire(ctx)
	if !ok {
		return
	}
	defer release()
	now := time.Now()
	from := now.Add(-2*n.cfg.LeaseTTL.Std() - settle).UnixNano()
	var wg sync.WaitGroup
	for _, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := n.conns.get(addr)
			if err != nil {
				return
			}
			defer n.conns.put(addr)
			rctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL.Std())
			defer cancel()
			err = readStream(rctx, gpb.NewGNMIClient(conn), target, 0, from, now.UnixNano(), func(us []model.Update, _ bool) {
				kept := w.write(us)
				n.mCaughtUp.Add(float64(kept))
			})
			if err != nil && ctx.Err() == nil {
				n.log.Info("cluster: catch-up read", "target", target, "member", addr, "err", err)
			}
		}()
	}
	wg.Wait()
}
