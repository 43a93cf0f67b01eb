package config

// Telemetry configures collection from network gear (gNMI, SNMP), the local
// time-series store and the gNMI server.
type Telemetry struct{}

func (c *Config) validateTelemetry(d *doc) {}
