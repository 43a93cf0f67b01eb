package gnmiserver

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/openconfig/gnmi/coalesce"
	"github.com/openconfig/gnmi/ctree"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// STREAM subscriptions are served here rather than by the openconfig
// subscribe package, which forwards every change whatever the mode:
//
//   - SAMPLE sends the matching leaves every sample_interval (0: the lowest
//     interval served, MinSampleInterval, as the gNMI specification asks);
//     with suppress_redundant a leaf whose value did not change since it
//     was last sent is left out, unless heartbeat_interval has passed since
//     then.
//   - ON_CHANGE sends a leaf when its value changes (changes queued faster
//     than the client reads are coalesced to the latest value); with
//     heartbeat_interval a leaf not sent for that long is sent again.
//   - TARGET_DEFINED chooses per leaf: numeric values (counters, gauges) are
//     sampled as SAMPLE with the subscription's intervals, every other value
//     (states, names, events) is sent on change.
//
// Unless updates_only is set, every matching leaf is sent first, then the
// sync response; the first sample follows one interval later. In every
// mode a leaf deleted from the cache (expired, see expire.go) is sent as a
// notification with its path in delete, and a removed target as a delete
// of "*" under it.

// MinSampleInterval is the lowest sample and heartbeat interval served,
// and so (as the gNMI specification asks) the interval of a SAMPLE
// subscription that asks for 0; TARGET_DEFINED samples at it too when
// asked for 0. Shorter non-zero intervals are refused with
// InvalidArgument. The served data changes at the collection intervals
// (seconds to minutes), and clients such as gnmic send 0 unless told
// otherwise: sampling faster would cost the edge host CPU for repeats.
const MinSampleInterval = time.Second

type streamSub struct {
	sel       selection
	mode      gpb.SubscriptionMode
	sample    time.Duration
	heartbeat time.Duration
	suppress  bool
	sent      map[*ctree.Leaf]sentLeaf // under streamer.mu
}

type sentLeaf struct {
	n  *gpb.Notification
	at time.Time
}

// streamer serves one STREAM Subscribe RPC.
type streamer struct {
	srv    *Server
	stream gpb.GNMI_SubscribeServer
	view   view
	target string
	subs   []*streamSub
	queue  *coalesce.Queue

	mu sync.Mutex // serialises Send; guards every sub's sent
}

// changeKey is what the match tree queues for an ON_CHANGE or
// TARGET_DEFINED subscription: the same leaf changing again before it was
// sent is coalesced.
type changeKey struct {
	sub  *streamSub
	leaf *ctree.Leaf
}

type changeClient struct {
	sub *streamSub
	q   *coalesce.Queue
}

func (c *changeClient) Update(v any) {
	l, ok := v.(*ctree.Leaf)
	if !ok {
		return
	}
	if c.sub.mode == gpb.SubscriptionMode_SAMPLE { // samples come from ticks; only deletes are sent at once
		if n, _ := l.Value().(*gpb.Notification); len(n.GetDelete()) == 0 {
			return
		}
	}
	_, _ = c.q.Insert(changeKey{c.sub, l}) // closed queue: the stream is ending
}

func newStreamSub(sel selection, s *gpb.Subscription) (*streamSub, error) {
	ss := &streamSub{sel: sel, mode: s.GetMode(), suppress: s.GetSuppressRedundant(),
		sample: time.Duration(s.GetSampleInterval()), heartbeat: time.Duration(s.GetHeartbeatInterval()),
		sent: map[*ctree.Leaf]sentLeaf{}}
	switch ss.mode {
	case gpb.SubscriptionMode_SAMPLE, gpb.SubscriptionMode_TARGET_DEFINED:
		if ss.sample == 0 {
			ss.sample = MinSampleInterval
		}
	case gpb.SubscriptionMode_ON_CHANGE:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "subscription mode %v not supported", ss.mode)
	}
	if (ss.sample != 0 && ss.sample < MinSampleInterval) || (ss.heartbeat != 0 && ss.heartbeat < MinSampleInterval) {
		return nil, status.Errorf(codes.InvalidArgument, "sample and heartbeat intervals must be 0 or at least %v", MinSampleInterval)
	}
	return ss, nil
}

// sampled reports whether a TARGET_DEFINED subscription samples this leaf
// (numeric values) rather than sending it on change.
func sampled(n *gpb.Notification) bool {
	if len(n.GetUpdate()) == 0 {
		return false
	}
	switch n.GetUpdate()[0].GetVal().GetValue().(type) {
	case *gpb.TypedValue_IntVal, *gpb.TypedValue_UintVal, *gpb.TypedValue_FloatVal, *gpb.TypedValue_DoubleVal, *gpb.TypedValue_DecimalVal:
		return true
	}
	return false
}

func sameValue(a, b *gpb.Notification) bool {
	if a == b {
		return true
	}
	ua, ub := a.GetUpdate(), b.GetUpdate()
	return len(ua) == 1 && len(ub) == 1 && proto.Equal(ua[0].GetVal(), ub[0].GetVal())
}

// send sends one leaf's notification; st.mu is held.
func (st *streamer) send(ss *streamSub, x leafNote, now time.Time) error {
	ss.sent[x.l] = sentLeaf{x.n, now}
	return st.stream.Send(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: st.view.out(x.n)}})
}

