package coordinator

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/routes"
	"github.com/outpost-edge/outpost/devices"
)

// onMessage turns an MQTT message into one call per matching route. It
// runs on the MQTT client's goroutine, so it never blocks: Submit only
// queues, and a refused call is counted and dropped.
func (c *Coordinator) onMessage(m devices.Message) {
	for _, match := range c.routes.Load().Match(m.Topic) {
		call := calls.New(match.Task, m.Payload, calls.Source{Kind: "mqtt", Ref: m.Topic})
		if reply := match.ReplyTopic(m.Topic); reply != "" {
			qos := match.QoS
			call.Done = func(call *calls.Call) { c.reply(reply, qos, call) }
		}
		if err := c.sched.Submit(call); err != nil {
			reason := "queue_full"
			switch {
			case errors.Is(err, calls.ErrDraining):
				reason = "draining"
			case errors.Is(err, calls.ErrUnknownTask):
				reason = "unknown_task"
			}
			c.m.intakeDropped.WithLabelValues(reason).Inc()
			c.log.Debug("message dropped", "topic", m.Topic, "task", match.Task, "reason", reason)
		}
	}
}

// reply publishes a finished call's output, or its error document, to the
// route's reply topic.
func (c *Coordinator) reply(topic string, qos byte, call *calls.Call) {
	payload := call.Result.Output
	if !call.Result.OK() {
		payload, _ = json.Marshal(call.ErrorDoc())
		c.log.Info("call failed", "task", call.Task, "call", call.ID, "source", call.Source.String(), "status", call.Result.Status, "err", call.Result.Error)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Load().MQTT.PublishTimeout.Std())
	defer cancel()
	if err := c.client.Publish(ctx, topic, qos, payload); err != nil {
		c.log.Warn("reply not published", "topic", topic, "task", call.Task, "call", call.ID, "err", err)
	}
}

func subscriptions(t *routes.Table) []devices.Subscription {
	var subs []devices.Subscription
	for f, q := range t.Subscriptions() {
		subs = append(subs, devices.Subscription{Filter: f, QoS: q})
	}
	return subs
}
