package devices

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

// BrokerTLS is the embedded broker's TLS listener (config key
// mqtt.broker.tls): MQTT over TLS on its own address, beside the plain
// listener. With ClientCAFile, a device may log in with a client
// certificate that CA signed instead of its secret.
type BrokerTLS struct {
	// Listen is the TLS listener's host:port; empty: no TLS listener.
	Listen   string `yaml:"listen"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile holds the CAs (PEM) whose client certificates log
	// devices in; empty: certificates are not asked for.
	ClientCAFile string `yaml:"client_ca_file"`
	// Identity says where a client certificate names its device: "cn"
	// (the subject's common name) or "san" (the first DNS name of the
	// subject alternative names).
	Identity string `yaml:"identity"`
	// RequireClientCert refuses a TLS handshake without a client
	// certificate (else a client without one logs in with a password).
	RequireClientCert bool `yaml:"require_client_cert"`
}

// Certificate identities.
const (
	IdentityCN  = "cn"
	IdentitySAN = "san"
)

// Enabled reports whether the TLS listener is configured.
func (t BrokerTLS) Enabled() bool { return t.Listen != "" }

// Resolve makes the files absolute against dir.
func (t *BrokerTLS) Resolve(dir string) {
	confval.Rel(dir, &t.CertFile)
	confval.Rel(dir, &t.KeyFile)
	confval.Rel(dir, &t.ClientCAFile)
}

// Validate reports every problem of the TLS listener's settings; the
// certificate, the key and the CA file are loaded as the broker will load
// them, so that `outpost check` names a file that is wrong;
// forWebSocket tells that the WebSocket listener serves wss:// with them
// (mqtt.broker.websocket.tls), without a TLS listener of their own.
func (t BrokerTLS) Validate(c *confval.Checker, forWebSocket bool) {
	if !t.Enabled() && !forWebSocket {
		for key, v := range map[string]string{"cert_file": t.CertFile, "key_file": t.KeyFile, "client_ca_file": t.ClientCAFile} {
			if v != "" {
				c.Errorf(key, "needs listen (the TLS listener's host:port) or websocket.tls")
			}
		}
		return
	}
	if t.Enabled() {
		c.HostPort("listen", t.Listen)
	}
	c.File("cert_file", t.CertFile, true)
	c.SecretFile("key_file", t.KeyFile, true)
	c.File("client_ca_file", t.ClientCAFile, false)
	if t.Identity != IdentityCN && t.Identity != IdentitySAN {
		c.Errorf("identity", "%q: must be cn or san", t.Identity)
	}
	if t.RequireClientCert && t.ClientCAFile == "" {
		c.Errorf("require_client_cert", "needs client_ca_file (the CA of the devices' certificates)")
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return
	}
	if _, err := loadTLS(t); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, secretfile.ErrExposed) {
		c.Errorf("", "%v", err) // a file that exists but does not load
	}
}

// tlsMaterial is what the TLS listener serves with; the broker swaps it
// when a reload reads the files again.
type tlsMaterial struct {
	// config serves every handshake until the next reload: a connection
	// keeps the config it was served with, so one shared by all of them
	// is not held once per connection.
	config *tls.Config
}

// loadTLS reads the certificate, its key (refused when readable by group
// or others) and the client CAs; an error names the file.
func loadTLS(t BrokerTLS) (*tlsMaterial, error) {
	cert, err := secretfile.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load tls certificate %s and key %s: %w", t.CertFile, t.KeyFile, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCAFile != "" {
		if cfg.ClientCAs, err = secretfile.CertPool(t.ClientCAFile); err != nil {
			return nil, fmt.Errorf("client CA file: %w", err)
		}
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if t.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return &tlsMaterial{config: cfg}, nil
}

// serverTLSConfig returns a server config that takes the material of cur at
// every handshake, so a reload applies to the next connection and leaves
// the connected ones alone.
func serverTLSConfig(cur *atomic.Pointer[tlsMaterial]) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return cur.Load().config, nil
		},
	}
}

// certIdentity is the device id a verified client certificate names
// (identity cn or san); "" when it names none that is a valid device id.
func certIdentity(cert *x509.Certificate, identity string) string {
	id := cert.Subject.CommonName
	if identity == IdentitySAN {
		id = ""
		if len(cert.DNSNames) > 0 {
			id = cert.DNSNames[0]
		}
	}
	if !ValidDeviceID(id) {
		return ""
	}
	return id
}
