package coordinator

import (
	"bytes"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/routes"
)

// Routes to the cloud: a message matched by a route with cloud: true goes
// to the cloud link's spool (remote.Spool), once however many such routes
// match, and is uploaded from there. A QoS 1 message on a qos 1 cloud
// route is acknowledged only once it is in the spool on disk; a message
// the spool refuses (full) is not acknowledged, and the device sends it
// again. Other messages are spooled without holding their
// acknowledgement (best effort: a refusal is counted and logged).

// toCloud reports whether ms has a route to the cloud, and whether the
// message must be on disk before it is acknowledged (durable).
func toCloud(ms []routes.Match, qos byte) (cloud, durable bool) {
	for _, m := range ms {
		if m.Cloud {
			cloud = true
			durable = durable || (qos >= 1 && m.QoS >= 1)
		}
	}
	return cloud, durable
}

// refusalWarnEvery bounds the warnings of messages the spool refuses.
const refusalWarnEvery = 10 * time.Second

// messages is the cloud spool once the journal takes calls (nil before,
// and without cloud.url).
func (p *cloudPart) messages() *remote.Spool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready == nil {
		return nil
	}
	return p.spool
}

// spoolMessage puts one message in the cloud spool; done (nil: none) gets
// nil once it is on disk, else the error (the message was refused).
func (c *Coordinator) spoolMessage(topic string, payload []byte, qos byte, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	sp := c.cloud.messages()
	if sp == nil {
		done(remote.ErrStopped)
		return
	}
	report := func(err error) {
		if err != nil {
			if n, ok := c.cloud.refusals.Allow(time.Now()); ok {
				c.log.Warn("device message for the cloud refused: not acknowledged", "topic", topic, "err", err, "refused_since_last_warning", n)
			}
		}
		done(err)
	}
	if err := sp.Append([]remote.Message{remote.NewMessage(topic, bytes.Clone(payload), qos)}, report); err != nil {
		report(err)
	}
}
