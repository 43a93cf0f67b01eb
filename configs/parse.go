package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/outpost-edge/outpost/coordinator/routes"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

// Load reads, decodes and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes and validates a config read from name. Relative file names
// are resolved against name's directory. Any problem, syntactic or
// semantic, is returned in a Problems error together with all the others.
func Parse(data []byte, name string) (*Config, error) {
	d := confval.NewDoc(data, name)
	c := Defaults()
	if !d.Decode(&c) {
		return nil, d.Err() // not YAML, or not a mapping: nothing to validate
	}
	c.Source = name
	c.keepBuiltins(d.Checker())
	c.applyDefaults()
	c.resolve(filepath.Dir(name))
	c.validate(d.Checker())
	if err := d.Err(); err != nil {
		return nil, err
	}
	c.Warnings = d.Warnings()
	return &c, nil
}

// applyDefaults fills the defaults of list entries (tasks, targets, queues)
// and of sections a file wrote in part.
func (c *Config) applyDefaults() {
	for i := range c.Tasks {
		c.Tasks[i].ApplyDefaults()
	}
	c.Telemetry = c.Telemetry.WithDefaults()
	c.Cloud.ApplyDefaults()
	c.Placement.ApplyDefaults()
}

// resolve fills values derived from the host and makes file names relative
// to the config file's directory absolute.
func (c *Config) resolve(dir string) {
	if c.Node.ID == "" {
		if h, err := os.Hostname(); err == nil {
			c.Node.ID = h
		} else {
			c.Node.ID = "outpost"
		}
	}
	c.Scheduler.Resolve()
	c.Admin.Resolve(dir)
	c.MQTT.Resolve(dir, c.Node.ID)
	for i := range c.Tasks {
		c.Tasks[i].Resolve(dir)
	}
	c.Telemetry.Resolve(dir, c.Node.ID)
	c.Cloud.Resolve(dir)
	c.Placement.Resolve(dir)
}

// validate records every problem of c: the daemon's own keys here, each
// section by its part, and the references between sections (routes and
// triggers name tasks).
func (c *Config) validate(ch *confval.Checker) {
	if c.DataDir == "" {
		ch.Errorf("data_dir", "must not be empty")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		ch.Errorf("log.level", "%q is not a level (debug, info, warn, error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		ch.Errorf("log.format", "%q is not a format (text, json)", c.Log.Format)
	}
	c.Admin.Validate(ch.At("admin"))
	if err := secretfile.Check(c.Admin.TokenPath(c.DataDir)); c.Admin.TokenFile == "" && errors.Is(err, secretfile.ErrExposed) {
		ch.Errorf("data_dir", "%v", err) // the admin token made at first start
	}
	c.Storage.Validate(ch.At("storage"))
	c.MQTT.Validate(ch.At("mqtt"))
	c.Scheduler.Validate(ch.At("scheduler"))
	tasks.Validate(ch.At("tasks"), c.Tasks)
	routes.Validate(ch.At("routes"), c.Routes, c.hasTask, c.Cloud.Enabled())
	c.Telemetry.Validate(ch.At("telemetry"), c.hasTask)
	c.Cloud.Validate(ch.At("cloud"))
	c.Placement.Validate(ch.At("placement"))
}

func (c *Config) hasTask(name string) bool {
	for _, t := range c.Tasks {
		if t.Name == name {
			return true
		}
	}
	return false
}

// ParseManifest decodes a deploy manifest (YAML or JSON) read from name
// with the config's strict decoder, applies the task defaults and
// validates it: an unknown key or a bad value is a Problem with its line,
// as in a config file. The CLI checks a manifest with it before uploading;
// the daemon decodes every manifest it receives with it.
func ParseManifest(data []byte, name string) (tasks.Manifest, error) {
	var m tasks.Manifest
	d := confval.NewDoc(data, name)
	if !d.Decode(&m) {
		return m, d.Err()
	}
	m.ApplyDefaults()
	m.Validate(d.Checker())
	return m, d.Err()
}
