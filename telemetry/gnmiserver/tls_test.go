package gnmiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/telemetry/gnmi"
)

// writeCA writes a CA and a server certificate for 127.0.0.1 signed by it.
func writeCA(t *testing.T, dir, name string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "outpost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, name+"-ca.pem"), filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return
}

// Outpost's gNMI client reads from Outpost's gNMI server over TLS with a
// password: the CA is checked, skip-verify only when asked.
func TestTLSAndPasswordEndToEnd(t *testing.T) {
	dir := t.TempDir()
	ca, crt, key := writeCA(t, dir, "good")
	otherCA, _, _ := writeCA(t, dir, "other")
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	s := start(t, Config{TLS: TLS{CertFile: crt, KeyFile: key}, Username: "ops", PasswordFile: pw})
	s.Update(sample(time.Now().UnixNano()))

	get := func(tlsCfg gnmi.TLS) error {
		cfg := gnmi.Config{Targets: []gnmi.Target{{Name: "sw1", Address: s.Addr(), TLS: tlsCfg, Username: "ops", PasswordFile: pw, Timeout: confval.Duration(5 * time.Second)}}}.WithDefaults()
		c, err := gnmi.New(cfg, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		defer func() {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			c.Run(ctx)
		}()
		us, err := c.Get(context.Background(), "sw1", []string{"/system"})
		if err == nil && len(us) != 1 {
			t.Errorf("got %+v", us)
		}
		return err
	}
	if err := get(gnmi.TLS{Enabled: true, CAFile: ca}); err != nil {
		t.Fatalf("with the right CA: %v", err)
	}
	if err := get(gnmi.TLS{Enabled: true, CAFile: otherCA}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("with another CA: %v", err)
	}
	if err := get(gnmi.TLS{Enabled: true, InsecureSkipVerify: true}); err != nil {
		t.Errorf("with skip-verify: %v", err)
	}
	if err := get(gnmi.TLS{}); err == nil {
		t.Error("plaintext to a TLS server succeeded")
	}
}
