package remote

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/internal/secretfile"
)

// ErrClientCertificate: the node's own client certificate cannot be used
// (unreadable, key does not match, or issued to another node id).
var ErrClientCertificate = errors.New("client certificate unusable")

// ClientTLS builds the link's TLS configuration: the control plane's CA
// (caFile; "" for the system roots) and, for mTLS, the node's certificate
// and key. The certificate is loaded on every handshake, so a rotated one
// is used by the next connection without a restart; one whose subject
// common name is not nodeID is refused before it is sent (the handshake
// fails with ErrClientCertificate). Nil when neither file is given.
func ClientTLS(nodeID, caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := secretfile.CertPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("cloud tls: %w", err)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return loadClientCert(nodeID, certFile, keyFile)
		}
	}
	return cfg, nil
}

func loadClientCert(nodeID, certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := secretfile.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrClientCertificate, certFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrClientCertificate, certFile, err)
		}
	}
	if leaf.Subject.CommonName != nodeID {
		return nil, fmt.Errorf("%w: %s is for node %q, not this node %q (serial %s)", ErrClientCertificate, certFile, leaf.Subject.CommonName, nodeID, leaf.SerialNumber)
	}
	return &cert, nil
}
