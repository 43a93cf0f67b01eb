package gnmiserver

import (
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/loopback"
)

// Config configures the gNMI server of the collected data (config key
// telemetry.gnmi_server).
type Config struct {
	Listen       string `yaml:"listen"` // empty: off
	TLS          TLS    `yaml:"tls"`    // cert_file and key_file enable TLS
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// ExpireAfter drops a path from the served cache when no update for it
	// arrived for this long (STREAM subscribers get a gNMI delete), and a
	// target once all its paths are gone. 0: derived from the targets (see
	// Expiry).
	ExpireAfter confval.Duration `yaml:"expire_after"`
}

// TLS is the server's certificate and key (PEM); both set enable TLS.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultListen is the address the example config gives the server.
const DefaultListen = "127.0.0.1:9339"

// Expiry is expire_after, or when that is 0, 10m or three times interval
// (the longest collection interval of the targets), whichever is longer.
func (s Config) Expiry(interval time.Duration) time.Duration {
	if d := s.ExpireAfter.Std(); d > 0 {
		return d
	}
	return max(10*time.Minute, 3*interval)
}

// Resolve makes the files absolute against dir.
func (s *Config) Resolve(dir string) {
	confval.Rel(dir, &s.PasswordFile)
	confval.Rel(dir, &s.TLS.CertFile)
	confval.Rel(dir, &s.TLS.KeyFile)
}

// Validate reports the problems of a server that is on; interval is the
// longest collection interval of the targets.
func (s Config) Validate(c *confval.Checker, interval time.Duration) {
	if s.Listen == "" {
		return
	}
	c.HostPort("listen", s.Listen)
	if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
		c.Errorf("tls", "cert_file and key_file go together")
	}
	c.File("tls.cert_file", s.TLS.CertFile, false)
	c.SecretFile("tls.key_file", s.TLS.KeyFile, false)
	if (s.Username == "") != (s.PasswordFile == "") {
		c.Errorf("username", "username and password_file go together")
	}
	c.SecretFile("password_file", s.PasswordFile, false)
	if !loopback.HostPort(s.Listen) && (s.TLS.CertFile == "" || s.Username == "") {
		c.Errorf("listen", "a listener beyond loopback needs tls (cert_file, key_file) and a username with password_file")
	}
	if e := s.ExpireAfter.Std(); e != 0 && (e < time.Second || e < 2*interval) {
		c.Errorf("expire_after", "%s: must be 0 (derived) or at least 1s and twice the longest collection interval (%s)", e, interval)
	}
}
