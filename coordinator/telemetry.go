package coordinator

import (
	"context"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/telemetry"
)

// telemetrySinks connects the telemetry hub to the rest of the daemon:
// updates published on MQTT through the daemon's client, and telemetry
// triggers submitted as calls to the one scheduler.
type telemetrySinks struct{ c *Coordinator }

var (
	_ telemetry.Publisher = telemetrySinks{}
	_ telemetry.Trigger   = telemetrySinks{}
)

func (s telemetrySinks) Publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	return s.c.client.Publish(ctx, topic, qos, payload)
}

// Submit queues a triggered call; it never blocks (the hub's goroutine
// calls it). A failed call is logged with the trigger that caused it (its
// source) where every failed call is.
func (s telemetrySinks) Submit(task string, input []byte, source string) error {
	return s.c.sched.Submit(calls.New(task, input, calls.Source{Kind: "telemetry", Ref: source}))
}

func (c *Coordinator) newTelemetry() *telemetry.Service {
	cfg := c.cfg.Load()
	sinks := telemetrySinks{c}
	return telemetry.New(cfg.Telemetry, cfg.DataDir, c.log.With("part", "telemetry"), c.reg, telemetry.Sinks{Publisher: sinks, Trigger: sinks})
}
