package devices

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/ratelog"
)

// register registers c on reg and returns the collector to use: c itself, or
// the one already registered under the same descriptors (a second component
// built on the same registry, e.g. after a reload, keeps counting on it).
// A nil reg leaves c unregistered.
func register[T prometheus.Collector](reg prometheus.Registerer, log *slog.Logger, c T) T {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
		log.Warn("register metric", "error", err)
	}
	return c
}

// levelHandler drops records below a minimum level, and logs each
// message at most once every denyWarnEvery (with how many went unlogged):
// it scopes the broker library's own logger, which logs some warnings once
// per message (a client over its quota, a refused packet), to bounded
// warnings and errors.
type levelHandler struct {
	min   slog.Level
	h     slog.Handler
	every *sync.Map // message -> *ratelog.Limiter, shared by the derived handlers
}

func newLevelHandler(min slog.Level, h slog.Handler) levelHandler {
	return levelHandler{min: min, h: h, every: &sync.Map{}}
}

func (l levelHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.h.Enabled(ctx, lv)
}

func (l levelHandler) Handle(ctx context.Context, r slog.Record) error {
	v, ok := l.every.Load(r.Message)
	if !ok {
		v, _ = l.every.LoadOrStore(r.Message, &ratelog.Limiter{Every: denyWarnEvery})
	}
	n, ok := v.(*ratelog.Limiter).Allow(r.Time)
	if !ok {
		return nil
	}
	if n > 0 {
		r.AddAttrs(slog.Uint64("unlogged", n))
	}
	return l.h.Handle(ctx, r)
}

func (l levelHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return levelHandler{l.min, l.h.WithAttrs(a), l.every}
}

func (l levelHandler) WithGroup(n string) slog.Handler {
	return levelHandler{l.min, l.h.WithGroup(n), l.every}
}
