package confval

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in YAML as a Go duration string ("250ms", "5s", "1h").
type Duration time.Duration

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "want a duration such as \"5s\"")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeErr(n, fmt.Sprintf("%q is not a duration (use a number with a unit: 250ms, 5s, 1h)", n.Value))
	}
	*d = Duration(v)
	return nil
}

// typeErr reports a bad value so that yaml.v3 records it and goes on
// decoding (any other error type would stop at the first problem).
func typeErr(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// SetDefault sets d to v when d is zero.
func (d *Duration) SetDefault(v time.Duration) {
	if *d == 0 {
		*d = Duration(v)
	}
}

// ByteSize is a size in bytes written in YAML as an integer or with a unit
// (KB, MB, GB are powers of 1000; KiB, MiB, GiB powers of 1024).
type ByteSize uint64

var byteUnits = []struct {
	suffix string
	mult   uint64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseByteSize parses "512", "64KiB", "16MiB", "1GB".
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	mult := uint64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || (mult > 1 && n > (1<<64-1)/mult) {
		return 0, fmt.Errorf("%q is not a size (use bytes or a unit: 64KiB, 16MiB, 1GB)", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "want a size such as 16MiB")
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return typeErr(n, err.Error())
	}
	*b = v
	return nil
}

// String formats the size with the largest exact binary unit.
func (b ByteSize) String() string {
	for _, u := range []struct {
		s string
		m uint64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && uint64(b)%u.m == 0 {
			return strconv.FormatUint(uint64(b)/u.m, 10) + u.s
		}
	}
	return strconv.FormatUint(uint64(b), 10)
}

// MarshalYAML implements yaml.Marshaler.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// TLS holds client TLS material (a server CA, and a client certificate for
// mutual TLS), as the MQTT client and the cloud link take it.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Resolve makes the TLS files absolute against dir.
func (t *TLS) Resolve(dir string) {
	Rel(dir, &t.CAFile)
	Rel(dir, &t.CertFile)
	Rel(dir, &t.KeyFile)
}

// Validate checks that the files exist and that cert and key go together.
func (t TLS) Validate(c *Checker) {
	c.File("ca_file", t.CAFile, false)
	c.File("cert_file", t.CertFile, false)
	c.SecretFile("key_file", t.KeyFile, false)
	if (t.CertFile == "") != (t.KeyFile == "") {
		c.Errorf("", "cert_file and key_file go together")
	}
}
