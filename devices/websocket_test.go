package devices

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/testpki"
)

// wsBroker starts a broker with a WebSocket listener (wss:// with the
// server certificate and client CA of pki when tls) logging in the devices
// of reg.
func wsBroker(t *testing.T, pki *testpki.CA, reg *Registry, tls bool, origins ...string) *Broker {
	t.Helper()
	cfg := brokerConfig()
	cfg.WebSocket = BrokerWebSocket{Listen: "127.0.0.1:0", TLS: tls, AllowedOrigins: origins}
	if tls {
		cert, key := pki.Server(t, "server", net.ParseIP("127.0.0.1"))
		cfg.TLS = BrokerTLS{CertFile: cert, KeyFile: key, ClientCAFile: pki.CAFile, Identity: IdentityCN}
	}
	b := NewBroker(cfg, testLogger(t), prometheus.NewRegistry())
	b.SetRegistry(reg)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	return b
}

// clientTLS trusts pki's CA and, when cert is set, presents it.
func clientTLS(t *testing.T, pki *testpki.CA, cert, key string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	tc.RootCAs.AppendCertsFromPEM(pem)
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		// Presented whatever CAs the server names (as a device does; Go's
		// default would leave out one the server does not name).
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return tc
}

// wsMessages collects what a paho client receives.
func wsMessages() (chan string, paho.MessageHandler) {
	ch := make(chan string, 100)
	return ch, func(_ paho.Client, m paho.Message) { ch <- m.Topic() + " " + string(m.Payload()) }
}

