package remote_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial atomic.Int64

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leaf issues a server certificate for the given IPs and DNS names, valid
// in [notBefore, notAfter].
func (ca *testCA) leaf(t *testing.T, ips []net.IP, dns []string, notBefore, notAfter time.Time) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: "outpost-cloud"},
		NotBefore: notBefore, NotAfter: notAfter, IPAddresses: ips, DNSNames: dns,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsFront serves the real control plane over TLS on a loopback port with
// a certificate the test can swap; it counts handshakes and requests.
type tlsFront struct {
	hs         *httptest.Server
	url        string
	cert       atomic.Pointer[tls.Certificate]
	handshakes atomic.Int32 // certificates served
	requests   atomic.Int32 // HTTP requests that reached the handler
	peers      peerLog      // client certificates of those requests (mTLS)
}

// startTLSFront serves cl's control plane over TLS; mods adjust the TLS
// configuration (client certificates for mTLS).
func startTLSFront(t *testing.T, cl *cloud, cert *tls.Certificate, mods ...func(*tls.Config)) *tlsFront {
	t.Helper()
	f := &tlsFront{}
	f.cert.Store(cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// No static Certificates: GetCertificate answers every handshake, SNI
	// or not (the client dials an IP, so it sends none).
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		f.handshakes.Add(1)
		return f.cert.Load(), nil
	}}
	for _, m := range mods {
		m(cfg)
	}
	h := cl.srv.Handler()
	f.hs = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		f.peers.add(r)
		h.ServeHTTP(w, r)
	}))
	f.hs.Listener = tls.NewListener(ln, cfg)
	f.hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	f.hs.Start()
	f.url = "https://" + ln.Addr().String()
	t.Cleanup(func() {
		f.hs.CloseClientConnections()
		f.hs.Close()
	})
	return f
}

