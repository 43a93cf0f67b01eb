package devices

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// A message matching several filters of the inline client comes once, at
// the highest QoS of those (as a broker delivers to one client), with an
// Ack when manual acknowledgement is on and the message has QoS 1.
func TestInlineClientOverlappingFilters(t *testing.T) {
	b := startBroker(t, brokerConfig(), nil)
	url := "tcp://" + b.Addr()
	rec := newRecorder()
	c := NewInlineClient(b, clientConfig("outpost-test"), rec.handle, testLogger(t), nil)
	c.SetManualAck(true)
	c.SetSubscriptions([]Subscription{{Filter: "dev/+/in", QoS: 0}, {Filter: "dev/#", QoS: 1}})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Stop(context.Background()) }()

	mqtttest.Pub(t, url, "dev/a/in", "one", 1)
	m := rec.next(t, 5*time.Second)
	if m.Topic != "dev/a/in" || string(m.Payload) != "one" || m.QoS != 1 || m.Ack == nil {
		t.Errorf("got %+v, want dev/a/in at QoS 1 with an Ack", m)
	}
	rec.none(t, 300*time.Millisecond) // once, not once per filter

	mqtttest.Pub(t, url, "dev/a/in", "zero", 0)
	if m := rec.next(t, 5*time.Second); m.QoS != 0 || m.Ack != nil {
		t.Errorf("got %+v, want QoS 0 without an Ack", m)
	}
}

// The inline client refuses a message over the limit before the broker
// sees it, fails while not running, and reports itself connected only
// between Start and Stop.
func TestInlineClientLimitsAndLifecycle(t *testing.T) {
	b := startBroker(t, brokerConfig(), nil)
	reg := prometheus.NewRegistry()
	cfg := clientConfig("outpost-test")
	c := NewInlineClient(b, cfg, nil, testLogger(t), reg)
	ctx := context.Background()
	if c.Connected() {
		t.Error("connected before Start")
	}
	if err := c.Publish(ctx, "out/x", 0, []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Errorf("publish before Start: %v, want ErrNotConnected", err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.Connected() || metricValue(t, reg, "outpost_mqtt_connected") != 1 {
		t.Error("not connected after Start")
	}
	sub := mqtttest.Sub(t, "tcp://"+b.Addr(), "out/#", 1)
	big := []byte(strings.Repeat("x", cfg.MessageLimit()))
	if err := c.Publish(ctx, "out/big", 1, big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("publish of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
	if err := c.Publish(ctx, "out/small", 1, []byte("fits")); err != nil {
		t.Fatal(err)
	}
	if got := sub.Wait(1, 5*time.Second); len(got) != 1 || got[0] != "out/small fits" {
		t.Errorf("mosquitto_sub got %q", got)
	}
	if v := metricValue(t, reg, "outpost_mqtt_messages_published_total", "result", "error"); v != 2 {
		t.Errorf("published error = %v, want 2", v)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Connected() || metricValue(t, reg, "outpost_mqtt_connected") != 0 {
		t.Error("connected after Stop")
	}
	if err := c.Publish(ctx, "out/x", 0, []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Errorf("publish after Stop: %v, want ErrNotConnected", err)
	}
	if err := c.Start(ctx); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Stop: %v, want ErrStopped", err)
	}
}
