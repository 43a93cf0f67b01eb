package devices

import (
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
