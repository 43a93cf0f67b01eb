package remote_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// peerLog records the client certificate serial of each request, in order.
type peerLog struct {
	mu      sync.Mutex
	serials []string
}

func (p *peerLog) add(r *http.Request) {
	s := "none"
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		s = r.TLS.PeerCertificates[0].SerialNumber.String()
	}
	p.mu.Lock()
	p.serials = append(p.serials, s)
	p.mu.Unlock()
}

// since returns the serials recorded from index i on, and the new length.
func (p *peerLog) since(i int) ([]string, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.serials[i:]...), len(p.serials)
}

// clientCert issues a client certificate for node (its subject common
// name) and returns it with its PEM encoding and its key's.
func (ca *testCA) clientCert(t *testing.T, node string) (*x509.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: node},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// install writes a certificate and key where the node reads them, each by
// rename, as a certificate agent would.
func install(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	for name, b := range map[string][]byte{"node.key": keyPEM, "node.crt": certPEM} {
		tmp := filepath.Join(dir, name+".new")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// mTLS rig: a control plane that requires client certificates from ca and
// checks the node id against them, and an edge whose certificate files the
// test replaces.
func startMTLS(t *testing.T, lg *logBuf) (*cloud, *tlsFront, *edge, *testCA, string) {
	t.Helper()
	ca := newCA(t, "outpost test CA")
	cl := startCloud(t, server.Options{})
	front := startTLSFront(t, cl, ca.leaf(t, []net.IP{net.ParseIP("127.0.0.1")}, nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)),
		func(c *tls.Config) { c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, ca.pool() })
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, crt, key := ca.clientCert(t, "edge-1")
	install(t, dir, crt, key)
	cfg, err := remote.ClientTLS("edge-1", caFile, filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	e := startEdgeLog(t, cl, t.TempDir(), func(c *remote.Config) { c.URL, c.TLS = front.url, cfg }, lg.logger())
	return cl, front, e, ca, dir
}

// The node's client certificate is rotated mid-session (new serial, same
// node id) while a call runs: the next connection presents the new one,
// the server sees its serial, and no call is lost or run twice.
func TestLinkMTLSClientCertRotation(t *testing.T) {
	var logs logBuf
	cl, front, e, ca, dir := startMTLS(t, &logs)
	before := ids("mrot-a", 5)
	cl.enqueue(echoCalls("edge-1", before, "at_most_once")...)
	// A call that runs across the rotation; its result goes up on a
	// connection made with the new certificate.
	cl.enqueue(server.Call{ID: "mrot-slow", Node: "edge-1", Task: "slow", Input: []byte("1500ms"), Effect: "at_most_once"})
	cl.waitFinal(before, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for e.ex.count("mrot-slow") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow call never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	old, mark := front.peers.since(0)
	if len(old) == 0 || old[0] == "none" {
		t.Fatalf("no client certificate on the requests before the rotation: %v", old)
	}
	oldSerial := old[0]

	rotated, crt, key := ca.clientCert(t, "edge-1")
	install(t, dir, crt, key)
	front.hs.CloseClientConnections() // the live connections end; the next ones handshake again

	after := ids("mrot-b", 5)
	cl.enqueue(echoCalls("edge-1", after, "idempotent")...)
	cl.waitFinal(append(after, "mrot-slow"), 15*time.Second)
	seen, _ := front.peers.since(mark)
	newSeen := 0
	for _, s := range seen {
		switch s {
		case rotated.SerialNumber.String():
			newSeen++
		case oldSerial:
			// A request already read on an old connection may finish; none
			// may start on a new one with the old certificate: checked below.
		default:
			t.Errorf("a request with client certificate serial %s (want %s)", s, rotated.SerialNumber)
		}
	}
	if newSeen == 0 {
		t.Fatalf("the server never saw the rotated certificate (serial %s): %v", rotated.SerialNumber, seen)
	}
	// Once the rotated serial shows up, the old one never comes back.
	for i, s := range seen {
		if s == rotated.SerialNumber.String() {
			for _, later := range seen[i:] {
				if later == oldSerial {
					t.Errorf("old certificate used after the rotated one: %v", seen)
					break
				}
			}
			break
		}
	}
	if v := sample(t, e.reg, "outpost_cloud_polls_total", "result", "tls_error"); v != 0 {
		t.Errorf("%v TLS errors across a client certificate rotation", v)
	}
	e.checkOnce(cl, append(before, after...))
	if c, _ := cl.srv.Get("mrot-slow"); c.State != "done" || c.Result.Status != "ok" || c.Replays != 0 || c.Conflicts != 0 || e.ex.count("mrot-slow") != 1 {
		t.Errorf("call across the rotation: %+v, ran %d times", c, e.ex.count("mrot-slow"))
	}
}

// A rotation to a certificate for another node id: the node refuses to
// present it (the handshake fails before any request), says so by name,
// shows tls_error and backs off; nothing is delivered meanwhile. The right
// certificate brings the link back and the waiting call runs once.
func TestLinkMTLSClientCertWrongNode(t *testing.T) {
	var logs logBuf
	cl, front, e, ca, dir := startMTLS(t, &logs)
	cl.enqueue(echoCalls("edge-1", []string{"mw-a"}, "at_most_once")...)
	cl.waitFinal([]string{"mw-a"}, 10*time.Second)

	wrong, crt, key := ca.clientCert(t, "edge-2")
	install(t, dir, crt, key)
	_, mark := front.peers.since(0)
	front.hs.CloseClientConnections()
	deadline := time.Now().Add(10 * time.Second)
	for e.c.State() != remote.StateTLSError || sample(t, e.reg, "outpost_cloud_polls_total", "result", "tls_error") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("state %q after a rotation to another node's certificate:\n%s", e.c.State(), logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Enqueued once the link is refusing the certificate: a long poll the
	// server held before the connections closed may still be finishing its
	// lease on the server side, and an at_most_once call it took would be
	// lost by design, not by the rotation.
	// One more refused attempt with the call waiting proves the link tried.
	cl.enqueue(echoCalls("edge-1", []string{"mw-b"}, "at_most_once")...)
	refused := sample(t, e.reg, "outpost_cloud_polls_total", "result", "tls_error")
	for sample(t, e.reg, "outpost_cloud_polls_total", "result", "tls_error") <= refused {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("no further attempt after %v refused ones", refused)
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := `TLS handshake with the control plane failed: our client certificate is unusable`
	if l := logs.String(); !strings.Contains(l, want) || !strings.Contains(l, `is for node \"edge-2\", not this node \"edge-1\"`) {
		t.Errorf("log does not say the certificate is for another node:\n%s", l)
	}
	// A request already on an old connection (the right certificate) may
	// still land after the mark; none may come with the wrong one.
	if seen, _ := front.peers.since(mark); slices.Contains(seen, wrong.SerialNumber.String()) {
		t.Errorf("a request reached the server with the wrong certificate: %v (its serial %s)", seen, wrong.SerialNumber)
	}
	if c, _ := cl.srv.Get("mw-b"); c.Deliveries != 0 {
		t.Errorf("call delivered while the certificate was wrong: %+v", c)
	}

	fixed, crt, key := ca.clientCert(t, "edge-1")
	install(t, dir, crt, key)
	cl.waitFinal([]string{"mw-b"}, 10*time.Second)
	if seen, _ := front.peers.since(mark); len(seen) == 0 || seen[len(seen)-1] != fixed.SerialNumber.String() {
		t.Errorf("requests after the fix: %v, want serial %s", seen, fixed.SerialNumber)
	}
	if s := e.c.State(); s != remote.StateUp {
		t.Errorf("state %q after the fix", s)
	}
	e.checkOnce(cl, []string{"mw-a", "mw-b"})
}

// The server's own check: a node that presents a valid certificate for
// another node id (a TLS configuration without remote.ClientTLS's check)
// is answered 403, and the link stops polling and says why.
func TestLinkMTLSServerChecksNodeID(t *testing.T) {
	ca := newCA(t, "outpost test CA")
	cl := startCloud(t, server.Options{})
	front := startTLSFront(t, cl, ca.leaf(t, []net.IP{net.ParseIP("127.0.0.1")}, nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)),
		func(c *tls.Config) { c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, ca.pool() })
	_, crt, key := ca.clientCert(t, "edge-2")
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	cl.enqueue(echoCalls("edge-1", []string{"ms-a"}, "at_most_once")...)
	var logs logBuf
	e := startEdgeLog(t, cl, t.TempDir(), func(c *remote.Config) {
		c.URL, c.TLS = front.url, &tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{pair}}
	}, logs.logger())
	deadline := time.Now().Add(10 * time.Second)
	for e.c.State() != remote.StateForbidden {
		if time.Now().After(deadline) {
			t.Fatalf("state %q with another node's certificate:\n%s", e.c.State(), logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The link logs why just after it changes state.
	for !strings.Contains(logs.String(), "client certificate is for node edge-2, not edge-1") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "client certificate is for node edge-2, not edge-1") {
		t.Errorf("log does not carry the server's reason:\n%s", logs.String())
	}
	if c, _ := cl.srv.Get("ms-a"); c.Deliveries != 0 {
		t.Errorf("call delivered to a node with another node's certificate: %+v", c)
	}
}
