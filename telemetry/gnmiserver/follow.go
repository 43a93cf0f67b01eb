package gnmiserver

import (
	"context"
	"slices"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tgnmi "github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// A history range whose end is still in the future is followed: the
// stored updates from its start to the present, the sync response, then
// every update as the
// server receives it (from the hub, after the store has it), until the end
// passes, the client leaves, or the target stops being collected here
// (Released). No update is sent twice: a live one not newer than the last
// stored one sent for its series is left out. This is how the instances of
// a telemetry cluster replicate a target from its holder, resuming after a
// reconnect from the last timestamp they received.
//
// A follower that falls tailBuffer batches behind is ended with
// ResourceExhausted (the server never waits for a follower): it resumes
// from its last timestamp, the rest is in the store.

// tailBuffer is how many batches of updates a follower may be behind.
const tailBuffer = 1024

// tail is one follower's queue of live updates.
type tail struct {
	target string // "*": every target
	ch     chan []model.Update
	err    error // set before ch is closed: nil when released, else why it was cut off
}

func (s *Server) addTail(target string) *tail {
	t := &tail{target: target, ch: make(chan []model.Update, tailBuffer)}
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	if s.tails[target] == nil {
		s.tails[target] = map[*tail]struct{}{}
	}
	s.tails[target][t] = struct{}{}
	return t
}

// dropTail forgets t (it may have been ended already).
func (s *Server) dropTail(t *tail) {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	if _, ok := s.tails[t.target][t]; ok {
		s.endTailLocked(t, nil)
	}
}

func (s *Server) endTailLocked(t *tail, err error) {
	t.err = err
	close(t.ch)
	delete(s.tails[t.target], t)
	if len(s.tails[t.target]) == 0 {
		delete(s.tails, t.target)
	}
}

// feedTails queues a copy of us for the followers of their targets.
func (s *Server) feedTails(us []model.Update) {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	if len(s.tails) == 0 {
		return
	}
	if all := s.tails["*"]; len(all) > 0 {
		cp := slices.Clone(us)
		for t := range all {
			s.offerLocked(t, cp)
		}
	}
	for i := 0; i < len(us); { // a batch is usually of one target
		j := i + 1
		for j < len(us) && us[j].Target == us[i].Target {
			j++
		}
		if ts := s.tails[us[i].Target]; len(ts) > 0 && us[i].Target != "*" {
			cp := slices.Clone(us[i:j]) // the source may reuse its buffer
			for t := range ts {
				s.offerLocked(t, cp)
			}
		}
		i = j
	}
}

func (s *Server) offerLocked(t *tail, us []model.Update) {
	select {
	case t.ch <- us:
	default:
		s.endTailLocked(t, status.Errorf(codes.ResourceExhausted, "the follower fell %d batches behind: resume from the last timestamp received", tailBuffer))
	}
}

// Released ends the followers of target once they have sent every update
// the server received for it: call it when collecting target here has
// stopped (a telemetry cluster's holder letting go of it), so a follower
// knows it has everything.
func (s *Server) Released(target string) {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	for t := range s.tails[target] {
		s.endTailLocked(t, nil)
	}
}

// seriesKey names one series of one target.
type seriesKey struct{ target, path string }

// followLive sends t's live updates that sels select and that are in
// [from, to), leaving out those not newer than sent[series].
func (s *Server) followLive(ctx context.Context, t *tail, send func(*gpb.Notification) error, sels []selection, pats []model.Pattern, sent map[seriesKey]int64, from, to int64) error {
	end := time.NewTimer(time.Until(time.Unix(0, to)))
	defer end.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-end.C:
			return nil
		case us, ok := <-t.ch:
			if !ok {
				return t.err
			}
			for i := range us {
				u := &us[i]
				k := seriesKey{u.Target, u.Path}
				if u.Value.Kind == model.KindDeleted || u.Time < from || u.Time >= to || u.Time <= sent[k] {
					continue
				}
				n := liveNotification(u, sels, pats)
				if n == nil {
					continue
				}
				if err := send(n); err != nil {
					return err
				}
			}
		}
	}
}

// liveNotification is u as the store would replay it, when a selection
// keeps it (nil otherwise).
func liveNotification(u *model.Update, sels []selection, pats []model.Pattern) *gpb.Notification {
	for i, sel := range sels {
		if !pats[i].MatchString(u.Path) {
			continue
		}
		p, err := model.ParsePath(u.Path)
		if err != nil {
			return nil
		}
		tv := tgnmi.TypedValue(u.Value)
		if tv == nil {
			return nil
		}
		n := &gpb.Notification{Timestamp: u.Time, Prefix: &gpb.Path{Target: u.Target}, Update: []*gpb.Update{{Path: p.ToGNMI(), Val: tv}}}
		if sel.keep(n) {
			return n
		}
	}
	return nil
}
