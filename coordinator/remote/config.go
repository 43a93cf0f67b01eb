package remote

import (
	"cmp"
	"net/url"
	"regexp"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/loopback"
)

// CloudConfig configures the link to a cloud control plane (config key
// cloud; see docs/cloud-link.md). The link is off until url is set; the
// call journal runs either way.
type CloudConfig struct {
	// URL of the control plane (https://…; http:// only to a loopback host).
	URL string `yaml:"url"`
	// TokenFile holds the bearer token; re-read on every 401. Relative to the config file.
	TokenFile string `yaml:"token_file"`
	// TLS: server CA, and a client certificate for mTLS. insecure_skip_verify is refused.
	TLS confval.TLS `yaml:"tls"`
	// PollWait is how long the server may hold a long poll (25s, under common 30s proxy idle timeouts).
	PollWait confval.Duration `yaml:"poll_wait"`
	// BackoffBase and BackoffMax bound the exponential backoff with full jitter.
	BackoffBase confval.Duration `yaml:"backoff_base"`
	BackoffMax  confval.Duration `yaml:"backoff_max"`
	// BatchSize is the most results sent in one results:batch request.
	BatchSize int `yaml:"batch_size"`
	// MaxInflight is the most cloud calls the node holds at once (the capacity it advertises).
	MaxInflight int `yaml:"max_inflight"`
	// OutboxMaxBytes caps results waiting for upload; over it the node takes no new calls.
	OutboxMaxBytes confval.ByteSize `yaml:"outbox_max_bytes"`
	// MessagesMaxBytes caps the spool of device messages routed to the
	// cloud; a message that does not fit is refused (not acknowledged).
	MessagesMaxBytes confval.ByteSize `yaml:"messages_max_bytes"`
	// DedupeRetention keeps reported calls (dedupe and results cache) at least this long.
	DedupeRetention confval.Duration `yaml:"dedupe_retention"`
	// Queues are the scheduler's weighted queues besides control (strict) and default (weight 1).
	Queues []CloudQueue `yaml:"queues"`
	// AgingAfter: a queue not served this long is served next, whatever the weights.
	AgingAfter confval.Duration `yaml:"aging_after"`
}

// CloudQueue is one weighted scheduler queue.
type CloudQueue struct {
	Name   string `yaml:"name"`
	Weight int    `yaml:"weight"`
}

// Enabled reports whether the cloud link runs.
func (cl CloudConfig) Enabled() bool { return cl.URL != "" }

// ApplyDefaults fills the zero-valued cloud settings, the queues' weights
// too. It is idempotent.
func (cl *CloudConfig) ApplyDefaults() {
	cl.PollWait.SetDefault(25 * time.Second)
	cl.BackoffBase.SetDefault(time.Second)
	cl.BackoffMax.SetDefault(5 * time.Minute)
	cl.DedupeRetention.SetDefault(24 * time.Hour)
	cl.AgingAfter.SetDefault(time.Second)
	cl.BatchSize = cmp.Or(cl.BatchSize, 256)
	cl.MaxInflight = cmp.Or(cl.MaxInflight, 256)
	cl.OutboxMaxBytes = cmp.Or(cl.OutboxMaxBytes, 64<<20)
	cl.MessagesMaxBytes = cmp.Or(cl.MessagesMaxBytes, 32<<20)
	for i := range cl.Queues {
		cl.Queues[i].Weight = cmp.Or(cl.Queues[i].Weight, 1)
	}
}

// Resolve makes the token and TLS files absolute against dir.
func (cl *CloudConfig) Resolve(dir string) {
	confval.Rel(dir, &cl.TokenFile)
	cl.TLS.Resolve(dir)
}

var queueNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Validate reports every problem of the cloud settings.
func (cl CloudConfig) Validate(c *confval.Checker) {
	if cl.URL != "" {
		u, err := url.Parse(cl.URL)
		switch {
		case err != nil:
			c.Errorf("url", "%q is not a URL: %v", cl.URL, err)
		case u.Scheme != "https" && u.Scheme != "http":
			c.Errorf("url", "scheme %q: want https (or http to a loopback host)", u.Scheme)
		case u.Host == "":
			c.Errorf("url", "%q has no host", cl.URL)
		case u.Scheme == "http" && !loopback.Host(u.Hostname()):
			c.Errorf("url", "plain http only to a loopback host (credentials and calls would cross the network in clear): use https")
		}
	}
	c.SecretFile("token_file", cl.TokenFile, false)
	cl.TLS.Validate(c.At("tls"))
	if cl.TLS.InsecureSkipVerify {
		c.Errorf("tls.insecure_skip_verify", "not supported for the cloud link: there is no insecure fallback (set ca_file instead)")
	}
	if cl.PollWait < confval.Duration(100*time.Millisecond) || cl.PollWait > confval.Duration(60*time.Second) {
		c.Errorf("poll_wait", "must be between 100ms and 60s")
	}
	if cl.BackoffBase <= 0 || cl.BackoffBase > cl.BackoffMax {
		c.Errorf("backoff_base", "must be positive and at most backoff_max (%s)", cl.BackoffMax.Std())
	}
	if cl.BackoffMax > confval.Duration(time.Hour) {
		c.Errorf("backoff_max", "must be at most 1h")
	}
	if cl.BatchSize < 1 || cl.BatchSize > 10000 {
		c.Errorf("batch_size", "must be between 1 and 10000")
	}
	if cl.MaxInflight < 1 || cl.MaxInflight > 100000 {
		c.Errorf("max_inflight", "must be between 1 and 100000")
	}
	if cl.OutboxMaxBytes < 1<<10 {
		c.Errorf("outbox_max_bytes", "must be at least 1KiB")
	}
	if cl.MessagesMaxBytes < 1<<10 {
		c.Errorf("messages_max_bytes", "must be at least 1KiB")
	}
	if cl.DedupeRetention < confval.Duration(24*time.Hour) {
		c.Errorf("dedupe_retention", "must be at least 24h: nodes go offline for hours and redeliveries must still be recognised")
	}
	if cl.AgingAfter <= 0 {
		c.Errorf("aging_after", "must be positive")
	}
	seen := map[string]bool{}
	for i, q := range cl.Queues {
		qc := c.Index("queues", i)
		switch {
		case !queueNameRE.MatchString(q.Name):
			qc.Errorf("name", "%q is not a queue name (lower-case letters, digits, '_', '.', '-')", q.Name)
		case q.Name == "control":
			qc.Errorf("name", "control is the built-in strict queue and takes no weight")
		case seen[q.Name]:
			qc.Errorf("name", "duplicate queue %q", q.Name)
		}
		seen[q.Name] = true
		if q.Weight < 1 || q.Weight > 1000 {
			qc.Errorf("weight", "must be between 1 and 1000")
		}
	}
}
