package placement

import (
	"cmp"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
)

// Config is the node's placement settings (config key placement).
type Config struct {
	// Rules apply to every task, after the task's own rules.
	Rules   []Rule        `yaml:"rules"`
	Process ProcessConfig `yaml:"process"`
	Cloud   CloudConfig   `yaml:"cloud"`
}

// CloudConfig configures the cloud environment.
type CloudConfig struct {
	// Wait is how long, beyond the task's timeout, a call placed in the
	// cloud waits for its result (transfers, the control plane's
	// restarts) before it ends timeout.
	Wait confval.Duration `yaml:"wait"`
}

// DefaultCloudWait is placement.cloud.wait's default.
const DefaultCloudWait = confval.Duration(time.Minute)

// ProcessConfig configures the process environment.
type ProcessConfig struct {
	// Bwrap is the bubblewrap program; default bwrap on PATH.
	Bwrap string `yaml:"bwrap"`
	// MaxRunning bounds the sandboxed processes running at once; the
	// environment reports a load of running / max_running.
	MaxRunning int `yaml:"max_running"`
}

// DefaultMaxRunning is placement.process.max_running's default.
const DefaultMaxRunning = 4

// ApplyDefaults fills the zero settings.
func (c *Config) ApplyDefaults() {
	c.Process.Bwrap = cmp.Or(c.Process.Bwrap, "bwrap")
	c.Process.MaxRunning = cmp.Or(c.Process.MaxRunning, DefaultMaxRunning)
	c.Cloud.Wait = cmp.Or(c.Cloud.Wait, DefaultCloudWait)
}

// Validate reports every problem of the placement settings.
func (c Config) Validate(ch *confval.Checker) {
	Validate(ch.At("rules"), c.Rules)
	if c.Process.MaxRunning < 1 {
		ch.Errorf("process.max_running", "must be at least 1")
	}
	if c.Cloud.Wait < 0 {
		ch.Errorf("cloud.wait", "must not be negative")
	}
}
