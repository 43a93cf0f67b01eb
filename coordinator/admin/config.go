package admin

import "github.com/outpost-edge/outpost/internal/confval"

// Config configures the local HTTP API used by the CLI and by Prometheus
// (config key admin).
type Config struct {
	Listen string `yaml:"listen"`
}

// DefaultListen is the admin API's address when the config leaves it out,
// and the CLI's when it is given no config.
const DefaultListen = "127.0.0.1:7700"

// Validate reports a listen address that is not host:port.
func (a Config) Validate(c *confval.Checker) { c.HostPort("listen", a.Listen) }
