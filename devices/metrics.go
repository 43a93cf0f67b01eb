package devices

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
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

// levelHandler drops records below a minimum level; it scopes the broker
// library's own logger to warnings and errors.
type levelHandler struct {
	min slog.Level
	h   slog.Handler
}

func (l levelHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.h.Enabled(ctx, lv)
}
func (l levelHandler) Handle(ctx context.Context, r slog.Record) error { return l.h.Handle(ctx, r) }
func (l levelHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return levelHandler{l.min, l.h.WithAttrs(a)}
}
func (l levelHandler) WithGroup(n string) slog.Handler { return levelHandler{l.min, l.h.WithGroup(n)} }
