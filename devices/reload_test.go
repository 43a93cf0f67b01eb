package devices

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/testpki"
)

func TestBrokerReload(t *testing.T) {
	reg, _ := openRegistry(t)
	_, s1, err := reg.Add("d1", []string{"sensors"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	devCA := testpki.New(t, dir, "devices")
	oldCA, newCA := testpki.New(t, dir, "old"), testpki.New(t, dir, "new")
	certFile, keyFile := filepath.Join(dir, "broker.pem"), filepath.Join(dir, "broker-key.pem")
	oldCA.ServerAt(t, "old-server", certFile, keyFile, net.ParseIP("127.0.0.1"))
	b, _ := tlsBroker(t, devCA, reg, func(c *BrokerConfig) {
		c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
		c.Groups = map[string][]Rule{"sensors": {{Subscribe: []string{"fleet/+/cmd"}}}}
	})
	inline := startInlineClient(t, b, clientConfig("outpost"), nil, nil)
	publish := func(topic string) {
		t.Helper()
		if err := inline.Publish(context.Background(), topic, 0, []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	got1, gotAnon := make(chan string, 10), make(chan string, 10)
	d1, err := pahoClient(t, b.Addr(), "d1", s1, func(_ paho.Client, m paho.Message) { got1 <- m.Topic() })
	if err != nil {
		t.Fatal(err)
	}
	anon, err := pahoClient(t, b.Addr(), "", "", func(_ paho.Client, m paho.Message) { gotAnon <- m.Topic() })
	if err != nil {
		t.Fatal(err)
	}
	if code := subscribeCode(t, d1, "fleet/a/cmd"); code != 0 {
		t.Fatalf("fleet/a/cmd granted by the group: SUBACK %#x", code)
	}
	if code := subscribeCode(t, anon, "x/#"); code != 0 {
		t.Fatalf("x/# granted to anonymous clients: SUBACK %#x", code)
	}
	dc, dk := devCA.Client(t, "d1")
	overTLS := mqtttest.Sub(t, tlsURL(b.TLSAddr(), "", "", oldCA.CAFile, dc, dk), "devices/d1/#", 0)
	publish("fleet/a/cmd")
	publish("x/1")
	for ch, want := range map[chan string]string{got1: "fleet/a/cmd", gotAnon: "x/1"} {
		select {
		case m := <-ch:
			if m != want {
				t.Fatalf("got %q, want %q", m, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not delivered before the reload", want)
		}
	}

	t.Run("unreadable certificate: nothing changes", func(t *testing.T) {
		cfg := b.cfg
		cfg.TLS.CertFile = writeFile(t, "garbage.pem", "not a certificate")
		cfg.Groups = map[string][]Rule{}
		if _, _, err := b.PrepareReload(cfg); err == nil {
			t.Fatal("a reload with a garbage certificate prepared")
		}
		publish("fleet/a/cmd")
		if m := <-got1; m != "fleet/a/cmd" {
			t.Fatalf("got %q", m)
		}
	})

	newCA.ServerAt(t, "new-server", certFile, keyFile, net.ParseIP("127.0.0.1"))
	cfg := b.cfg
	cfg.Groups, cfg.Anonymous = map[string][]Rule{}, []Rule{}
	cfg.MaxInflight = 10
	apply, restart, err := b.PrepareReload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(restart, []string{"mqtt.broker.max_inflight"}) {
		t.Errorf("restart keys %q, want mqtt.broker.max_inflight", restart)
	}
	apply()

	t.Run("removed grants are lost at once, connections kept", func(t *testing.T) {
		publish("fleet/a/cmd")
		publish("x/2")
		publish("devices/d1/out")
		if got := overTLS.Wait(1, 10*time.Second); len(got) != 1 || got[0] != "devices/d1/out m" {
			t.Fatalf("the client connected over TLS before the reload got %q", got)
		}
		select {
		case m := <-got1:
			t.Fatalf("d1 got %q after its group's grant was removed", m)
		case m := <-gotAnon:
			t.Fatalf("anonymous client got %q after its rules were emptied", m)
		case <-time.After(300 * time.Millisecond):
		}
		if !d1.IsConnected() || !anon.IsConnected() {
			t.Fatal("a reload disconnected a client")
		}
		if code := subscribeCode(t, d1, "fleet/b/cmd"); code != 0x80 {
			t.Fatalf("fleet/b/cmd after the grant was removed: SUBACK %#x", code)
		}
	})

	t.Run("the next handshake uses the new certificate", func(t *testing.T) {
		if err := mqtttest.PubErr(t, tlsURL(b.TLSAddr(), "", "", oldCA.CAFile, dc, dk), "devices/d1/x", "m", 1); err == nil {
			t.Fatal("the old server certificate is still served")
		}
		if err := mqtttest.PubErr(t, tlsURL(b.TLSAddr(), "", "", newCA.CAFile, dc, dk), "devices/d1/x", "m", 1); err != nil {
			t.Fatalf("new server certificate: %v", err)
		}
	})
}
