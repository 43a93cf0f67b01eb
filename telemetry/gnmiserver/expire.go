package gnmiserver

import (
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/outpost-edge/outpost/telemetry/model"
)

// Expiry. A path of a target that stopped sending (a device gone, an
// interface removed, a subscription dropped) would otherwise be served
// forever from the cache. The server remembers when each target's path was
// last updated (arrival on the monotonic clock: not the device's
// timestamp, which may be skewed, nor the wall clock, which may step); a
// path not updated for cfg.ExpireAfter is deleted from the cache with a
// gNMI delete, which STREAM subscribers receive as a notification with
// that path in delete (gNMI specification 3.5.2.3), and
// a target whose every path expired is removed from the cache (and so
// from Get, ONCE and POLL answers and from "*" subscriptions) until it
// sends again. The check runs every quarter of ExpireAfter (at most once a
// minute), so a path goes at most that much later. With ExpireAfter 0
// nothing expires (the daemon always sets it: Config.Expiry).

// seenPath is when a path was last updated: arrival (at, nanoseconds on
// the monotonic clock since the server's epoch) and the update's own
// timestamp (ts, Unix nanoseconds).
type seenPath struct{ at, ts int64 }

// expirePeriod is how often expiry runs.
func (s *Server) expirePeriod() time.Duration {
	return min(s.cfg.ExpireAfter.Std()/4, time.Minute)
}

func (s *Server) expireLoop(quit <-chan struct{}, swept chan<- struct{}) {
	defer close(swept)
	t := time.NewTicker(s.expirePeriod())
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case now := <-t.C:
			s.expire(now)
		}
	}
}

// expire deletes every path not updated since now-ExpireAfter and removes
// targets left without paths. s.mu is held throughout, so an update racing
// with the decision either came first (and the path stays) or re-adds the
// path (and target) after it was deleted.
func (s *Server) expire(now time.Time) {
	cut := int64(now.Sub(s.epoch) - s.cfg.ExpireAfter.Std())
	s.mu.Lock()
	defer s.mu.Unlock()
	for target, paths := range s.seen {
		n := 0
		for p, sp := range paths {
			if sp.at > cut {
				continue
			}
			delete(paths, p)
			pp, err := model.ParsePath(p)
			if err != nil {
				continue // Update stores parsed paths only
			}
			// The delete must be newer than the leaf it removes.
			_ = s.cache.GnmiUpdate(deleteNotification(target, pp, max(now.UnixNano(), sp.ts+1)))
			n++
		}
		if n > 0 {
			s.log.Debug("gnmi server: paths expired", "target", target, "paths", n, "left", len(paths))
		}
		if len(paths) == 0 {
			delete(s.seen, target)
			delete(s.targets, target)
			s.cache.Remove(target)
			s.log.Info("gnmi server: target expired", "target", target, "after", s.cfg.ExpireAfter.Std())
		}
	}
}

// deleteNotification deletes one path of a target from the cache (and so
// from Get, ONCE and POLL) and tells STREAM subscribers; ts must be newer
// than the leaf's. Expiry and the sources' deletes (model.Deleted) use it.
func deleteNotification(target string, p model.Path, ts int64) *gpb.Notification {
	return &gpb.Notification{Timestamp: ts, Prefix: &gpb.Path{Target: target}, Delete: []*gpb.Path{p.ToGNMI()}}
}
