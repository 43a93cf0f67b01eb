package devices

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/confval"
)

// brokers returns the URLs of the two kinds of broker the client must work with.
func brokers(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"embedded":  func(t *testing.T) string { return "tcp://" + startBroker(t, brokerConfig(), nil).Addr() },
		"mosquitto": func(t *testing.T) string { return mqtttest.StartMosquitto(t) },
	}
}

// daemonClient is what the daemon uses of Client and InlineClient.
type daemonClient interface {
	SetSubscriptions([]Subscription)
	Publish(ctx context.Context, topic string, qos byte, payload []byte) error
	Connected() bool
}

// daemonClients starts each kind of client the daemon uses, on its broker,
// and returns it with the broker's URL for other clients.
func daemonClients(t *testing.T) map[string]func(t *testing.T, h Handler, reg prometheus.Registerer, subs ...Subscription) (daemonClient, string) {
	cs := make(map[string]func(t *testing.T, h Handler, reg prometheus.Registerer, subs ...Subscription) (daemonClient, string))
	for name, start := range brokers(t) {
		cs[name] = func(t *testing.T, h Handler, reg prometheus.Registerer, subs ...Subscription) (daemonClient, string) {
			url := start(t)
			return startClient(t, clientConfig("outpost-test"), url, h, reg, subs...), url
		}
	}
	cs["inline"] = func(t *testing.T, h Handler, reg prometheus.Registerer, subs ...Subscription) (daemonClient, string) {
		b := startBroker(t, brokerConfig(), nil)
		return startInlineClient(t, b, clientConfig("outpost-test"), h, reg, subs...), "tcp://" + b.Addr()
	}
	return cs
}

func TestClientSubscribePublish(t *testing.T) {
	for name, start := range daemonClients(t) {
		t.Run(name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			rec := newRecorder()
			c, url := start(t, rec.handle, reg,
				Subscription{Filter: "dev/+/state", QoS: 1}, Subscription{Filter: "cmd/#", QoS: 0})
			waitFor(t, "connected", 5*time.Second, c.Connected)
			// paho reports the connection before its connect handler set the gauge.
			waitFor(t, "outpost_mqtt_connected = 1", 5*time.Second, func() bool { return metricValue(t, reg, "outpost_mqtt_connected") == 1 })
			// The subscriptions are made asynchronously on connect: wait for
			// the first delivery before checking the rest.
			waitFor(t, "subscription active", 5*time.Second, func() bool {
				mqtttest.Pub(t, url, "dev/probe/state", "probe", 0)
				select {
				case <-rec.ch:
					return true
				case <-time.After(100 * time.Millisecond):
					return false
				}
			})
			drain(rec)

			mqtttest.Pub(t, url, "dev/a/state", "on", 1)
			mqtttest.Pub(t, url, "dev/a/other", "no", 0) // not matched
			mqtttest.Pub(t, url, "cmd/x/y/z", "deep", 0)
			m := rec.next(t, 5*time.Second)
			if m.Topic != "dev/a/state" || string(m.Payload) != "on" || m.QoS != 1 {
				t.Errorf("got %+v", m)
			}
			m = rec.next(t, 5*time.Second)
			if m.Topic != "cmd/x/y/z" || string(m.Payload) != "deep" {
				t.Errorf("got %+v", m)
			}

			// Publishing: QoS 0 and 1, seen by a real mosquitto_sub.
			sub := mqtttest.Sub(t, url, "out/#", 2)
			ctx := context.Background()
			if err := c.Publish(ctx, "out/q0", 0, []byte("zero")); err != nil {
				t.Fatal(err)
			}
			if err := c.Publish(ctx, "out/q1", 1, []byte("one")); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(sub.Wait(2, 5*time.Second), "|")
			if !strings.Contains(got, "out/q0 zero") || !strings.Contains(got, "out/q1 one") {
				t.Errorf("mosquitto_sub got %q", got)
			}
			if v := metricValue(t, reg, "outpost_mqtt_messages_published_total", "result", "ok"); v != 2 {
				t.Errorf("published ok = %v, want 2", v)
			}
			if v := metricValue(t, reg, "outpost_mqtt_messages_received_total"); v < 3 {
				t.Errorf("received = %v, want >= 3", v)
			}

			// SetSubscriptions at run time: cmd/# removed, new/+ added.
			c.SetSubscriptions([]Subscription{{Filter: "dev/+/state", QoS: 1}, {Filter: "new/+", QoS: 1}})
			waitFor(t, "new filter delivered", 5*time.Second, func() bool {
				mqtttest.Pub(t, url, "new/a", "hello", 1)
				select {
				case m := <-rec.ch:
					return m.Topic == "new/a"
				case <-time.After(100 * time.Millisecond):
					return false
				}
			})
			drain(rec)
			mqtttest.Pub(t, url, "cmd/removed", "gone", 1)
			rec.none(t, 300*time.Millisecond)
			mqtttest.Pub(t, url, "dev/b/state", "still", 1)
			if m := rec.next(t, 5*time.Second); m.Topic != "dev/b/state" {
				t.Errorf("got %+v", m)
			}
		})
	}
}

