package gnmiserver

import (
	"context"
	"sort"
	"strconv"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tgnmi "github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// The history extension (openconfig gnmi-history.md) replays what the
// telemetry store kept (telemetry/tsdb, with its retention) instead of
// the live cache:
//
//   - snapshot_time T, mode ONCE: every selected leaf as it was at T (its
//     last value at or before T, looked for back to T - expire_after: an
//     older one would have expired from the live tree too), then the sync
//     response, then the RPC ends.
//   - range [start, end), mode STREAM: unless updates_only, the tree as it
//     was just before start (as for a snapshot); the sync response; then
//     every stored update with start <= time < end, in time order (at most
//     100,000 points per series), and the RPC ends. An end still in the
//     future is followed (follow.go): the sync response comes after the
//     stored updates, then the live ones as they arrive, until the end
//     passes.
//
// Refused: snapshot with another mode than ONCE, range with another mode
// than STREAM, start after end (InvalidArgument); a snapshot time still in
// the future (Unimplemented); a server without the store (Unimplemented).

// History is the collected data kept over time: the telemetry store.
type History interface {
	Query(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error)
}

var _ History = (*tsdb.DB)(nil)

// SetHistory gives the server the store the history extension reads; it
// must be called before Start.
func (s *Server) SetHistory(h History) { s.history = h }

// EpochHeader is the response header in which a history answer for one
// target carries the epoch under which this server's instance collects the
// target ("0": it does not), when SetEpochs was called.
const EpochHeader = "outpost-epoch"

// SetEpochs gives the server the epoch of each target collected here (a
// telemetry cluster's lock epoch), sent with every history answer for one
// target so that a replica refuses answers from an instance that no longer
// holds the target; it must be called before Start.
func (s *Server) SetEpochs(f func(target string) int64) { s.epochs = f }

// serveHistory serves a subscription list with the history extension.
func (s *Server) serveHistory(stream gpb.GNMI_SubscribeServer, list *gpb.SubscriptionList, sels []selection, o options, target string) error {
	if s.history == nil {
		return status.Error(codes.Unimplemented, "history is not available: this server has no telemetry store")
	}
	now := time.Now().UnixNano()
	mode := list.GetMode()
	var before, from, to int64 // snapshot at before (inclusive), updates in [from, to)
	if r := o.history.GetRange(); r != nil {
		switch {
		case mode != gpb.SubscriptionList_STREAM:
			return status.Errorf(codes.InvalidArgument, "a history range needs mode STREAM, not %v", mode)
		case r.GetStart() > r.GetEnd():
			return status.Errorf(codes.InvalidArgument, "history range start %d is after its end %d", r.GetStart(), r.GetEnd())
		}
		before, from, to = r.GetStart()-1, r.GetStart(), r.GetEnd()
	} else {
		t := o.history.GetSnapshotTime()
		switch {
		case mode != gpb.SubscriptionList_ONCE:
			return status.Errorf(codes.InvalidArgument, "a history snapshot needs mode ONCE, not %v", mode)
		case t > now:
			return status.Errorf(codes.Unimplemented, "history snapshot time %s is in the future", time.Unix(0, t).UTC().Format(time.RFC3339Nano))
		}
		before, from, to = t, 0, 0
	}
	var live *tail
	if to > now {
		// Registered before the epoch is read and the store is queried: an
		// update is either stored by then or queued here (the hub stores
		// before it updates the server), and a release after this point
		// ends the stream.
		live = s.addTail(target)
		defer s.dropTail(live)
	}
	if s.epochs != nil && target != "*" {
		if err := stream.SendHeader(metadata.Pairs(EpochHeader, strconv.FormatInt(s.epochs(target), 10))); err != nil {
			return err
		}
	}
	ctx := stream.Context()
	send := func(n *gpb.Notification) error {
		return stream.Send(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: o.out(n)}})
	}
	if !list.GetUpdatesOnly() {
		since := time.Time{}
		if e := s.cfg.ExpireAfter.Std(); e > 0 {
			since = time.Unix(0, before).Add(-e)
		}
		for _, sel := range sels {
			ns, err := s.stored(ctx, target, sel, since, time.Unix(0, before))
			if err != nil {
				return err
			}
			for _, n := range latest(ns) {
				if err := send(n); err != nil {
					return err
				}
			}
		}
	}
	syncResponse := func() error {
		return stream.Send(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_SyncResponse{SyncResponse: true}})
	}
	if live == nil {
		if err := syncResponse(); err != nil {
			return err
		}
	}
	if to <= from {
		return nil
	}
	var all []*gpb.Notification
	for _, sel := range sels {
		ns, err := s.stored(ctx, target, sel, time.Unix(0, from), time.Unix(0, min(to, now+1)-1))
		if err != nil {
			return err
		}
		all = append(all, ns...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].GetTimestamp() < all[j].GetTimestamp() })
	var sent map[seriesKey]int64 // the newest stored update sent per series, when followed
	if live != nil {
		sent = map[seriesKey]int64{}
	}
	for _, n := range all {
		if err := send(n); err != nil {
			return err
		}
		if sent != nil {
			k := seriesKey{n.GetPrefix().GetTarget(), model.FromGNMI(nil, n.GetUpdate()[0].GetPath()).String()}
			sent[k] = max(sent[k], n.GetTimestamp())
		}
	}
	if live == nil {
		return nil
	}
	if err := syncResponse(); err != nil { // the stored part was sent: live from here
		return err
	}
	pats := make([]model.Pattern, len(sels))
	for i, sel := range sels {
		var err error
		if pats[i], err = selPattern(sel); err != nil {
			return err
		}
	}
	return s.followLive(ctx, live, send, sels, pats, sent, from, to)
}

