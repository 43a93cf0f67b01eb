package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/outpost-edge/outpost/internal/snmptest"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/snmp"
)

// warnings records the messages of Warn and Error records.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		w.mu.Lock()
		w.msgs = append(w.msgs, r.Message)
		w.mu.Unlock()
	}
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

func gauge(t *testing.T, reg *prometheus.Registry, name string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// A second Start on the same registry (the same Service after Stop, or a new
// one) registers its metrics again, bound to the new store and hub; Stop
// leaves nothing of telemetry registered.
func TestMetricsAfterRestart(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := &warnings{}
	dir := t.TempDir()
	cfg := Config{
		GNMIServer: gnmiserver.Config{Listen: "127.0.0.1:0"},
		SNMP:       snmp.Config{Traps: snmp.Traps{Listen: fmt.Sprintf("127.0.0.1:%d", snmptest.FreeUDP(t)), Communities: []string{"public"}}},
	}
	publish := func(s *Service, n int) {
		var us []Update
		for i := range n {
			us = append(us, Update{Target: "sw1", Path: fmt.Sprintf("/p%d", i), Time: time.Now().UnixNano(), Value: model.Int(1)})
		}
		if err := s.Publish(us); err != nil {
			t.Fatal(err)
		}
	}
	s := New(cfg, dir, slog.New(w), reg, Sinks{})
	check := func(what string, updates, series float64) {
		t.Helper()
		if v, ok := gauge(t, reg, "outpost_telemetry_updates_total"); !ok || v != updates {
			t.Errorf("%s: updates_total %v (registered %v), want %v", what, v, ok, updates)
		}
		if v, ok := gauge(t, reg, "outpost_telemetry_store_series"); !ok || v != series {
			t.Errorf("%s: store_series %v (registered %v), want %v", what, v, ok, series)
		}
		if _, ok := gauge(t, reg, "outpost_telemetry_traps_total"); !ok {
			t.Errorf("%s: traps_total not registered", what)
		}
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	publish(s, 3)
	check("first start", 3, 3)
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		var names []string
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		t.Errorf("after Stop still registered: %s", strings.Join(names, " "))
	}

	// The same Service started again: fresh counters, the series of the reopened store.
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	publish(s, 5)
	check("second start", 5, 5)
	s.Stop(context.Background())

	// A new Service on the same registry.
	s2 := New(cfg, dir, slog.New(w), reg, Sinks{})
	if err := s2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	publish(s2, 1)
	check("new service", 1, 5)
	s2.Stop(context.Background())

	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.msgs {
		if strings.Contains(m, "register") {
			t.Errorf("warning: %s", m)
		}
	}
}

// labelled returns the value of each series of a metric family by the value of one label.
func labelled(t *testing.T, reg *prometheus.Registry, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					out[lp.GetValue()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

// Dropped traps are exported by reason, every reason present from the start.
func TestTrapRejectedMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	addr := fmt.Sprintf("127.0.0.1:%d", snmptest.FreeUDP(t))
	s := New(Config{SNMP: snmp.Config{Traps: snmp.Traps{Listen: addr, Communities: []string{"public"}}}}, t.TempDir(), nil, reg, Sinks{})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("not an snmp message"))
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for labelled(t, reg, "outpost_telemetry_traps_rejected_total", "reason")["malformed"] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("malformed datagram not counted: %v", labelled(t, reg, "outpost_telemetry_traps_rejected_total", "reason"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := labelled(t, reg, "outpost_telemetry_traps_rejected_total", "reason"); len(got) != 7 || got["wrong_digest"] != 0 {
		t.Errorf("reasons %v, want all 7 with only malformed counted", got)
	}
}
