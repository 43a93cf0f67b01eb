package configs

import (
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/placement"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/routes"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/store"
	"github.com/outpost-edge/outpost/telemetry"
)

// Config is the whole configuration of one Outpost daemon: the daemon's own
// keys (node, data_dir, log) and one section per part, each declared, given
// its defaults and validated by the part.
type Config struct {
	Node      Node                  `yaml:"node"`
	DataDir   string                `yaml:"data_dir"`
	Log       Log                   `yaml:"log"`
	Admin     admin.Config          `yaml:"admin"`
	Storage   store.Config          `yaml:"storage"`
	MQTT      devices.MQTTConfig    `yaml:"mqtt"`
	Scheduler calls.SchedulerConfig `yaml:"scheduler"`
	Tasks     []tasks.Task          `yaml:"tasks"`
	Routes    []routes.Rule         `yaml:"routes"`
	Telemetry telemetry.Config      `yaml:"telemetry"`
	Cloud     remote.CloudConfig    `yaml:"cloud"`
	Placement placement.Config      `yaml:"placement"`

	// Source is the file the config was read from.
	Source string `yaml:"-"`
	// Warnings are settings that are valid but may not do what the file's
	// writer meant (check prints them, the daemon logs them).
	Warnings Problems `yaml:"-"`
}

// Node identifies this daemon.
type Node struct {
	// ID names the node to the cloud and in the MQTT client id; default: the host name.
	ID string `yaml:"id"`
}

// Log configures the structured log written to stderr.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Problem is one thing wrong with a config or manifest: file, line, key
// path and what.
type Problem = confval.Problem

// Problems is every problem found in one file; it is the error Parse,
// Load and ParseManifest return.
type Problems = confval.Problems

// Defaults returns the configuration used for every key a file leaves out.
// Each part gives its section's defaults; lists (tasks, routes, targets)
// are empty.
func Defaults() Config {
	c := Config{
		DataDir:   "./data",
		Log:       Log{Level: "info", Format: "text"},
		Admin:     admin.Config{Listen: admin.DefaultListen},
		Storage:   store.Defaults(),
		MQTT:      devices.MQTTDefaults(),
		Scheduler: calls.SchedulerDefaults(),
		Telemetry: telemetry.Config{}.WithDefaults(),
	}
	c.Cloud.ApplyDefaults()
	c.Placement.ApplyDefaults()
	return c
}