func TestBrokerWebSocket(t *testing.T) {
	reg, _ := openRegistry(t)
	secrets := map[string]string{}
	for _, id := range []string{"d1", "d2"} {
		_, s, err := reg.Add(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		secrets[id] = s
	}
	b := wsBroker(t, nil, reg, false, "https://console.example.com")
	url := "ws://" + b.WSAddr() + "/mqtt"

	t.Run("a device logs in and keeps to its rules", func(t *testing.T) {
		d1got, h1 := wsMessages()
		d1, err := pahoConnect(t, url, "d1", secrets["d1"], h1, nil)
		if err != nil {
			t.Fatalf("d1 over ws: %v", err)
		}
		if code := subscribeCode(t, d1, "devices/d1/#"); code != 0 {
			t.Fatalf("own namespace: suback %#x", code)
		}
		if code := subscribeCode(t, d1, "devices/#"); code != 0x80 {
			t.Fatalf("devices/#: suback %#x, want 0x80", code)
		}
		d2got, h2 := wsMessages()
		d2, err := pahoConnect(t, url, "d2", secrets["d2"], h2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if code := subscribeCode(t, d2, "devices/d2/#"); code != 0 {
			t.Fatalf("d2: suback %#x", code)
		}
		// A device on the TCP listener and one on the WebSocket listener
		// reach each other through the same topics.
		mqtttest.Pub(t, "mqtt://d1:"+secrets["d1"]+"@"+b.Addr(), "devices/d1/from-tcp", "hello", 1)
		if m := waitMessage(t, d1got); m != "devices/d1/from-tcp hello" {
			t.Fatalf("d1 over ws got %q", m)
		}
		if tok := d1.Publish("devices/d1/out", 1, false, "from-ws"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		if m := waitMessage(t, d1got); m != "devices/d1/out from-ws" {
			t.Fatalf("d1 got %q", m)
		}
		// Refused: MQTT 3.1.1 has no negative PUBACK, the broker closes the connection.
		if tok := d1.Publish("devices/d2/in", 1, false, "forged"); !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
			t.Fatalf("publish on d2's topic: %v, want the connection closed", tok.Error())
		}
		select {
		case m := <-d2got:
			t.Fatalf("d2 got %q, forged by d1 over ws", m)
		case <-time.After(300 * time.Millisecond):
		}
	})

	t.Run("a wrong secret is refused", func(t *testing.T) {
		if _, err := pahoConnect(t, url, "d1", secrets["d2"], nil, nil); err == nil {
			t.Fatal("d1 logged in over ws with d2's secret")
		}
	})

	for _, tc := range []struct {
		name, origin string
		status       int
	}{
		{"no origin (not a browser)", "", http.StatusSwitchingProtocols},
		{"the listener's own host", "http://" + b.WSAddr(), http.StatusSwitchingProtocols},
		{"an allowed origin", "https://console.example.com", http.StatusSwitchingProtocols},
		{"another site", "https://evil.example.com", http.StatusForbidden},
	} {
		t.Run("origin: "+tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			c, resp, err := websocket.DefaultDialer.Dial(url, h)
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%v)", resp.StatusCode, tc.status, err)
			}
			if c != nil {
				c.Close()
			}
		})
	}

	t.Run("a plain http request is refused", func(t *testing.T) {
		resp, err := http.Get("http://" + b.WSAddr() + "/mqtt")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "websocket") {
			t.Fatalf("status %d %q, want 400 naming websocket", resp.StatusCode, body)
		}
	})

	t.Run("a text message ends the connection", func(t *testing.T) {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.WriteMessage(websocket.TextMessage, []byte("not mqtt")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err == nil || os.IsTimeout(err) {
			t.Fatalf("read after a text message: %v, want the connection closed", err)
		}
	})

	t.Run("a packet split across messages and messages holding several packets", func(t *testing.T) {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := "raw-ws"
		connect := append([]byte{0x10, byte(10 + 2 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(id))}, id...)
		for _, part := range [][]byte{connect[:3], connect[3:9], connect[9:]} {
			if err := c.WriteMessage(websocket.BinaryMessage, part); err != nil {
				t.Fatal(err)
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, ack, err := c.ReadMessage(); err != nil || len(ack) != 4 || ack[0] != 0x20 || ack[3] != 0 {
			t.Fatalf("connack %x: %v", ack, err)
		}
		pings := []byte{0xc0, 0, 0xc0, 0} // two PINGREQ in one message
		if err := c.WriteMessage(websocket.BinaryMessage, pings); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, resp, err := c.ReadMessage(); err != nil || len(resp) != 2 || resp[0] != 0xd0 {
				t.Fatalf("pingresp %d: %x %v", i, resp, err)
			}
		}
	})
}

func TestBrokerWebSocketTLS(t *testing.T) {
	reg, _ := openRegistry(t)
	_, s2, err := reg.Add("d2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Add("d1", nil); err != nil {
		t.Fatal(err)
	}
	pki := testpki.New(t, t.TempDir(), "devices")
	other := testpki.New(t, t.TempDir(), "other")
	b := wsBroker(t, pki, reg, true)
	if b.TLSAddr() != "" {
		t.Fatalf("a TLS listener at %s without mqtt.broker.tls.listen", b.TLSAddr())
	}
	url := "wss://" + b.WSAddr() + "/mqtt"
	d1c, d1k := pki.Client(t, "d1")
	oc, ok := other.Client(t, "d1")
	for _, tc := range []struct {
		name, user, secret, cert, key string
		ok                            bool
	}{
		{"device certificate", "", "", d1c, d1k, true},
		{"password", "d2", s2, "", "", true},
		{"certificate of an unknown CA", "", "", oc, ok, false},
		{"certificate of another device than the username", "d2", s2, d1c, d1k, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := pahoConnect(t, url, tc.user, tc.secret, nil, clientTLS(t, pki, tc.cert, tc.key))
			if (err == nil) != tc.ok {
				t.Fatalf("connect: %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				return
			}
			own := "devices/" + map[bool]string{true: "d2", false: "d1"}[tc.user == "d2"] + "/x"
			if code := subscribeCode(t, c, own); code != 0 {
				t.Fatalf("subscribe %s: %#x", own, code)
			}
			if code := subscribeCode(t, c, "devices/+/x"); code != 0x80 {
				t.Fatalf("subscribe devices/+/x: %#x, want 0x80", code)
			}
		})
	}
	t.Run("plain ws on the wss listener", func(t *testing.T) {
		if _, err := pahoConnect(t, "ws://"+b.WSAddr()+"/mqtt", "d2", s2, nil, nil); err == nil {
			t.Fatal("a plain WebSocket client was served on the wss listener")
		}
	})
}

func TestBrokerWebSocketConfigCheck(t *testing.T) {
	pki := testpki.New(t, t.TempDir(), "devices")
	cert, key := pki.Server(t, "server", net.ParseIP("127.0.0.1"))
	for _, tc := range []struct {
		name string
		edit func(*BrokerConfig)
		want string // in the problems; "" for none
	}{
		{"plain", func(c *BrokerConfig) { c.WebSocket.Listen = "127.0.0.1:8083" }, ""},
		{"tls with the broker's certificate", func(c *BrokerConfig) {
			c.WebSocket = BrokerWebSocket{Listen: "127.0.0.1:8084", TLS: true}
			c.TLS.CertFile, c.TLS.KeyFile = cert, key
		}, ""},
		{"tls without a certificate", func(c *BrokerConfig) { c.WebSocket = BrokerWebSocket{Listen: "127.0.0.1:8084", TLS: true} }, "mqtt.broker.tls.cert_file"},
		{"tls without a listener", func(c *BrokerConfig) { c.WebSocket.TLS = true }, "mqtt.broker.websocket.listen"},
		{"bad address", func(c *BrokerConfig) { c.WebSocket.Listen = "nowhere" }, "mqtt.broker.websocket.listen"},
		{"origin with a path", func(c *BrokerConfig) {
			c.WebSocket = BrokerWebSocket{Listen: "127.0.0.1:8083", AllowedOrigins: []string{"https://a.example/app"}}
		}, "allowed_origins[0]"},
		{"origin without a scheme", func(c *BrokerConfig) {
			c.WebSocket = BrokerWebSocket{Listen: "127.0.0.1:8083", AllowedOrigins: []string{"a.example"}}
		}, "allowed_origins[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := MQTTDefaults()
			tc.edit(&cfg.Broker)
			d := confval.NewDoc([]byte("mqtt: {}"), "outpost.yaml")
			cfg.Validate(d.Checker().At("mqtt"))
			got := fmt.Sprint(d.Err())
			if tc.want == "" && d.Err() != nil || !strings.Contains(got, tc.want) {
				t.Fatalf("problems %s, want one with %q", got, tc.want)
			}
		})
	}
}