// sample reads one labelled sample of a metric family from reg.
func sample(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if m.GetGauge() != nil {
						return m.GetGauge().GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A control plane whose certificate is expired, for another host name, or
// signed by an unknown CA: the link never sends a request, backs off, logs
// the problem by name and shows tls_error in its state and metrics.
func TestLinkTLSBadCertificates(t *testing.T) {
	ca := newCA(t, "outpost test CA")
	other := newCA(t, "someone else's CA")
	loop := []net.IP{net.ParseIP("127.0.0.1")}
	now := time.Now()
	tests := []struct {
		name string
		cert *tls.Certificate
		log  string
	}{
		{"expired", ca.leaf(t, loop, nil, now.Add(-48*time.Hour), now.Add(-24*time.Hour)), "certificate expired"},
		{"wrong host", ca.leaf(t, nil, []string{"cloud.example.com"}, now.Add(-time.Hour), now.Add(time.Hour)), "another host name"},
		{"unknown CA", other.leaf(t, loop, nil, now.Add(-time.Hour), now.Add(time.Hour)), "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := startCloud(t, server.Options{})
			front := startTLSFront(t, cl, tt.cert)
			cl.enqueue(echoCalls("edge-1", []string{"tls-" + strings.ReplaceAll(tt.name, " ", "-")}, "idempotent")...)
			var logs logBuf
			e := startEdgeLog(t, cl, t.TempDir(), func(c *remote.Config) {
				c.URL = front.url
				c.TLS = &tls.Config{RootCAs: ca.pool()}
			}, logs.logger())
			time.Sleep(800 * time.Millisecond)
			e.close()
			if n := front.requests.Load(); n != 0 {
				t.Errorf("%d HTTP requests reached the server through a refused certificate", n)
			}
			hs := front.handshakes.Load()
			// Backoff base 20ms, cap 200ms: a handful of tries in 800ms, not
			// a tight loop.
			if hs < 2 || hs > 40 {
				t.Errorf("%d handshakes in 800ms: want a few, spaced by the backoff", hs)
			}
			if v := sample(t, e.reg, "outpost_cloud_polls_total", "result", "tls_error"); v < 2 {
				t.Errorf("outpost_cloud_polls_total{result=tls_error} = %v", v)
			}
			if !strings.Contains(logs.String(), "TLS handshake with the control plane failed: ") || !strings.Contains(logs.String(), tt.log) {
				t.Errorf("log does not name the TLS problem %q:\n%s", tt.log, logs.String())
			}
			if n := strings.Count(logs.String(), "TLS handshake with the control plane failed"); n < 2 {
				t.Errorf("%d TLS errors logged, want one per failed try", n)
			}
			if c, _ := cl.srv.Get("tls-" + strings.ReplaceAll(tt.name, " ", "-")); c.Deliveries != 0 {
				t.Errorf("call delivered through a refused certificate: %+v", c)
			}
		})
	}
}

// The state and metric while the certificate is refused, checked while
// the link runs (close sets stopped).
func TestLinkTLSStateWhileRefused(t *testing.T) {
	ca := newCA(t, "outpost test CA")
	now := time.Now()
	cl := startCloud(t, server.Options{})
	front := startTLSFront(t, cl, ca.leaf(t, []net.IP{net.ParseIP("127.0.0.1")}, nil, now.Add(-48*time.Hour), now.Add(-time.Hour)))
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) {
		c.URL = front.url
		c.TLS = &tls.Config{RootCAs: ca.pool()}
	})
	deadline := time.Now().Add(3 * time.Second)
	for e.c.State() != remote.StateTLSError && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := e.c.State(); s != remote.StateTLSError {
		t.Fatalf("state %q, want %q", s, remote.StateTLSError)
	}
	if v := sample(t, e.reg, "outpost_cloud_link_state", "state", remote.StateTLSError); v != 1 {
		t.Errorf("outpost_cloud_link_state{state=tls_error} = %v", v)
	}
	if v := sample(t, e.reg, "outpost_cloud_link_state", "state", remote.StateUp); v != 0 {
		t.Errorf("outpost_cloud_link_state{state=up} = %v", v)
	}
	// The operator installs a good certificate: the link comes up by itself.
	front.cert.Store(ca.leaf(t, []net.IP{net.ParseIP("127.0.0.1")}, nil, now.Add(-time.Hour), now.Add(time.Hour)))
	cl.enqueue(echoCalls("edge-1", []string{"fixed"}, "idempotent")...)
	cl.waitFinal([]string{"fixed"}, 5*time.Second)
	if s := e.c.State(); s != remote.StateUp {
		t.Errorf("state %q after the certificate was fixed", s)
	}
	e.checkOnce(cl, []string{"fixed"})
}

// The server swaps to a new certificate from the same CA mid-session: the
// next connection handshakes with it and the link carries on.
func TestLinkTLSCertificateRotation(t *testing.T) {
	ca := newCA(t, "outpost test CA")
	now := time.Now()
	loop := []net.IP{net.ParseIP("127.0.0.1")}
	cl := startCloud(t, server.Options{})
	front := startTLSFront(t, cl, ca.leaf(t, loop, nil, now.Add(-time.Hour), now.Add(time.Hour)))
	e := startEdge(t, cl, t.TempDir(), func(c *remote.Config) {
		c.URL = front.url
		c.TLS = &tls.Config{RootCAs: ca.pool()}
	})
	before := ids("rot-a", 5)
	cl.enqueue(echoCalls("edge-1", before, "at_most_once")...)
	cl.waitFinal(before, 5*time.Second)

	rotated := ca.leaf(t, loop, nil, now.Add(-time.Minute), now.Add(2*time.Hour))
	front.cert.Store(rotated)
	hsAtSwap := front.handshakes.Load()
	front.hs.CloseClientConnections() // the live connections end; new ones see the new certificate

	after := ids("rot-b", 5)
	cl.enqueue(echoCalls("edge-1", after, "at_most_once")...)
	cl.waitFinal(after, 5*time.Second)
	if front.handshakes.Load() <= hsAtSwap {
		t.Fatal("no handshake with the rotated certificate")
	}
	if v := sample(t, e.reg, "outpost_cloud_polls_total", "result", "tls_error"); v != 0 {
		t.Errorf("%v TLS errors across a rotation within the same CA", v)
	}
	e.checkOnce(cl, append(before, after...))
}
