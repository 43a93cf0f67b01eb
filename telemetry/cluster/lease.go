package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// fence says whether this instance may collect: only while its lease is
// confirmed alive. A renewal is sent every TTL/8; the right to collect
// lasts until TTL/2 after the sending of the last renewal confirmed, and
// a renewal is given until then to be confirmed (a slow one on a loaded
// host does not stop collection; none confirmed for TTL/2 does). The lease
// outlives its last confirmed renewal by the TTL counted from when that
// renewal was sent (etcd extends it when the renewal arrives, later), so
// collection stops at least TTL/2 before another instance can take the
// lease's locks.
type fence struct {
	mu      sync.Mutex
	lease   clientv3.LeaseID // the confirmed lease, 0 when none
	sess    *concurrency.Session
	changed chan struct{} // closed and replaced at every change
}

func newFence() *fence { return &fence{changed: make(chan struct{})} }

// state returns the confirmed lease (0: may not collect), its session and a
// channel closed at the next change.
func (f *fence) state() (clientv3.LeaseID, *concurrency.Session, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lease, f.sess, f.changed
}

func (f *fence) set(lease clientv3.LeaseID, sess *concurrency.Session) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lease == lease && f.sess == sess {
		return
	}
	f.lease, f.sess = lease, sess
	close(f.changed)
	f.changed = make(chan struct{})
}

// valid reports whether lease is the confirmed one.
func (f *fence) valid(lease clientv3.LeaseID) bool {
	l, _, _ := f.state()
	return l != 0 && l == lease
}

// runLease keeps a lease and its session until ctx ends: it grants one,
// registers the member under it, renews it, and on loss starts over with a
// new lease.
func (n *Node) runLease(ctx context.Context) {
	ttl := n.cfg.LeaseTTL.Std()
	every := ttl / 8
	for ctx.Err() == nil {
		sent := time.Now()
		gctx, cancel := context.WithTimeout(ctx, ttl/4)
		g, err := n.cli.Grant(gctx, int64(ttl/time.Second))
		cancel()
		if err != nil {
			n.log.Warn("cluster: grant lease", "err", err)
			sleep(ctx, every)
			continue
		}
		sctx, stopSess := context.WithCancel(ctx)
		sess, err := concurrency.NewSession(n.cli, concurrency.WithLease(g.ID), concurrency.WithContext(sctx))
		if err != nil {
			stopSess()
			continue
		}
		if err := n.register(ctx, g.ID); err != nil {
			n.log.Warn("cluster: register", "err", err)
			stopSess()
			<-sess.Done()
			sleep(ctx, every)
			continue
		}
		n.mLeases.Inc()
		n.log.Info("cluster: member", "name", n.cfg.Name, "lease", int64(g.ID))
		n.keep(ctx, sess, g.ID, sent, ttl, every)
		n.fence.set(0, nil)
		stopSess()
		<-sess.Done()
	}
	n.fence.set(0, nil)
}

// keep renews the lease until it is lost (or ctx ends), holding the fence
// valid while a renewal sent in the last TTL/2 was confirmed. The fence is
// first set by a renewal confirmed here, not by the grant: registering may
// have taken a while. sent is when the grant was sent.
func (n *Node) keep(ctx context.Context, sess *concurrency.Session, id clientv3.LeaseID, sent time.Time, ttl, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		at := time.Now()
		deadline := sent.Add(ttl / 2) // when the fence must be down, unless confirmed
		if !deadline.After(at) {
			deadline = at.Add(every) // it is down: each try may bring it back up
		}
		kctx, cancel := context.WithDeadline(ctx, deadline)
		r, err := n.cli.KeepAliveOnce(kctx, id)
		cancel()
		switch {
		case err == nil && r.TTL > 0:
			sent = at
			n.fence.set(id, sess)
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
			return
		default:
			n.mRenewFail.Inc()
			if time.Since(sent) >= ttl/2 {
				// Nothing confirmed for TTL/2: stop collecting now; keep
				// trying while the lease may still be alive.
				n.fence.set(0, sess)
				n.log.Warn("cluster: lease renewal not confirmed: collection stopped", "err", err)
			}
			if errors.Is(err, rpctypes.ErrLeaseNotFound) || time.Since(sent) >= ttl {
				n.fence.set(0, sess)
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
