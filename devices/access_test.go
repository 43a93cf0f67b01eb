package devices

import (
	"context"
	"crypto/tls"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/store"
)

// openRegistry opens a registry on a fresh state store.
func openRegistry(t *testing.T) (*Registry, store.Bucket) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "state"), store.Defaults(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	r := NewRegistry(testLogger(t))
	if err := r.Open(context.Background(), db.Bucket("devices")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r, db.Bucket("devices")
}

// pahoClient connects a paho client as user (password secret), or
// returns the connection error.
func pahoClient(t *testing.T, addr, user, secret string, onMsg paho.MessageHandler) (paho.Client, error) {
	t.Helper()
	return pahoConnect(t, "tcp://"+addr, user, secret, onMsg, nil)
}

// pahoConnect connects a paho client to url (tcp://, ws://, wss://) as user
// (password secret), over TLS with tc when set, or returns the connection
// error.
func pahoConnect(t *testing.T, url, user, secret string, onMsg paho.MessageHandler, tc *tls.Config) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID("c-" + user + "-" + t.Name()).
		SetUsername(user).SetPassword(secret).SetAutoReconnect(false).SetConnectRetry(false).
		SetDefaultPublishHandler(onMsg).SetTLSConfig(tc)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(30 * time.Second) { // a first login pays for bcrypt: slow under -race on a loaded host
		t.Fatal("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// subscribeCode subscribes c to filter and returns the SUBACK return code.
func subscribeCode(t *testing.T, c paho.Client, filter string) byte {
	t.Helper()
	tok := c.Subscribe(filter, 0, nil)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("subscribe timed out")
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func TestBrokerDeviceAccess(t *testing.T) {
	reg, _ := openRegistry(t)
	_, s1, err := reg.Add("d1", []string{"sensors"})
	if err != nil {
		t.Fatal(err)
	}
	_, s2, err := reg.Add("d2", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := brokerConfig()
	cfg.Groups = map[string][]Rule{"sensors": {{Publish: []string{"telemetry/{id}/#"}, Subscribe: []string{"fleet/+/cmd"}}}}
	preg := prometheus.NewRegistry()
	b := NewBroker(cfg, testLogger(t), preg)
	b.SetRegistry(reg)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })

	t.Run("authentication", func(t *testing.T) {
		for _, tc := range []struct {
			name, user, secret string
			ok                 bool
		}{
			{"right secret", "d1", s1, true},
			{"wrong secret", "d1", s2, false},
			{"unknown device", "d9", s1, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := pahoClient(t, b.Addr(), tc.user, tc.secret, nil)
				if (err == nil) != tc.ok {
					t.Fatalf("connect: %v, want ok=%v", err, tc.ok)
				}
			})
		}
	})

	got2 := make(chan string, 10)
	d2, err := pahoClient(t, b.Addr(), "d2", s2, func(_ paho.Client, m paho.Message) { got2 <- m.Topic() + " " + string(m.Payload()) })
	if err != nil {
		t.Fatal(err)
	}
	if code := subscribeCode(t, d2, "devices/d2/#"); code != 0 {
		t.Fatalf("d2 on its own namespace: SUBACK %#x", code)
	}
	got1 := make(chan string, 10)
	d1, err := pahoClient(t, b.Addr(), "d1", s1, func(_ paho.Client, m paho.Message) { got1 <- m.Topic() })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		filter string
		code   byte
	}{
		{"devices/#", 0x80}, {"devices/d2/out", 0x80}, {"#", 0x80}, {"$aws/things/d2/shadow/get/accepted", 0x80},
		{"devices/d1/#", 0}, {"$aws/things/d1/shadow/#", 0}, {"fleet/+/cmd", 0}, {"fleet/#", 0x80},
	} {
		if code := subscribeCode(t, d1, tc.filter); code != tc.code {
			t.Errorf("d1 subscribe %s: SUBACK %#x, want %#x", tc.filter, code, tc.code)
		}
	}
	// d1 forges d2's input, and publishes outside any grant: nothing reaches d2.
	for _, topic := range []string{"devices/d2/in", "devices/d2/out"} {
		d1.Publish(topic, 0, false, "forged").WaitTimeout(5 * time.Second)
	}
	d2.Publish("devices/d2/out", 0, false, "real").WaitTimeout(5 * time.Second)
	select {
	case m := <-got2:
		if m != "devices/d2/out real" {
			t.Fatalf("d2 got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("d2 did not get its own message")
	}
	if v := metricValue(t, preg, "outpost_devices_acl_denied_total", "device", "d1"); v < 5 {
		t.Errorf("denials of d1 counted %v, want at least 5", v)
	}
	select {
	case m := <-got2:
		t.Errorf("d2 got %q", m)
	case m := <-got1:
		t.Errorf("d1 got %q", m)
	case <-time.After(300 * time.Millisecond):
	}

	t.Run("MQTT 5 publish refused with a reason code", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(b.Addr())
		out, _ := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-V", "mqttv5", "-u", "d1", "-P", s1,
			"-q", "1", "-t", "devices/d2/in", "-m", "forged").CombinedOutput()
		if !strings.Contains(strings.ToLower(string(out)), "not authorized") {
			t.Errorf("mosquitto_pub -V mqttv5: %s", out)
		}
	})

	t.Run("a will on another device's topic refused", func(t *testing.T) {
		o := paho.NewClientOptions().AddBroker("tcp://"+b.Addr()).SetClientID("d1-will").SetUsername("d1").SetPassword(s1).
			SetAutoReconnect(false).SetWill("devices/d2/out", "forged will", 0, false)
		if tok := paho.NewClient(o).Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
			t.Fatal("d1 connected with a will on devices/d2/out")
		}
		o.SetWill("devices/d1/status", "gone", 0, false).SetClientID("d1-own-will")
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("d1 with a will on its own topic: %v", tok.Error())
		}
		c.Disconnect(100)
	})

	t.Run("anonymous outside registered namespaces", func(t *testing.T) {
		gotAnon := make(chan string, 10)
		anon, err := pahoClient(t, b.Addr(), "", "", func(_ paho.Client, m paho.Message) { gotAnon <- m.Topic() })
		if err != nil {
			t.Fatal(err)
		}
		if code := subscribeCode(t, anon, "devices/#"); code != 0 {
			t.Fatalf("anonymous devices/#: SUBACK %#x", code)
		}
		anon.Publish("devices/d2/out", 0, false, "anonymous forged").WaitTimeout(5 * time.Second)
		anon.Publish("devices/nobody/out", 0, false, "free").WaitTimeout(5 * time.Second)
		d2.Publish("devices/d2/out", 0, false, "real again").WaitTimeout(5 * time.Second)
		if m := <-got2; m != "devices/d2/out real again" {
			t.Errorf("d2 got %q", m)
		}
		if m := <-gotAnon; m != "devices/nobody/out" {
			t.Errorf("anonymous got %q", m)
		}
		select {
		case m := <-gotAnon:
			t.Errorf("anonymous got %q", m)
		case <-time.After(300 * time.Millisecond):
		}
	})

	t.Run("disabled device refused and disconnected", func(t *testing.T) {
		if _, err := reg.SetDisabled("d2", true); err != nil {
			t.Fatal(err)
		}
		b.Kick("d2")
		waitFor(t, "d2 disconnected", 10*time.Second, func() bool { return !d2.IsConnectionOpen() })
		if _, err := pahoClient(t, b.Addr(), "d2", s2, nil); err == nil {
			t.Fatal("disabled device connected")
		}
		if _, err := reg.SetDisabled("d2", false); err != nil {
			t.Fatal(err)
		}
		if _, err := pahoClient(t, b.Addr(), "d2", s2, nil); err != nil {
			t.Fatalf("enabled device refused: %v", err)
		}
	})

	t.Run("last seen recorded", func(t *testing.T) {
		d, err := reg.Get("d1")
		if err != nil {
			t.Fatal(err)
		}
		if d.LastSeen.IsZero() || d.Address == "" {
			t.Errorf("d1 last seen %v from %q", d.LastSeen, d.Address)
		}
	})
}

