package admin

import (
	"net"
	"path/filepath"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/loopback"
)

// Config configures the HTTP API used by the CLI and by Prometheus (config
// key admin).
type Config struct {
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token the API asks for (an operator's,
	// mode 0600). Empty: admin.token in data_dir, created at first start.
	TokenFile string `yaml:"token_file"`
	// TLS makes the API speak HTTPS; required beyond loopback.
	TLS ConfigTLS `yaml:"tls"`
}

// ConfigTLS is the admin API's server certificate and, for mTLS, the CA
// that signs its clients' certificates.
type ConfigTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// DefaultListen is the admin API's address when the config leaves it out,
// and the CLI's when it is given no config.
const DefaultListen = "127.0.0.1:7700"

// TokenPath is the file the admin token is kept in: token_file, else
// admin.token in dataDir.
func (a Config) TokenPath(dataDir string) string {
	if a.TokenFile != "" {
		return a.TokenFile
	}
	return filepath.Join(dataDir, "admin.token")
}

// Resolve makes the files absolute against dir, the config file's
// directory.
func (a *Config) Resolve(dir string) {
	confval.Rel(dir, &a.TokenFile)
	confval.Rel(dir, &a.TLS.CertFile)
	confval.Rel(dir, &a.TLS.KeyFile)
	confval.Rel(dir, &a.TLS.ClientCAFile)
}

// Validate reports every problem of the admin settings. The token made in
// data_dir at first start is the daemon's concern (configs checks it).
func (a Config) Validate(c *confval.Checker) {
	c.HostPort("listen", a.Listen)
	c.SecretFile("token_file", a.TokenFile, false)
	if (a.TLS.CertFile == "") != (a.TLS.KeyFile == "") {
		c.Errorf("tls", "cert_file and key_file go together")
	}
	c.File("tls.cert_file", a.TLS.CertFile, false)
	c.SecretFile("tls.key_file", a.TLS.KeyFile, false)
	c.File("tls.client_ca_file", a.TLS.ClientCAFile, false)
	if a.TLS.ClientCAFile != "" && a.TLS.CertFile == "" {
		c.Errorf("tls.client_ca_file", "needs cert_file and key_file (mTLS is TLS)")
	}
	if _, _, err := net.SplitHostPort(a.Listen); err == nil && !loopback.HostPort(a.Listen) && a.TLS.CertFile == "" {
		c.Errorf("listen", "%q is beyond loopback: the admin API listens there only with tls (admin.tls.cert_file, key_file); its token is required on every request", a.Listen)
	}
}
