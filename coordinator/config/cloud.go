package config

import (
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/internal/loopback"
)

// Cloud configures the link to a cloud control plane (see docs/cloud-link.md).
// The link is off until url is set; the call journal runs either way.
type Cloud struct {
	// URL of the control plane (https://…; http:// only to a loopback host).
	URL string `yaml:"url"`
	// TokenFile holds the bearer token; re-read on every 401. Relative to the config file.
	TokenFile string `yaml:"token_file"`
	// TLS: server CA, and a client certificate for mTLS. insecure_skip_verify is refused.
	TLS TLS `yaml:"tls"`
	// PollWait is how long the server may hold a long poll (25s, under common 30s proxy idle timeouts).
	PollWait Duration `yaml:"poll_wait"`
	// BackoffBase and BackoffMax bound the exponential backoff with full jitter.
	BackoffBase Duration `yaml:"backoff_base"`
	BackoffMax  Duration `yaml:"backoff_max"`
	// BatchSize is the most results sent in one results:batch request.
	BatchSize int `yaml:"batch_size"`
	// MaxInflight is the most cloud calls the node holds at once (the capacity it advertises).
	MaxInflight int `yaml:"max_inflight"`
	// OutboxMaxBytes caps results waiting for upload; over it the node takes no new calls.
	OutboxMaxBytes ByteSize `yaml:"outbox_max_bytes"`
	// DedupeRetention keeps reported calls (dedupe and results cache) at least this long.
	DedupeRetention Duration `yaml:"dedupe_retention"`
	// Queues are the scheduler's weighted queues besides control (strict) and default (weight 1).
	Queues []CloudQueue `yaml:"queues"`
	// AgingAfter: a queue not served this long is served next, whatever the weights.
	AgingAfter Duration `yaml:"aging_after"`
}

// CloudQueue is one weighted scheduler queue.
type CloudQueue struct {
	Name   string `yaml:"name"`
	Weight int    `yaml:"weight"`
}

// Enabled reports whether the cloud link runs.
func (cl Cloud) Enabled() bool { return cl.URL != "" }

// applyDefaults fills the zero-valued cloud settings.
func (cl *Cloud) applyDefaults() {
	setDur := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	setDur(&cl.PollWait, 25*time.Second)
	setDur(&cl.BackoffBase, time.Second)
	setDur(&cl.BackoffMax, 5*time.Minute)
	setDur(&cl.DedupeRetention, 24*time.Hour)
	setDur(&cl.AgingAfter, time.Second)
	if cl.BatchSize == 0 {
		cl.BatchSize = 256
	}
	if cl.MaxInflight == 0 {
		cl.MaxInflight = 256
	}
	if cl.OutboxMaxBytes == 0 {
		cl.OutboxMaxBytes = 64 << 20
	}
	for i := range cl.Queues {
		if cl.Queues[i].Weight == 0 {
			cl.Queues[i].Weight = 1
		}
	}
}

func (c *Config) validateCloud(d *doc) {
	cl := &c.Cloud
	if c.Source != "" && c.Source != "-" {
		dir := filepath.Dir(c.Source)
		for _, p := range []*string{&cl.TokenFile, &cl.TLS.CAFile, &cl.TLS.CertFile, &cl.TLS.KeyFile} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(dir, *p)
			}
		}
	}
	if cl.URL != "" {
		u, err := url.Parse(cl.URL)
		switch {
		case err != nil:
			d.errorf("cloud.url", "%q is not a URL: %v", cl.URL, err)
		case u.Scheme != "https" && u.Scheme != "http":
			d.errorf("cloud.url", "scheme %q: want https (or http to a loopback host)", u.Scheme)
		case u.Host == "":
			d.errorf("cloud.url", "%q has no host", cl.URL)
		case u.Scheme == "http" && !loopback.Host(u.Hostname()):
			d.errorf("cloud.url", "plain http only to a loopback host (credentials and calls would cross the network in clear): use https")
		}
	}
	checkSecretFile(d, "cloud.token_file", cl.TokenFile, false)
	checkFile(d, "cloud.tls.ca_file", cl.TLS.CAFile, false)
	checkFile(d, "cloud.tls.cert_file", cl.TLS.CertFile, false)
	checkSecretFile(d, "cloud.tls.key_file", cl.TLS.KeyFile, false)
	if (cl.TLS.CertFile == "") != (cl.TLS.KeyFile == "") {
		d.errorf("cloud.tls", "cert_file and key_file go together")
	}
	if cl.TLS.InsecureSkipVerify {
		d.errorf("cloud.tls.insecure_skip_verify", "not supported for the cloud link: there is no insecure fallback (set ca_file instead)")
	}
	if cl.PollWait < Duration(100*time.Millisecond) || cl.PollWait > Duration(60*time.Second) {
		d.errorf("cloud.poll_wait", "must be between 100ms and 60s")
	}
	if cl.BackoffBase <= 0 || cl.BackoffBase > cl.BackoffMax {
		d.errorf("cloud.backoff_base", "must be positive and at most backoff_max (%s)", cl.BackoffMax.Std())
	}
	if cl.BackoffMax > Duration(time.Hour) {
		d.errorf("cloud.backoff_max", "must be at most 1h")
	}
	if cl.BatchSize < 1 || cl.BatchSize > 10000 {
		d.errorf("cloud.batch_size", "must be between 1 and 10000")
	}
	if cl.MaxInflight < 1 || cl.MaxInflight > 100000 {
		d.errorf("cloud.max_inflight", "must be between 1 and 100000")
	}
	if cl.OutboxMaxBytes < 1<<10 {
		d.errorf("cloud.outbox_max_bytes", "must be at least 1KiB")
	}
	if cl.DedupeRetention < Duration(24*time.Hour) {
		d.errorf("cloud.dedupe_retention", "must be at least 24h: nodes go offline for hours and redeliveries must still be recognised")
	}
	if cl.AgingAfter <= 0 {
		d.errorf("cloud.aging_after", "must be positive")
	}
	seen := map[string]bool{}
	for i, q := range cl.Queues {
		p := "cloud.queues[" + strconv.Itoa(i) + "]"
		switch {
		case !taskNameRE.MatchString(q.Name):
			d.errorf(p+".name", "%q is not a queue name (lower-case letters, digits, '_', '.', '-')", q.Name)
		case q.Name == "control":
			d.errorf(p+".name", "control is the built-in strict queue and takes no weight")
		case seen[q.Name]:
			d.errorf(p+".name", "duplicate queue %q", q.Name)
		}
		seen[q.Name] = true
		if q.Weight < 1 || q.Weight > 1000 {
			d.errorf(p+".weight", "must be between 1 and 1000")
		}
	}
}
