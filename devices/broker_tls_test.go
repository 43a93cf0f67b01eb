package devices

import (
	"cmp"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/testpki"
)

// tlsURL is a mosquitto client URL (mqtttest) for the broker's TLS
// listener: the client trusts caFile and, with cert, presents it.
func tlsURL(addr, user, secret, caFile, cert, key string) string {
	q := url.Values{"cafile": {caFile}}
	if cert != "" {
		q.Set("cert", cert)
		q.Set("key", key)
	}
	u := url.URL{Scheme: "mqtts", Host: addr, RawQuery: q.Encode()}
	if user != "" {
		u.User = url.UserPassword(user, secret)
	}
	return u.String()
}

// tlsBroker starts a broker with a TLS listener whose server certificate
// and client CA come from pki, logging in the devices of reg.
func tlsBroker(t *testing.T, pki *testpki.CA, reg *Registry, edit func(*BrokerConfig)) (*Broker, *prometheus.Registry) {
	t.Helper()
	cert, key := pki.Server(t, "server", net.ParseIP("127.0.0.1"))
	cfg := brokerConfig()
	cfg.TLS = BrokerTLS{Listen: "127.0.0.1:0", CertFile: cert, KeyFile: key, ClientCAFile: pki.CAFile, Identity: IdentityCN}
	if edit != nil {
		edit(&cfg)
	}
	preg := prometheus.NewRegistry()
	b := NewBroker(cfg, testLogger(t), preg)
	b.SetRegistry(reg)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	return b, preg
}

func TestBrokerTLSDeviceCertificates(t *testing.T) {
	reg, _ := openRegistry(t)
	secrets := map[string]string{}
	for _, id := range []string{"d1", "d2", "d3"} {
		_, s, err := reg.Add(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		secrets[id] = s
	}
	if _, err := reg.SetDisabled("d3", true); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pki := testpki.New(t, dir, "devices")
	other := testpki.New(t, t.TempDir(), "other")
	b, _ := tlsBroker(t, pki, reg, nil)
	certs := map[string][2]string{}
	for _, id := range []string{"d1", "d3", "d9"} {
		c, k := pki.Client(t, id)
		certs[id] = [2]string{c, k}
	}
	ec, ek := pki.Client(t, "d1-expired", func(c *x509.Certificate) { testpki.Expired(c); c.Subject.CommonName = "d1" })
	oc, ok := other.Client(t, "d1")
	d1 := certs["d1"]

	for _, tc := range []struct {
		name, user, secret, cert, key string
		ok                            bool
	}{
		{"certificate alone", "", "", d1[0], d1[1], true},
		{"certificate and its device's secret", "d1", secrets["d1"], d1[0], d1[1], true},
		{"certificate and a wrong secret", "d1", secrets["d2"], d1[0], d1[1], false},
		{"certificate of another device than the username", "d2", secrets["d2"], d1[0], d1[1], false},
		{"certificate of an unregistered device", "", "", certs["d9"][0], certs["d9"][1], false},
		{"certificate of a disabled device", "", "", certs["d3"][0], certs["d3"][1], false},
		{"expired certificate", "", "", ec, ek, false},
		{"certificate of an unknown CA", "", "", oc, ok, false},
		{"no certificate, password over tls", "d2", secrets["d2"], "", "", true},
		{"no certificate, wrong password over tls", "d2", secrets["d1"], "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			own := "devices/" + cmp.Or(tc.user, "d1") + "/x"
			err := mqtttest.PubErr(t, tlsURL(b.TLSAddr(), tc.user, tc.secret, pki.CAFile, tc.cert, tc.key), own, "m", 1)
			if (err == nil) != tc.ok {
				t.Fatalf("publish: %v, want ok=%v", err, tc.ok)
			}
		})
	}

	t.Run("a certificate login keeps to its device's rules", func(t *testing.T) {
		sub := mqtttest.Sub(t, tlsURL(b.TLSAddr(), "d2", secrets["d2"], pki.CAFile, "", ""), "devices/d2/#", 0)
		own := mqtttest.Sub(t, tlsURL(b.TLSAddr(), "", "", pki.CAFile, d1[0], d1[1]), "devices/d1/#", 0)
		u := tlsURL(b.TLSAddr(), "", "", pki.CAFile, d1[0], d1[1])
		mqtttest.Pub(t, u, "devices/d2/in", "forged", 0)
		mqtttest.Pub(t, u, "devices/d1/out", "own", 0)
		if got := own.Wait(1, 10*time.Second); len(got) != 1 || got[0] != "devices/d1/out own" {
			t.Fatalf("d1 got %q", got)
		}
		select {
		case l := <-sub.Lines():
			t.Fatalf("d2 got %q from a certificate login of d1", l)
		case <-time.After(300 * time.Millisecond):
		}
	})

	t.Run("not tls on the tls listener", func(t *testing.T) {
		if err := mqtttest.PubErr(t, "tcp://"+b.TLSAddr(), "devices/d1/x", "m", 0); err == nil {
			t.Fatal("a plain MQTT client was served on the TLS listener")
		}
	})
}

