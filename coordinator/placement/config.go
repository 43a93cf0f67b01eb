package placement

import (
	"cmp"

	"github.com/outpost-edge/outpost/internal/confval"
)

// Config is the node's placement settings (config key placement).
type Config struct {
	// Rules apply to every task, after the task's own rules.
	Rules   []Rule        `yaml:"rules"`
	Process ProcessConfig `yaml:"process"`
}

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
}

// Validate reports every problem of the placement settings.
func (c Config) Validate(ch *confval.Checker) {
	Validate(ch.At("rules"), c.Rules)
	if c.Process.MaxRunning < 1 {
		ch.Errorf("process.max_running", "must be at least 1")
	}
}
