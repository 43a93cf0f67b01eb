package config

// Cloud configures the link to a cloud control plane (see docs/cloud-link.md).
// The link is off until url is set.
type Cloud struct{}

func (c *Config) validateCloud(d *doc) {}
