package devices

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/devices/mqttd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/devices/topic"
)

// InlineClient is the daemon's client of its embedded broker: it publishes
// and subscribes through the server's inline client, in process, with no TCP
// connection and no packet encoding. It offers what Client offers (the
// same subscriptions, size limit, metrics and health), so the daemon uses
// it in embedded mode and Client for an external broker.
//
// Messages are handed to the handler on the publishing device's connection
// goroutine, after the broker took them (for a QoS 1 or 2 message, after
// the broker's OnPublish hooks, the DurablePublish among them, and its
// acknowledgement), one delivery per message however many of the
// subscriptions match, with the highest QoS of those. A publish is done
// once the broker has queued the message to every subscriber: there is no
// connection to lose, so there is nothing to resend, and no reconnect.
type InlineClient struct {
	b         *Broker
	cfg       MQTTConfig
	h         Handler
	log       *slog.Logger
	m         clientMetrics
	manualAck bool // set by SetManualAck

	// mu guards the fields below and orders changes of the subscriptions.
	mu      sync.Mutex
	subs    []Subscription // the wanted subscriptions, in order
	srv     *mqttd.Server  // set at Start
	started bool
	stopped bool

	// live is srv while the client runs (nil before Start and after Stop),
	// for Publish and Connected; filters is what the handler matches.
	live    atomic.Pointer[mqttd.Server]
	filters atomic.Pointer[[]inlineFilter]
}

// inlineFilter is one subscription, compiled.
type inlineFilter struct {
	f   topic.Filter
	qos byte
}

// inlineSubscriptionID is the id of every subscription of the inline
// client: the server keeps one inline subscription per id and filter, and
// delivers a message once per id.
const inlineSubscriptionID = 1

// NewInlineClient returns the daemon's client of b. Like NewClient it has
// no side effects until Start apart from registering its metrics on reg
// (nil allowed).
func NewInlineClient(b *Broker, cfg MQTTConfig, h Handler, log *slog.Logger, reg prometheus.Registerer) *InlineClient {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if h == nil {
		h = func(Message) {}
	}
	log = log.With("component", "mqtt_client", "client", "inline")
	return &InlineClient{b: b, cfg: cfg, h: h, log: log, m: newClientMetrics(reg, log)}
}

// SetManualAck gives QoS 1 and 2 messages an Ack, as Client.SetManualAck
// does, so the handler treats them alike. The broker has acknowledged such
// a message to its publisher before the handler sees it (what must be safe
// by then is made safe by the broker's DurablePublish), so Ack does
// nothing.
func (c *InlineClient) SetManualAck(on bool) { c.manualAck = on }

// SetSubscriptions replaces the wanted subscriptions; while the client
// runs, removed filters are unsubscribed and new ones subscribed at once.
func (c *InlineClient) SetSubscriptions(subs []Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.subs
	c.subs = slices.Clone(subs)
	if c.srv == nil || c.stopped {
		return
	}
	c.apply(old, c.subs)
}

// apply moves the broker's inline subscriptions from old to subs; c.mu is
// held. The handler's filters change first when filters are added, so a
// retained message delivered by Subscribe finds its QoS.
func (c *InlineClient) apply(old, subs []Subscription) {
	fs := make([]inlineFilter, 0, len(subs))
	for _, s := range subs {
		fs = append(fs, inlineFilter{f: topic.Compile(s.Filter), qos: s.QoS})
	}
	c.filters.Store(&fs)
	for _, o := range old {
		if !slices.ContainsFunc(subs, func(s Subscription) bool { return s.Filter == o.Filter }) {
			if err := c.srv.Unsubscribe(o.Filter, inlineSubscriptionID); err != nil {
				c.log.Warn("mqtt unsubscribe failed", "topic", o.Filter, "error", err)
			}
		}
	}
	for _, s := range subs {
		if slices.ContainsFunc(old, func(o Subscription) bool { return o.Filter == s.Filter }) {
			continue // a changed QoS is in the filters already
		}
		if err := c.srv.Subscribe(s.Filter, inlineSubscriptionID, c.onMessage); err != nil {
			c.log.Warn("mqtt subscribe failed", "topic", s.Filter, "error", err)
		}
	}
}

// Start subscribes on the broker, which must have started.
func (c *InlineClient) Start(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("start mqtt client: %w", ErrStopped)
	}
	if c.started {
		return fmt.Errorf("start mqtt client: %w", ErrAlreadyStarted)
	}
	c.started = true
	srv := c.b.server()
	if srv == nil {
		return fmt.Errorf("start mqtt client: the embedded broker is not running: %w", ErrNotConnected)
	}
	c.srv = srv
	c.apply(nil, c.subs)
	c.live.Store(srv)
	c.m.connected.Set(1)
	c.log.Info("mqtt connected", "broker", "embedded (inline)", "subscriptions", len(c.subs))
	return nil
}

// onMessage is the inline subscription handler.
func (c *InlineClient) onMessage(_ *mqttd.Client, _ packets.Subscription, pk packets.Packet) {
	qos, ok := byte(0), false
	if fs := c.filters.Load(); fs != nil {
		for _, f := range *fs {
			if _, match := f.f.Match(pk.TopicName); match {
				qos, ok = max(qos, f.qos), true
			}
		}
	}
	if !ok {
		return // a filter being removed
	}
	c.m.received.Inc()
	msg := Message{Topic: pk.TopicName, Payload: bytes.Clone(pk.Payload), QoS: min(qos, pk.FixedHeader.Qos), Retained: pk.FixedHeader.Retain}
	if c.manualAck && msg.QoS > 0 {
		msg.Ack = func() {}
	}
	c.h(msg)
}

// Publish hands a message to the broker, which queues it to its
// subscribers before it returns. It fails with ErrNotConnected before
// Start and after Stop, and with ErrTooLarge, sending nothing, for a
// message over the broker's limit (cfg.MessageLimit; 0: none).
func (c *InlineClient) Publish(_ context.Context, topic string, qos byte, payload []byte) error {
	return c.m.publish(c.cfg.MessageLimit(), topic, qos, payload, func() error {
		srv := c.live.Load()
		if srv == nil {
			return ErrNotConnected
		}
		return srv.Publish(topic, payload, false, qos)
	})
}

// Connected reports whether the client runs (between Start and Stop) on a
// broker that runs.
func (c *InlineClient) Connected() bool { return c.live.Load() != nil && c.b.server() != nil }

// Stop removes the subscriptions. It is safe before Start and twice.
func (c *InlineClient) Stop(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	c.live.Store(nil)
	c.m.connected.Set(0)
	if c.srv != nil {
		c.apply(c.subs, nil)
		c.log.Info("mqtt client stopped", "broker", "embedded (inline)")
	}
	return nil
}
