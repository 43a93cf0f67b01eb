// Package ratelog bounds log lines of events that may come in floods
// (refused requests, dropped traps, denied MQTT topics): one line a period,
// telling how many events went unlogged since the last one.
package ratelog

import (
	"sync"
	"time"
)

// Limiter lets one event a period (Every) through and counts the others.
// It is safe for concurrent use; the zero Limiter with Every set is ready.
type Limiter struct {
	Every time.Duration

	mu      sync.Mutex
	last    time.Time
	dropped uint64
}

// Allow reports whether to log the event happening at now, and how many
// events were not logged since the last line.
func (l *Limiter) Allow(now time.Time) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.Every {
		l.dropped++
		return 0, false
	}
	n := l.dropped
	l.last, l.dropped = now, 0
	return n, true
}
