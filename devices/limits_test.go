package devices

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestBrokerDeviceLimits(t *testing.T) {
	reg, _ := openRegistry(t)
	_, s1, err := reg.Add("d1", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, s2, err := reg.Add("d2", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := brokerConfig()
	cfg.Limits = DeviceLimits{MessagesPerSecond: 1, Burst: 3, MaxMessageSize: 64}
	preg := prometheus.NewRegistry()
	b := NewBroker(cfg, testLogger(t), preg)
	b.SetRegistry(reg)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	rec := newRecorder()
	startInlineClient(t, b, clientConfig("outpost"), rec.handle, nil, Subscription{Filter: "devices/+/in", QoS: 1})

	d1, err := pahoClient(t, b.Addr(), "d1", s1, nil)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := pahoClient(t, b.Addr(), "d2", s2, nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a flooding device is refused past its rate, acknowledged, and stays connected", func(t *testing.T) {
		for range 20 {
			if tok := d1.Publish("devices/d1/in", 1, false, "flood"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("MQTT 3.1.1 publish over the rate not acknowledged: %v", tok.Error())
			}
		}
		// The other device is not slowed nor refused.
		for range 3 {
			if tok := d2.Publish("devices/d2/in", 1, false, "calm"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("d2: %v", tok.Error())
			}
		}
		var flood, calm int
		deadline := time.After(3 * time.Second)
	collect:
		for {
			select {
			case m := <-rec.ch:
				if m.Topic == "devices/d1/in" {
					flood++
				} else {
					calm++
				}
			case <-deadline:
				break collect
			}
		}
		// The burst (3), and at most a few more at 1/s while the loop ran.
		if flood < 3 || flood > 6 || calm != 3 {
			t.Fatalf("delivered %d of d1's 20 messages (want 3 to 6) and %d of d2's 3", flood, calm)
		}
		if v := metricValue(t, preg, "outpost_devices_limited_total", "device", "d1", "reason", "rate"); v != float64(20-flood) {
			t.Errorf("outpost_devices_limited_total{d1,rate} = %v, want %d", v, 20-flood)
		}
		if !d1.IsConnected() {
			t.Error("d1 disconnected")
		}
	})

	t.Run("a message over the size limit is refused", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond) // a token back
		if tok := d2.Publish("devices/d2/in", 1, false, strings.Repeat("x", 65)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("d2: %v", tok.Error())
		}
		rec.none(t, 300*time.Millisecond)
		if v := metricValue(t, preg, "outpost_devices_limited_total", "device", "d2", "reason", "size"); v != 1 {
			t.Errorf("outpost_devices_limited_total{d2,size} = %v, want 1", v)
		}
	})

	t.Run("MQTT 5 gets the reason code", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(b.Addr())
		out, _ := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-V", "mqttv5", "-u", "d2", "-P", s2, "-d",
			"-q", "1", "-t", "devices/d2/in", "-m", strings.Repeat("x", 65)).CombinedOutput()
		if !strings.Contains(string(out), "RC:131") { // 0x83 implementation specific error
			t.Errorf("mosquitto_pub -V mqttv5 of 65 bytes: %s", out)
		}
		args := []string{"-h", host, "-p", port, "-V", "mqttv5", "-u", "d1", "-P", s1, "-d", "-q", "1", "-t", "devices/d1/in", "-l"}
		cmd := exec.Command("mosquitto_pub", args...)
		cmd.Stdin = strings.NewReader(strings.Repeat("m\n", 10))
		out, _ = cmd.CombinedOutput()
		if !strings.Contains(string(out), "RC:151") { // 0x97 quota exceeded
			t.Errorf("mosquitto_pub -V mqttv5 of 10 messages over the rate: %s", out)
		}
	})
}

// A journaled QoS 1 message is injected again once it is safe (the
// durable publish): that takes no second token from its device.
func TestBrokerDeviceLimitsJournaled(t *testing.T) {
	reg, _ := openRegistry(t)
	_, s1, err := reg.Add("d1", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := brokerConfig()
	cfg.Limits = DeviceLimits{MessagesPerSecond: 0.001, Burst: 2, MaxMessageSize: 64}
	b := NewBroker(cfg, testLogger(t), nil)
	b.SetRegistry(reg)
	b.SetDurablePublish(func(_ context.Context, _ string, _ []byte, _ byte, done func(error)) (bool, error) {
		go done(nil)
		return true, nil
	})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	rec := newRecorder()
	startInlineClient(t, b, clientConfig("outpost"), rec.handle, nil, Subscription{Filter: "devices/+/in", QoS: 1})
	d1, err := pahoClient(t, b.Addr(), "d1", s1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "two", "three"} {
		if tok := d1.Publish("devices/d1/in", 1, false, m); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", m, tok.Error())
		}
	}
	for _, want := range []string{"one", "two"} {
		if m := rec.next(t, 5*time.Second); string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
	}
	rec.none(t, 300*time.Millisecond) // "three" is over the burst
}
