package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tgnmi "github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Local is this instance's store, where replicas are kept.
type Local interface {
	// Newest returns the time of target's newest stored point (zero: none).
	Newest(target string) time.Time
	// Replicate stores updates copied from a target's holder (the store and
	// the gNMI server's cache, not MQTT or triggers: those run on the
	// holder).
	Replicate(us []model.Update)
}

// settle is how far behind the present a replica asks: a point stamped
// earlier may still be on its way into the holder's store.
const settle = time.Second

// follow copies one target from its holder.
type follow struct {
	task
	holder Holder

	mu     sync.Mutex
	synced time.Time // everything stamped before this is copied
	points uint64
	err    string
}

func (n *Node) startFollow(target string, h Holder) *follow {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follow{task: task{cancel: cancel, done: make(chan struct{})}, holder: h}
	go func() { defer close(f.done); n.replicate(ctx, target, f) }()
	return f
}

// replicate asks the holder, every replica interval, for what it stored
// from the end of the last answer (first: after the newest point of the
// local replica, so a reconnect or restart resumes without a gap the
// holder still has) to the present less settle, over the gNMI history
// extension, and stores it. Every answer carries the epoch under which the
// answering instance holds the target; it is stored only when that is the
// epoch followed and still the target's current one in etcd: an instance
// that lost the target, or a holder replaced by a newer one, is refused.
func (n *Node) replicate(ctx context.Context, target string, f *follow) {
	conn, err := grpc.NewClient(f.holder.GNMI, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		f.setErr(err)
		return
	}
	defer conn.Close()
	gc := gpb.NewGNMIClient(conn)
	from := n.local.Newest(target).UnixNano() + 1
	t := time.NewTicker(n.cfg.ReplicaInterval.Std())
	defer t.Stop()
	for {
		end := time.Now().Add(-settle).UnixNano()
		if end > from {
			us, err := fetchRange(ctx, gc, target, f.holder.Epoch, from, end)
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, errNotHolder):
				n.mRefused.Inc()
				f.setErr(err)
			case err != nil:
				f.setErr(err)
				n.mReplicaErrors.Inc()
			case !n.current(target, f.holder.Epoch):
				n.mRefused.Inc()
				n.log.Warn("cluster: replica batch from a stale epoch refused", "target", target, "epoch", f.holder.Epoch, "points", len(us))
				return
			default:
				n.local.Replicate(us)
				n.mReplicated.Add(float64(len(us)))
				from = end
				f.mu.Lock()
				f.synced, f.err = time.Unix(0, end), ""
				f.points += uint64(len(us))
				f.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *follow) setErr(err error) {
	f.mu.Lock()
	f.err = err.Error()
	f.mu.Unlock()
}

// current reports whether epoch is target's holder epoch as last seen.
func (n *Node) current(target string, epoch int64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.holders[target].Epoch == epoch
}

// errNotHolder is a holder's answer under another epoch than the one
// followed: it no longer holds the target (or not yet again).
var errNotHolder = errors.New("the instance answered under another epoch: it does not hold the target now")

// fetchRange reads target's stored updates in [from, to) from a gNMI
// server with the history extension; the answer must carry epoch (see
// gnmiserver.EpochHeader).
func fetchRange(ctx context.Context, gc gpb.GNMIClient, target string, epoch, from, to int64) ([]model.Update, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := gc.Subscribe(ctx)
	if err != nil {
		return nil, fmt.Errorf("subscribe to holder: %w", err)
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
		return nil, fmt.Errorf("subscribe to holder: %w", err)
	}
	md, err := st.Header()
	if err != nil {
		return nil, fmt.Errorf("replicate from holder: %w", err)
	}
	if got := md.Get(gnmiserver.EpochHeader); len(got) != 1 || got[0] != strconv.FormatInt(epoch, 10) {
		return nil, fmt.Errorf("%w (epoch %v, want %d)", errNotHolder, got, epoch)
	}
	var us []model.Update
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return us, nil
		}
		if err != nil {
			return nil, fmt.Errorf("replicate from holder: %w", err)
		}
		if n := r.GetUpdate(); n != nil {
			us = tgnmi.Updates(us, target, n)
		}
	}
}

// Divert says where a gNMI Get for target is answered (see
// gnmiserver.Divert): here when this instance collects it or its replica
// copied everything up to 3 replica intervals plus the settle time ago,
// otherwise at the holder.
func (n *Node) Divert(target string) (proxyTo, servedFrom string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.epochs[target] != 0 {
		return "", RoleHolder
	}
	if f := n.following[target]; f != nil {
		f.mu.Lock()
		synced := f.synced
		f.mu.Unlock()
		if !synced.IsZero() && time.Since(synced) <= 3*n.cfg.ReplicaInterval.Std()+settle {
			return "", RoleReplica
		}
	}
	if h, ok := n.holders[target]; ok && h.Member != n.cfg.Name && h.GNMI != "" {
		return h.GNMI, "proxy " + h.Member
	}
	return "", RoleReplica
}