// selPattern is the store pattern of sel: a gNMI path selects its whole
// subtree, so the pattern ends with "...".
func selPattern(sel selection) (model.Pattern, error) {
	pat, err := model.ParsePattern(append(sel.path[:len(sel.path):len(sel.path)], model.Elem{Name: "..."}).String())
	if err != nil {
		return model.Pattern{}, status.Errorf(codes.InvalidArgument, "bad path: %v", err)
	}
	return pat, nil
}

// stored returns one notification per stored point that sel selects on
// target ("*": every target) in [since, until] (a zero since: the oldest
// stored), in the shape the live cache holds (prefix target, one update).
func (s *Server) stored(ctx context.Context, target string, sel selection, since, until time.Time) ([]*gpb.Notification, error) {
	pat, err := selPattern(sel)
	if err != nil {
		return nil, err
	}
	if target == "*" {
		target = "" // every target
	}
	series, err := s.history.Query(ctx, tsdb.Query{Target: target, Path: pat, Since: since, Until: until})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "history query: %v", err)
	}
	var out []*gpb.Notification
	for _, se := range series {
		p, err := model.ParsePath(se.Path)
		if err != nil {
			continue // the store keeps parsed paths only
		}
		gp, prefix := p.ToGNMI(), &gpb.Path{Target: se.Target} // shared by the series' notifications (see latest)
		for _, pt := range se.Points {
			tv := tgnmi.TypedValue(pt.Value)
			if tv == nil {
				continue
			}
			n := &gpb.Notification{Timestamp: pt.Time.UnixNano(), Prefix: prefix, Update: []*gpb.Update{{Path: gp, Val: tv}}}
			if sel.keep(n) {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// latest keeps the last notification of each series: stored returns each
// series' points in time order, series after series, sharing one path.
func latest(ns []*gpb.Notification) []*gpb.Notification {
	var out []*gpb.Notification
	for i, n := range ns {
		if i+1 < len(ns) && ns[i+1].GetUpdate()[0].GetPath() == n.GetUpdate()[0].GetPath() {
			continue
		}
		out = append(out, n)
	}
	return out
}
