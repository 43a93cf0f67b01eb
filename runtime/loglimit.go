package runtime

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// logLimiter bounds the lines one task writes to the daemon's log
// (outpost.log, and the lines of its stderr and stdout) with a token
// bucket: burst lines at once, then rate lines a second. A line over the
// bucket is dropped and counted (outpost_task_log_dropped_total{task}); one
// line saying how many were dropped is written a second after the first
// drop (so at most one such line a second). Only lines at an enabled level
// count. It is shared by every call of the task.
type logLimiter struct {
	log     *slog.Logger
	rate    float64 // tokens a second
	burst   float64
	dropped prometheus.Counter

	mu      sync.Mutex
	tokens  float64
	last    time.Time
	pending uint64      // dropped since the last report
	timer   *time.Timer // reports pending; nil when none is due
	closed  bool
}

func newLogLimiter(log *slog.Logger, rate, burst int, dropped prometheus.Counter) *logLimiter {
	return &logLimiter{log: log, rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: time.Now(), dropped: dropped}
}

// reportEvery is how long after a first drop the count is reported.
const reportEvery = time.Second

// allow takes a token for one line at level. It returns false for a line
// to drop (or a disabled level).
func (l *logLimiter) allow(ctx context.Context, level slog.Level) bool {
	if !l.log.Enabled(ctx, level) {
		return false
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		l.pending++
		if l.timer == nil && !l.closed {
			l.timer = time.AfterFunc(reportEvery, l.report)
		}
		l.mu.Unlock()
		l.dropped.Inc()
		return false
	}
	l.tokens--
	l.mu.Unlock()
	return true
}

// report writes the pending count.
func (l *logLimiter) report() {
	l.mu.Lock()
	l.timer = nil
	n := l.pending
	l.pending = 0
	l.mu.Unlock()
	l.say(n)
}

// close reports what is pending at once; later drops are only counted.
func (l *logLimiter) close() {
	l.mu.Lock()
	l.closed = true
	n := l.pending
	l.pending = 0
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.mu.Unlock()
	l.say(n)
}

func (l *logLimiter) say(n uint64) {
	if n > 0 {
		l.log.Warn("task log lines dropped: over the task's log rate limit", "dropped", n,
			"log_rate", l.rate, "log_burst", l.burst)
	}
}
