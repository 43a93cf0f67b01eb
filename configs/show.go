package configs

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// YAML returns the effective config as YAML: every key with the value the
// daemon uses, defaults and derived values (node id, workers, client id,
// absolute file names) filled in, the built-in tasks and routes included
// when the file keeps them. Parsing the result gives the same config.
func (c *Config) YAML() ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# effective config of %s, with every default\n", c.Source)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return b.Bytes(), nil
}
