// Package testpki makes a certificate authority for one test and issues
// server and client certificates from it as PEM files (keys mode 0600), for
// tests of TLS listeners and clients.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority whose certificate is in CAFile.
type CA struct {
	CAFile string
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
}

var serial atomic.Int64

// New makes a CA valid for an hour around now and writes its certificate
// to dir/name-ca.pem.
func New(t testing.TB, dir, name string) *CA {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: name + " CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	ca := &CA{dir: dir}
	ca.cert, ca.key = sign(t, tmpl, nil, nil)
	ca.CAFile = filepath.Join(dir, name+"-ca.pem")
	write(t, ca.CAFile, "CERTIFICATE", ca.cert.Raw, 0o644)
	return ca
}

// Server issues a server certificate for ips and writes name.pem and
// name-key.pem; it returns their paths.
func (ca *CA) Server(t testing.TB, name string, ips ...net.IP) (certFile, keyFile string) {
	t.Helper()
	return ca.issue(t, name, &x509.Certificate{IPAddresses: ips, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
}

// ServerAt issues a server certificate for ips as Server does and moves
// it and its key to certFile and keyFile, replacing what they held: a
// rotation of files a server reloads.
func (ca *CA) ServerAt(t testing.TB, name, certFile, keyFile string, ips ...net.IP) {
	t.Helper()
	c, k := ca.Server(t, name, ips...)
	for from, to := range map[string]string{c: certFile, k: keyFile} {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
}

// Client issues a client certificate with common name name; edits change
// it before it is signed (SANs, validity: one that sets NotAfter keeps its
// NotBefore and NotAfter).
func (ca *CA) Client(t testing.TB, name string, edits ...func(*x509.Certificate)) (certFile, keyFile string) {
	t.Helper()
	tmpl := &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, e := range edits {
		e(tmpl)
	}
	return ca.issue(t, name, tmpl)
}

// Expired makes a certificate that expired an hour ago.
func Expired(c *x509.Certificate) {
	c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
}

// DNSNames gives a certificate these DNS-name SANs.
func DNSNames(names ...string) func(*x509.Certificate) {
	return func(c *x509.Certificate) { c.DNSNames = names }
}

func (ca *CA) issue(t testing.TB, name string, tmpl *x509.Certificate) (certFile, keyFile string) {
	tmpl.Subject = pkix.Name{CommonName: name}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	cert, key := sign(t, tmpl, ca.cert, ca.key)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	write(t, certFile, "CERTIFICATE", cert.Raw, 0o644)
	write(t, keyFile, "EC PRIVATE KEY", kb, 0o600)
	return certFile, keyFile
}

// sign makes a key and a certificate for tmpl signed by parent (itself
// when parent is nil).
func sign(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	if tmpl.NotAfter.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func write(t testing.TB, file, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
}
