package coordinator

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/coordinator/config"
	"github.com/outpost-edge/outpost/devices/mqttload"
	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// BenchmarkMQTTFleet is the comparison a user would make: 50 devices on one
// load generator (devices/mqttload), each with 4 messages in flight,
// publishing and waiting for the echo, against
//
//   - outpost: the daemon with its embedded broker and an echo route
//     (load/+/in to the echo task, replies on load/{1}/out), its defaults
//     otherwise. At QoS 1 the route has qos 1: every message is journaled
//     (group commit, synced) before the broker acknowledges it, and its
//     reply is published from the journal.
//   - mosquitto: a bare Mosquitto with a plain paho echo client doing the
//     same work (mqttload.Echo), and at QoS 1 mosquitto-persistent: the same
//     with `persistence true` and persistent sessions.
//
// Each reports messages per second and the round-trip p50 and p99; the
// journaled side also the mean writers per journal group commit (a commit
// that holds writes of several devices is above 1).
func BenchmarkMQTTFleet(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, url string, qos byte, persistent bool) {
		f, err := mqttload.Connect(mqttload.Options{URL: url, QoS: qos, Persistent: persistent})
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Run(ctx, 500); err != nil { // warm up
			b.Fatal(err)
		}
		b.ResetTimer()
		r, err := f.Run(ctx, b.N)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.PerSecond(), "msgs/s")
		b.ReportMetric(float64(r.P50.Microseconds()), "p50-µs")
		b.ReportMetric(float64(r.P99.Microseconds()), "p99-µs")
	}
	mosquitto := func(qos byte, persistent bool) func(b *testing.B) {
		return func(b *testing.B) {
			var opts []mqtttest.Option
			if persistent {
				opts = append(opts, mqtttest.WithConfig("persistence true", "persistence_location "+b.TempDir()+"/"))
			}
			url := mqtttest.StartMosquitto(b, opts...)
			stop, err := mqttload.Echo(url, "load", qos, persistent)
			if err != nil {
				b.Fatal(err)
			}
			defer stop()
			run(b, url, qos, persistent)
		}
	}
	outpost := func(qos byte) func(b *testing.B) {
		return func(b *testing.B) {
			c := startCoordinator(b, fleetConfig(b, qos))
			batch := journalBatch(b, c)
			run(b, "tcp://"+c.broker.Addr(), qos, qos == 1)
			if qos == 1 {
				b.ReportMetric(batch(), "writes/commit")
			}
		}
	}
	b.Run("qos0/mosquitto", mosquitto(0, false))
	b.Run("qos0/outpost", outpost(0))
	b.Run("qos1/mosquitto", mosquitto(1, false))
	b.Run("qos1/mosquitto-persistent", mosquitto(1, true))
	b.Run("qos1/outpost", outpost(1))
}

// fleetConfig is the daemon's defaults with the echo task routed from
// load/+/in to load/{1}/out at qos.
func fleetConfig(tb testing.TB, qos byte) *config.Config {
	yaml := fmt.Sprintf(`data_dir: %s
admin: {listen: "%s"}
mqtt: {broker: {listen: "%s"}}
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "load/+/in", task: echo, reply: "load/{1}/out", qos: %d}]
`, filepath.Join(tb.TempDir(), "data"), mqtttest.FreeAddr(tb), mqtttest.FreeAddr(tb), qos)
	cfg, err := config.Parse([]byte(yaml), "fleet.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// journalBatch returns a function that reports the mean writers per
// journal group commit since journalBatch was called.
func journalBatch(tb testing.TB, c *Coordinator) func() float64 {
	read := func() (sum float64, count uint64) {
		mfs, err := c.Registry().Gather()
		if err != nil {
			tb.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "outpost_journal_commit_batch_size" {
				h := mf.GetMetric()[0].GetHistogram()
				return h.GetSampleSum(), h.GetSampleCount()
			}
		}
		return 0, 0
	}
	s0, c0 := read()
	return func() float64 {
		s1, c1 := read()
		if c1 == c0 {
			return 0
		}
		return (s1 - s0) / float64(c1-c0)
	}
}
