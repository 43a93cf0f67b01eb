package configs

import (
	"strings"
	"testing"
	"time"
)

func TestCloudConfig(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		c, err := Parse([]byte("cloud: {url: \"http://127.0.0.1:8480\"}\n"), "x.yaml")
		if err != nil {
			t.Fatal(err)
		}
		cl := c.Cloud
		if !cl.Enabled() || cl.PollWait.Std() != 25*time.Second || cl.BackoffMax.Std() != 5*time.Minute || cl.OutboxMaxBytes != 64<<20 ||
			cl.DedupeRetention.Std() != 24*time.Hour || cl.MaxInflight != 256 || cl.BatchSize != 256 {
			t.Errorf("defaults %+v", cl)
		}
	})
	t.Run("problems", func(t *testing.T) {
		_, err := Parse([]byte(`cloud:
  url: "http://cloud.example.com"
  token_file: missing-token
  tls: {insecure_skip_verify: true}
  poll_wait: 5m
  backoff_base: 10m
  dedupe_retention: 1h
  queues:
    - {name: control, weight: 2}
    - {name: bulk, weight: 5000}
`), "/etc/outpost/outpost.yaml")
		if err == nil {
			t.Fatal("bad cloud section accepted")
		}
		msg := err.Error()
		for _, want := range []string{
			"outpost.yaml:2: cloud.url: plain http only to a loopback host",
			"outpost.yaml:3: cloud.token_file: cannot read /etc/outpost/missing-token",
			"cloud.tls.insecure_skip_verify: not supported",
			"outpost.yaml:5: cloud.poll_wait: must be between 100ms and 60s",
			"outpost.yaml:6: cloud.backoff_base: must be positive and at most backoff_max",
			"outpost.yaml:7: cloud.dedupe_retention: must be at least 24h",
			"cloud.queues[0].name: control is the built-in strict queue",
			"cloud.queues[1].weight: must be between 1 and 1000",
		} {
			if !strings.Contains(msg, want) {
				t.Errorf("missing %q in:\n%s", want, msg)
			}
		}
	})
}