func TestBrokerTLSIdentityAndRequiredCertificate(t *testing.T) {
	reg, _ := openRegistry(t)
	_, s2, err := reg.Add("d2", nil)
	if err != nil {
		t.Fatal(err)
	}
	pki := testpki.New(t, t.TempDir(), "devices")
	b, _ := tlsBroker(t, pki, reg, func(c *BrokerConfig) {
		c.TLS.Identity, c.TLS.RequireClientCert = IdentitySAN, true
	})
	sanCert, sanKey := pki.Client(t, "sensor-serial-0042", testpki.DNSNames("d2"))
	if err := mqtttest.PubErr(t, tlsURL(b.TLSAddr(), "", "", pki.CAFile, sanCert, sanKey), "devices/d2/x", "m", 1); err != nil {
		t.Fatalf("certificate naming d2 in its SAN: %v", err)
	}
	cnCert, cnKey := pki.Client(t, "d2")
	if err := mqtttest.PubErr(t, tlsURL(b.TLSAddr(), "", "", pki.CAFile, cnCert, cnKey), "devices/d2/x", "m", 1); err == nil {
		t.Fatal("identity san: a certificate naming d2 only in its CN logged in")
	}
	if err := mqtttest.PubErr(t, tlsURL(b.TLSAddr(), "d2", s2, pki.CAFile, "", ""), "devices/d2/x", "m", 1); err == nil {
		t.Fatal("require_client_cert: a client without a certificate logged in")
	}
}

func TestBrokerTLSConfigCheck(t *testing.T) {
	pki := testpki.New(t, t.TempDir(), "devices")
	cert, key := pki.Server(t, "server", net.ParseIP("127.0.0.1"))
	kb, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	exposed := writeFile(t, "exposed-key.pem", string(kb))
	if err := os.Chmod(exposed, 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := writeFile(t, "garbage.pem", "not a certificate")
	for _, tc := range []struct {
		name string
		tls  BrokerTLS
		want string // in the problems; "" for none
	}{
		{"good", BrokerTLS{Listen: "127.0.0.1:8883", CertFile: cert, KeyFile: key, ClientCAFile: pki.CAFile, Identity: "cn"}, ""},
		{"key readable by others", BrokerTLS{Listen: "127.0.0.1:8883", CertFile: cert, KeyFile: exposed, Identity: "cn"}, "chmod 600 " + exposed},
		{"certificate not PEM", BrokerTLS{Listen: "127.0.0.1:8883", CertFile: garbage, KeyFile: key, Identity: "cn"}, garbage},
		{"missing certificate", BrokerTLS{Listen: "127.0.0.1:8883", CertFile: cert + ".gone", KeyFile: key, Identity: "cn"}, cert + ".gone"},
		{"client CA not PEM", BrokerTLS{Listen: "127.0.0.1:8883", CertFile: cert, KeyFile: key, ClientCAFile: garbage, Identity: "cn"}, "client CA file: " + garbage + " holds no PEM certificate"},
		{"unknown identity", BrokerTLS{Listen: "127.0.0.1:8883", CertFile: cert, KeyFile: key, Identity: "email"}, "must be cn or san"},
		{"required certificate without a CA", BrokerTLS{Listen: "127.0.0.1:8883", CertFile: cert, KeyFile: key, Identity: "cn", RequireClientCert: true}, "needs client_ca_file"},
		{"files without a listener", BrokerTLS{CertFile: cert, Identity: "cn"}, "needs listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := MQTTDefaults()
			cfg.Broker.TLS = tc.tls
			d := confval.NewDoc([]byte("mqtt: {}"), "outpost.yaml")
			cfg.Validate(d.Checker().At("mqtt"))
			got := fmt.Sprint(d.Err())
			if tc.want == "" && d.Err() != nil || !strings.Contains(got, tc.want) {
				t.Fatalf("problems %s, want one with %q", got, tc.want)
			}
		})
	}
}

// A TLS client that went away leaves nothing in its listener's table of
// connections (the accepted connection, not the TLS one wrapping it, is
// the key).
func TestBrokerListenerForgetsTLSConnections(t *testing.T) {
	pki := testpki.New(t, t.TempDir(), "devices")
	b, _ := tlsBroker(t, pki, nil, nil)
	for range 3 {
		mqtttest.Pub(t, tlsURL(b.TLSAddr(), "", "", pki.CAFile, "", ""), "x", "m", 0)
	}
	i := slices.IndexFunc(b.listeners, func(l *tcpListener) bool { return l.id == "tls" })
	if i < 0 {
		t.Fatal("no tls listener")
	}
	tl := b.listeners[i]
	waitFor(t, "the TLS listener to forget its closed connections", 10*time.Second, func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		return len(tl.conns) == 0
	})
}