// waitMessage waits for one message of a wsMessages channel.
func waitMessage(t *testing.T, ch chan string) string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message in 10s")
		return ""
	}
}

// A wss:// listener without a TLS listener of its own serves the
// certificate a reload read again.
func TestBrokerWebSocketTLSReload(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := testpki.New(t, dir, "old"), testpki.New(t, dir, "new")
	certFile, keyFile := filepath.Join(dir, "broker.pem"), filepath.Join(dir, "broker-key.pem")
	oldCA.ServerAt(t, "old-server", certFile, keyFile, net.ParseIP("127.0.0.1"))
	cfg := brokerConfig()
	cfg.WebSocket = BrokerWebSocket{Listen: "127.0.0.1:0", TLS: true}
	cfg.TLS = BrokerTLS{CertFile: certFile, KeyFile: keyFile, Identity: IdentityCN}
	b := startBroker(t, cfg, nil)
	url := "wss://" + b.WSAddr() + "/mqtt"
	if _, err := pahoConnect(t, url, "", "", nil, clientTLS(t, oldCA, "", "")); err != nil {
		t.Fatalf("before the reload: %v", err)
	}
	newCA.ServerAt(t, "new-server", certFile, keyFile, net.ParseIP("127.0.0.1"))
	apply, restart, err := b.PrepareReload(cfg)
	if err != nil || len(restart) != 0 {
		t.Fatalf("prepare reload: %v, restart %q", err, restart)
	}
	apply()
	if _, err := pahoConnect(t, url, "", "", nil, clientTLS(t, oldCA, "", "")); err == nil {
		t.Fatal("the old certificate is still served")
	}
	if _, err := pahoConnect(t, url, "", "", nil, clientTLS(t, newCA, "", "")); err != nil {
		t.Fatalf("the new certificate: %v", err)
	}
}
