package devices

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/outpost-edge/outpost/internal/confval"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func brokerConfig() BrokerConfig {
	c := MQTTDefaults().Broker
	c.Listen = "127.0.0.1:0"
	return c
}

func startBroker(t *testing.T, cfg BrokerConfig, reg prometheus.Registerer) *Broker {
	t.Helper()
	b := NewBroker(cfg, testLogger(t), reg)
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("stop broker: %v", err)
		}
	})
	return b
}

func clientConfig(id string) MQTTConfig {
	c := MQTTDefaults()
	c.ClientID = id
	c.ConnectTimeout = confval.Duration(5 * time.Second)
	c.PublishTimeout = confval.Duration(5 * time.Second)
	c.MaxReconnect = confval.Duration(time.Second)
	return c
}

// recorder is a non-blocking Handler feeding a buffered channel.
type recorder struct{ ch chan Message }

func newRecorder() *recorder { return &recorder{ch: make(chan Message, 10000)} }

func (r *recorder) handle(m Message) {
	select {
	case r.ch <- m:
	default:
	}
}

// next waits for a message.
func (r *recorder) next(t *testing.T, timeout time.Duration) Message {
	t.Helper()
	select {
	case m := <-r.ch:
		return m
	case <-time.After(timeout):
		t.Fatalf("no message in %s", timeout)
		return Message{}
	}
}

// none checks that nothing arrives for d.
func (r *recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-r.ch:
		t.Fatalf("unexpected message %s %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

func startClient(t *testing.T, cfg MQTTConfig, url string, h Handler, reg prometheus.Registerer, subs ...Subscription) *Client {
	t.Helper()
	c := NewClient(cfg, url, h, testLogger(t), reg)
	c.SetSubscriptions(subs)
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start client: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop client: %v", err)
		}
	})
	return c
}

func startInlineClient(t *testing.T, b *Broker, cfg MQTTConfig, h Handler, reg prometheus.Registerer, subs ...Subscription) *InlineClient {
	t.Helper()
	c := NewInlineClient(b, cfg, h, testLogger(t), reg)
	c.SetSubscriptions(subs)
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start inline client: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stop inline client: %v", err)
		}
	})
	return c
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue sums the samples of a metric family (optionally one label value).
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !labelsMatch(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func labelsMatch(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		ok := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == kv[i] && lp.GetValue() == kv[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
