package telemetry

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// tracked registers into the daemon's registry and remembers what it
// registered, so Stop can unregister all of it: a later Start on the same
// registry (a restart of the telemetry part) then registers fresh metrics
// bound to the new store, hub and trap receiver instead of failing with
// AlreadyRegisteredError and leaving the old ones exported.
type tracked struct {
	reg prometheus.Registerer

	mu sync.Mutex
	cs []prometheus.Collector
}

var _ prometheus.Registerer = (*tracked)(nil)

func (t *tracked) Register(c prometheus.Collector) error {
	if err := t.reg.Register(c); err != nil {
		return err
	}
	t.mu.Lock()
	t.cs = append(t.cs, c)
	t.mu.Unlock()
	return nil
}

func (t *tracked) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := t.Register(c); err != nil {
			panic(err)
		}
	}
}

func (t *tracked) Unregister(c prometheus.Collector) bool {
	t.mu.Lock()
	for i, x := range t.cs {
		if x == c {
			t.cs = append(t.cs[:i], t.cs[i+1:]...)
			break
		}
	}
	t.mu.Unlock()
	return t.reg.Unregister(c)
}

// unregisterAll unregisters everything registered through t.
func (t *tracked) unregisterAll() {
	t.mu.Lock()
	cs := t.cs
	t.cs = nil
	t.mu.Unlock()
	for _, c := range cs {
		t.reg.Unregister(c)
	}
}
