package gnmi

import (
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// Config lists the gNMI targets to subscribe to (config key telemetry.gnmi).
type Config struct {
	Targets []Target `yaml:"targets"`
}

// Target is one gNMI device.
type Target struct {
	Name         string `yaml:"name"`
	Address      string `yaml:"address"` // host:port
	TLS          TLS    `yaml:"tls"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// Timeout bounds connecting and each Get.
	Timeout confval.Duration `yaml:"timeout"`
	// BackoffMin and BackoffMax bound the reconnect delay (doubled, with jitter).
	BackoffMin    confval.Duration `yaml:"backoff_min"`
	BackoffMax    confval.Duration `yaml:"backoff_max"`
	Subscriptions []Subscription   `yaml:"subscriptions"`
}

// Subscription is one subscription (one stream) on a target.
type Subscription struct {
	Name string `yaml:"name"`
	// Mode is stream, poll or once.
	Mode string `yaml:"mode"`
	// StreamMode is sample, on_change or target_defined (mode stream only).
	StreamMode        string           `yaml:"stream_mode"`
	Prefix            string           `yaml:"prefix"`
	Paths             []string         `yaml:"paths"`
	SampleInterval    confval.Duration `yaml:"sample_interval"`
	HeartbeatInterval confval.Duration `yaml:"heartbeat_interval"`
	SuppressRedundant bool             `yaml:"suppress_redundant"`
	// Interval is how often poll and once subscriptions are repeated.
	Interval confval.Duration `yaml:"interval"`
	// Encoding is json_ietf, json or proto.
	Encoding string `yaml:"encoding"`
}

// TLS is the client's TLS settings for a target: TLS is used when Enabled
// is set; skip-verify only when asked.
type TLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Resolve makes the TLS files absolute against dir.
func (t *TLS) Resolve(dir string) {
	confval.Rel(dir, &t.CAFile)
	confval.Rel(dir, &t.CertFile)
	confval.Rel(dir, &t.KeyFile)
}

// Validate checks the files.
func (t TLS) Validate(c *confval.Checker) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		c.Errorf("", "cert_file and key_file go together")
	}
	c.File("ca_file", t.CAFile, false)
	c.File("cert_file", t.CertFile, false)
	c.SecretFile("key_file", t.KeyFile, false)
}

// WithDefaults returns c with every zero value replaced by its default; c's
// lists are not modified.
func (c Config) WithDefaults() Config {
	c.Targets = append([]Target(nil), c.Targets...)
	for i := range c.Targets {
		g := &c.Targets[i]
		g.Timeout.SetDefault(10 * time.Second)
		g.BackoffMin.SetDefault(time.Second)
		g.BackoffMax.SetDefault(time.Minute)
		subs := append([]Subscription(nil), g.Subscriptions...)
		for j := range subs {
			s := &subs[j]
			if s.Name == "" {
				s.Name = "sub" + strconv.Itoa(j)
			}
			if s.Mode == "" {
				s.Mode = "stream"
			}
			if s.Mode == "stream" && s.StreamMode == "" {
				s.StreamMode = "sample"
			}
			if s.StreamMode == "sample" {
				s.SampleInterval.SetDefault(10 * time.Second)
			}
			if s.Mode != "stream" {
				s.Interval.SetDefault(10 * time.Second)
			}
			if s.Encoding == "" {
				s.Encoding = "json_ietf"
			}
		}
		g.Subscriptions = subs
	}
	return c
}

// Resolve makes the targets' files absolute against dir.
func (c *Config) Resolve(dir string) {
	for i := range c.Targets {
		confval.Rel(dir, &c.Targets[i].PasswordFile)
		c.Targets[i].TLS.Resolve(dir)
	}
}

// Interval is the longest interval at which a subscription of c's targets
// sends (sample or poll interval).
func (c Config) Interval() time.Duration {
	var d time.Duration
	for _, g := range c.Targets {
		for _, s := range g.Subscriptions {
			d = max(d, s.SampleInterval.Std(), s.Interval.Std())
		}
	}
	return d
}

// Validate reports the problems of one target besides its name and address
// (which the telemetry section checks across gNMI and SNMP); g has its
// defaults applied.
func (g Target) Validate(c *confval.Checker) {
	g.TLS.Validate(c.At("tls"))
	if (g.Username == "") != (g.PasswordFile == "") {
		c.Errorf("username", "username and password_file go together")
	}
	c.SecretFile("password_file", g.PasswordFile, false)
	if g.BackoffMin > g.BackoffMax {
		c.Errorf("backoff_min", "must not exceed backoff_max")
	}
	if len(g.Subscriptions) == 0 {
		c.Errorf("subscriptions", "must list at least one subscription")
	}
	subNames := map[string]bool{}
	for j, s := range g.Subscriptions {
		sc := c.Index("subscriptions", j)
		if subNames[s.Name] {
			sc.Errorf("name", "duplicate subscription %q", s.Name)
		}
		subNames[s.Name] = true
		s.validate(sc)
	}
}

func (s Subscription) validate(c *confval.Checker) {
	switch s.Mode {
	case "stream":
		switch s.StreamMode {
		case "sample", "on_change", "target_defined":
		default:
			c.Errorf("stream_mode", "%q is not a stream mode (sample, on_change, target_defined)", s.StreamMode)
		}
	case "poll", "once":
		if s.StreamMode != "" {
			c.Errorf("stream_mode", "applies to mode stream only")
		}
	default:
		c.Errorf("mode", "%q is not a mode (stream, poll, once)", s.Mode)
	}
	switch s.Encoding {
	case "json_ietf", "json", "proto":
	default:
		c.Errorf("encoding", "%q is not an encoding (json_ietf, json, proto)", s.Encoding)
	}
	if len(s.Paths) == 0 {
		c.Errorf("paths", "must list at least one path")
	}
	for k, path := range s.Paths {
		if err := model.CheckPath(path); err != nil {
			c.Errorf("paths["+strconv.Itoa(k)+"]", "%v", err)
		}
	}
	if s.Prefix != "" {
		if err := model.CheckPath(s.Prefix); err != nil {
			c.Errorf("prefix", "%v", err)
		}
	}
	if s.SampleInterval < 0 || s.HeartbeatInterval < 0 || s.Interval < 0 {
		c.Errorf("", "intervals must not be negative")
	}
}