func drain(r *recorder) {
	for {
		select {
		case <-r.ch:
		case <-time.After(100 * time.Millisecond):
			return
		}
	}
}

func TestClientReconnect(t *testing.T) {
	mosq := mqtttest.NewMosquitto(t)
	mosq.Start()
	reg := prometheus.NewRegistry()
	rec := newRecorder()
	cfg := clientConfig("outpost-reconnect")
	c := startClient(t, cfg, mosq.URL(), rec.handle, reg, Subscription{Filter: "r/#", QoS: 1})
	waitFor(t, "connected", 5*time.Second, c.Connected)

	mosq.Stop()
	waitFor(t, "disconnected", 10*time.Second, func() bool { return !c.Connected() })
	if err := c.Publish(context.Background(), "r/x", 1, []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Errorf("publish while disconnected: %v, want ErrNotConnected", err)
	}
	if v := metricValue(t, reg, "outpost_mqtt_messages_published_total", "result", "error"); v != 1 {
		t.Errorf("published error = %v, want 1", v)
	}
	mosq.Start()
	waitFor(t, "reconnected", 15*time.Second, c.Connected)
	waitFor(t, "resubscribed", 5*time.Second, func() bool {
		mqtttest.Pub(t, mosq.URL(), "r/after", "restart", 1)
		select {
		case m := <-rec.ch:
			return m.Topic == "r/after"
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
	if v := metricValue(t, reg, "outpost_mqtt_reconnects_total"); v < 1 {
		t.Errorf("outpost_mqtt_reconnects_total = %v, want >= 1", v)
	}
}

func TestClientStartWithoutBroker(t *testing.T) {
	cfg := clientConfig("outpost-nobroker")
	cfg.ConnectTimeout = confval.Duration(300 * time.Millisecond)
	mosq := mqtttest.NewMosquitto(t) // configured, not started yet
	rec := newRecorder()
	start := time.Now()
	c := startClient(t, cfg, mosq.URL(), rec.handle, nil, Subscription{Filter: "late/#"})
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Start took %s with an unreachable broker", d)
	}
	if c.Connected() {
		t.Fatal("connected without a broker")
	}
	mosq.Start()
	waitFor(t, "connected in the background", 15*time.Second, c.Connected)
	waitFor(t, "subscribed", 5*time.Second, func() bool {
		mqtttest.Pub(t, mosq.URL(), "late/a", "x", 0)
		select {
		case <-rec.ch:
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
}

func TestClientAuth(t *testing.T) {
	mosqURL := mqtttest.StartMosquitto(t, mqtttest.WithUser("outpost", "pa55"))
	cfg := clientConfig("outpost-auth")
	cfg.Username = "outpost"
	cfg.PasswordFile = writeFile(t, "pw", "pa55\n")
	c := startClient(t, cfg, strings.Replace(mosqURL, "tcp://", "mqtt://", 1), nil, nil)
	waitFor(t, "connected with a password", 5*time.Second, c.Connected)
}

func TestClientBadSettings(t *testing.T) {
	tests := []struct {
		name string
		url  string
		mod  func(*MQTTConfig)
	}{
		{"missing password file", "tcp://127.0.0.1:1", func(c *MQTTConfig) { c.PasswordFile = "/nonexistent/pw" }},
		{"missing ca file", "ssl://127.0.0.1:1", func(c *MQTTConfig) { c.TLS.CAFile = "/nonexistent/ca.pem" }},
		{"bad client cert", "mqtts://127.0.0.1:1", func(c *MQTTConfig) { c.TLS.CertFile, c.TLS.KeyFile = "/nonexistent/c", "/nonexistent/k" }},
		{"bad scheme", "http://127.0.0.1:1", func(*MQTTConfig) {}},
		{"no port", "tcp://127.0.0.1", func(*MQTTConfig) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := clientConfig("bad")
			tc.mod(&cfg)
			c := NewClient(cfg, tc.url, nil, testLogger(t), nil)
			if err := c.Start(context.Background()); err == nil {
				t.Fatal("Start succeeded")
			}
			if err := c.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestClientStopTwiceAndMetricsReuse(t *testing.T) {
	reg := prometheus.NewRegistry()
	url := "tcp://" + startBroker(t, brokerConfig(), nil).Addr()
	for range 2 { // same registry twice: no panic, metrics shared
		c := NewClient(clientConfig("twice"), url, nil, testLogger(t), reg)
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(context.Background(), "t", 1, []byte("x")); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := c.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if c.Connected() {
			t.Error("connected after Stop")
		}
	}
	if v := metricValue(t, reg, "outpost_mqtt_messages_published_total", "result", "ok"); v != 2 {
		t.Errorf("published ok = %v, want 2 (shared across clients)", v)
	}
}