func TestBrokerGroupGrant(t *testing.T) {
	reg, _ := openRegistry(t)
	_, s1, _ := reg.Add("d1", []string{"sensors"})
	_, s2, _ := reg.Add("d2", nil)
	cfg := brokerConfig()
	cfg.AllowAnonymous = false
	cfg.Users = []BrokerUser{{Username: "ops", PasswordFile: writeFile(t, "ops.pw", "opspw\n")}}
	cfg.Groups = map[string][]Rule{"sensors": {{Publish: []string{"telemetry/{id}/#"}}}}
	b := NewBroker(cfg, testLogger(t), nil)
	b.SetRegistry(reg)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	sub := mqtttest.Sub(t, "tcp://ops:opspw@"+b.Addr(), "telemetry/#", 1)
	d2, err := pahoClient(t, b.Addr(), "d2", s2, nil)
	if err != nil {
		t.Fatal(err)
	}
	d2.Publish("telemetry/d2/t", 0, false, "not granted").WaitTimeout(5 * time.Second)
	d1, err := pahoClient(t, b.Addr(), "d1", s1, nil)
	if err != nil {
		t.Fatal(err)
	}
	d1.Publish("telemetry/d2/t", 0, false, "not d1's").WaitTimeout(5 * time.Second)
	d1.Publish("telemetry/d1/t", 0, false, "granted").WaitTimeout(5 * time.Second)
	if got := sub.Wait(1, 10*time.Second); got[0] != "telemetry/d1/t granted" {
		t.Errorf("user got %q", got)
	}
}

// An anonymous client is accepted over loopback only, and bound by the
// anonymous rules.
func TestBrokerAnonymousLoopbackOnly(t *testing.T) {
	var outside string
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && !ip.IP.IsLoopback() && ip.IP.To4() != nil {
			outside = ip.IP.String()
			break
		}
	}
	if outside == "" {
		t.Fatal("this test needs a non-loopback IPv4 address on the host")
	}
	cfg := brokerConfig()
	cfg.Listen = "0.0.0.0:0" // config validation refuses this; the broker must hold the line too
	cfg.Anonymous = []Rule{{Publish: []string{"devices/{id}/#"}, Subscribe: []string{"devices/{id}/#"}}}
	b := startBroker(t, cfg, nil)
	_, port, _ := net.SplitHostPort(b.Addr())
	if _, err := pahoClient(t, net.JoinHostPort(outside, port), "", "", nil); err == nil {
		t.Error("anonymous client accepted from " + outside)
	}
	c, err := pahoClient(t, net.JoinHostPort("127.0.0.1", port), "", "", nil)
	if err != nil {
		t.Fatalf("anonymous client over loopback refused: %v", err)
	}
	own := "devices/c--" + t.Name() + "/x"
	for filter, want := range map[string]byte{own: 0, "devices/other/x": 0x80} {
		if code := subscribeCode(t, c, filter); code != want {
			t.Errorf("anonymous subscribe %s: %#x, want %#x", filter, code, want)
		}
	}
}