// initial sends every matching leaf of every subscription.
func (st *streamer) initial() error {
	for _, ss := range st.subs {
		xs, err := st.srv.leaves(st.target, ss.sel)
		if err != nil {
			return err
		}
		now := time.Now()
		st.mu.Lock()
		for _, x := range xs {
			if err := st.send(ss, x, now); err != nil {
				st.mu.Unlock()
				return err
			}
		}
		st.mu.Unlock()
	}
	return nil
}

// tick sends what one sample (sample true) or heartbeat round owes.
func (st *streamer) tick(ss *streamSub, sample bool) error {
	xs, err := st.srv.leaves(st.target, ss.sel)
	if err != nil {
		return err
	}
	now := time.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, x := range xs {
		td := ss.mode == gpb.SubscriptionMode_TARGET_DEFINED
		last, seen := ss.sent[x.l]
		if sample {
			if td && !sampled(x.n) {
				continue
			}
			// A heartbeat is due when the next sample would come too late.
			if ss.suppress && seen && sameValue(last.n, x.n) && (ss.heartbeat == 0 || now.Sub(last.at)+ss.sample/2 < ss.heartbeat) {
				continue
			}
		} else {
			if td && sampled(x.n) {
				continue // its sample ticks carry the heartbeat
			}
			if seen && now.Sub(last.at) < ss.heartbeat {
				continue
			}
		}
		if err := st.send(ss, x, now); err != nil {
			return err
		}
	}
	return nil
}

// change sends a changed leaf of an ON_CHANGE or TARGET_DEFINED
// subscription, and a deleted one of any subscription.
func (st *streamer) change(k changeKey) error {
	n, ok := k.leaf.Value().(*gpb.Notification)
	if !ok || !k.sub.sel.keep(n) {
		return nil
	}
	if len(n.GetDelete()) > 0 {
		return st.deleted(k.sub, n)
	}
	if k.sub.mode == gpb.SubscriptionMode_SAMPLE || k.sub.mode == gpb.SubscriptionMode_TARGET_DEFINED && sampled(n) {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if last, ok := k.sub.sent[k.leaf]; ok && sameValue(last.n, n) {
		return nil // already sent (initial dump) or not a change
	}
	return st.send(k.sub, leafNote{k.leaf, n}, time.Now())
}

// deleted sends a delete notification and forgets what was sent of the
// deleted leaves (all of them when the whole target went).
func (st *streamer) deleted(ss *streamSub, n *gpb.Notification) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, d := range n.GetDelete() {
		all := len(d.GetElem()) == 1 && d.GetElem()[0].GetName() == "*"
		for l, x := range ss.sent {
			if all || len(x.n.GetUpdate()) == 1 && proto.Equal(x.n.GetUpdate()[0].GetPath(), d) {
				delete(ss.sent, l)
			}
		}
	}
	return st.stream.Send(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: st.view.out(n)}})
}

// serveStream serves a STREAM subscription list until the client goes away.
func (s *Server) serveStream(stream gpb.GNMI_SubscribeServer, list *gpb.SubscriptionList, sels []selection, v view, target string) error {
	st := &streamer{srv: s, stream: stream, view: v, target: target, queue: coalesce.NewQueue()}
	defer st.queue.Close()
	for i, sub := range list.GetSubscription() {
		ss, err := newStreamSub(sels[i], sub)
		if err != nil {
			return err
		}
		st.subs = append(st.subs, ss)
	}
	// Register for changes (and, for SAMPLE, deletes) before the initial
	// dump so none is missed in between; change() skips what the dump
	// already sent.
	for _, ss := range st.subs {
		remove := s.match.AddQuery(append([]string{target}, ss.sel.query...), &changeClient{ss, st.queue})
		defer remove()
	}
	if !list.GetUpdatesOnly() {
		if err := st.initial(); err != nil {
			return err
		}
	}
	st.mu.Lock()
	err := stream.Send(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_SyncResponse{SyncResponse: true}})
	st.mu.Unlock()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	errc := make(chan error, 2*len(st.subs)+2)
	// A STREAM takes no request after its subscription list (gNMI
	// specification 3.5.1.1): another list or a poll ends it with
	// InvalidArgument; the client closing its side does not. The reader is
	// not waited for: its Recv returns once this RPC has returned.
	go func() {
		if _, err := stream.Recv(); err == nil {
			errc <- status.Error(codes.InvalidArgument, "a STREAM subscription takes no request after its subscription list")
			cancel()
		}
	}()
	var wg sync.WaitGroup
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	every := func(d time.Duration, f func() error) func() error {
		return func() error {
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					if err := f(); err != nil {
						return err
					}
				}
			}
		}
	}
	run(func() error {
		for {
			item, _, err := st.queue.Next(ctx)
			if err != nil {
				if coalesce.IsClosedQueue(err) || errors.Is(err, context.Canceled) || ctx.Err() != nil {
					return nil
				}
				return err
			}
			if k, ok := item.(changeKey); ok {
				if err := st.change(k); err != nil {
					return err
				}
			}
		}
	})
	for _, ss := range st.subs {
		if ss.mode != gpb.SubscriptionMode_ON_CHANGE {
			run(every(ss.sample, func() error { return st.tick(ss, true) }))
		}
		if ss.mode != gpb.SubscriptionMode_SAMPLE && ss.heartbeat > 0 {
			// Checked four times per heartbeat: a leaf goes out at most a
			// quarter heartbeat late.
			run(every(ss.heartbeat/4, func() error { return st.tick(ss, false) }))
		}
	}
	<-ctx.Done()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}
