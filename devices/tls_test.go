package devices

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// testPKI writes a CA and a server certificate for 127.0.0.1 and returns
// their file paths.
func testPKI(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outpost test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	return writeFile(t, "ca.pem", pemOf("CERTIFICATE", caDER)),
		writeFile(t, "server.pem", pemOf("CERTIFICATE", srvDER)),
		writeFile(t, "server.key", pemOf("EC PRIVATE KEY", keyDER))
}

func TestClientTLS(t *testing.T) {
	ca, cert, key := testPKI(t)
	mosq := mqtttest.NewMosquitto(t, mqtttest.WithConfig("cafile "+ca, "certfile "+cert, "keyfile "+key))
	mosq.Start()
	url := strings.Replace(mosq.URL(), "tcp://", "mqtts://", 1)

	t.Run("verified with the ca", func(t *testing.T) {
		cfg := clientConfig("outpost-tls")
		cfg.TLS.CAFile = ca
		c := startClient(t, cfg, url, nil, nil)
		waitFor(t, "connected over tls", 5*time.Second, c.Connected)
	})
	t.Run("unknown ca not connected", func(t *testing.T) {
		cfg := clientConfig("outpost-tls-bad")
		c := startClient(t, cfg, url, nil, nil)
		time.Sleep(500 * time.Millisecond)
		if c.Connected() {
			t.Fatal("connected to a server whose certificate is not trusted")
		}
	})
}
