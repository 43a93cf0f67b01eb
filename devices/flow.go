package devices

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/devices/mqttd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/ratelog"
)

// Flow control: every client connected over the network has an in-flight
// window, the QoS 1/2 messages sent to it (or queued for it) and not yet
// acknowledged: a registered device's limits.max_inflight, for any other
// client (a service subscribed to many devices, perhaps far away: its
// messages in flight are its rate times its round trip) max_inflight. A
// client at its window is full.
//
//   - A device that is full receives nothing more (the messages for it are
//     dropped, counted in outpost_devices_limited_total{reason="inflight"}),
//     until it acknowledges; other clients are held to max_inflight and
//     max_client_writes_pending by the broker itself.
//   - A publisher whose message would go to a full subscriber is held
//     before its message is acknowledged or delivered: its connection is
//     not read meanwhile, so it is slowed to the pace of the slowest
//     subscriber of its topics (TCP backpressure up to the device). It is
//     released when the subscriber acknowledges, or when the subscriber has
//     been full for backpressure_wait: a subscriber that stopped reading
//     holds nobody longer, and the messages it cannot take are dropped and
//     counted. A client is never held for its own subscriptions.
//
// What the broker holds per subscriber is so bounded by its window,
// whatever the publishers do.
type flow struct {
	b    *Broker
	srv  *mqttd.Server
	wait time.Duration // backpressure_wait

	nFull   atomic.Int32 // clients full now: holding is looked at only when some are
	mu      sync.Mutex   // guards drained
	drained chan struct{}

	held, heldSeconds prometheus.Counter
	warn              ratelog.Limiter
}

var (
	heldCounter = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outpost_broker_publishers_held_total",
		Help: "Messages whose publisher the embedded broker held because a subscriber was at its in-flight window (backpressure).",
	})
	heldSecondsCounter = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outpost_broker_publishers_held_seconds_total",
		Help: "Time publishers were held by the embedded broker for subscribers at their in-flight window.",
	})
)

func newFlow(b *Broker, srv *mqttd.Server) *flow {
	return &flow{b: b, srv: srv, wait: time.Duration(b.cfg.BackpressureWait), drained: make(chan struct{}),
		held: register(b.reg, b.log, heldCounter), heldSeconds: register(b.reg, b.log, heldSecondsCounter),
		warn: ratelog.Limiter{Every: denyWarnEvery}}
}

// window is the in-flight window of a client whose access is a.
func (f *flow) window(a *clientAccess) int {
	if a.device != "" {
		return f.b.limits.cfg.Load().MaxInflight
	}
	return f.b.cfg.MaxInflight
}

// refuse reports whether a message on topic for device cl must be
// dropped: the device is at its window (a subscription it is making is
// not a message).
func (f *flow) refuse(cl *mqttd.Client, a *clientAccess, topic string) bool {
	if a.device == "" || a.subscribing.Load() > 0 || cl.InflightLen() < f.window(a) {
		return false
	}
	l := f.b.limits
	l.refused.WithLabelValues(a.device, limitInflight).Inc()
	now := time.Now()
	f.b.violations.add(Violation{Time: now, Device: a.device, Client: cl.ID, Topic: topic, Action: actionReceive, Reason: limitInflight})
	if n, ok := l.warn.Allow(now); ok {
		l.log.Warn("device limit refused a message", "device", a.device, "client", cl.ID, "reason", limitInflight,
			"detail", "messages in flight to the device at its limit: not delivered", "unlogged", n)
	}
	return true
}

// update marks cl full or not after a QoS 1/2 message was sent or queued
// to it, or acknowledged by it. Every change of the client's in-flight
// messages is followed by an update, one at a time per client, so the
// last one leaves the mark right.
func (f *flow) update(cl *mqttd.Client, a *clientAccess) {
	a.flowMu.Lock()
	defer a.flowMu.Unlock()
	if cl.InflightLen() < f.window(a) {
		f.release(a)
	} else if a.fullSince.CompareAndSwap(0, time.Now().UnixNano()) {
		f.nFull.Add(1)
	}
}

// release marks a no longer full and wakes the held publishers; a.flowMu
// is held.
func (f *flow) release(a *clientAccess) {
	if a.fullSince.Swap(0) == 0 {
		return
	}
	f.nFull.Add(-1)
	f.mu.Lock()
	close(f.drained)
	f.drained = make(chan struct{})
	f.mu.Unlock()
}

// hold waits while a message of pub on topic would go to a full
// subscriber that has not been full for backpressure_wait yet (see flow).
func (f *flow) hold(pub *mqttd.Client, topic string) {
	if f.nFull.Load() == 0 {
		return
	}
	var start time.Time
	for {
		f.mu.Lock()
		drained := f.drained
		f.mu.Unlock()
		sub, until := f.fullSubscriber(pub, topic)
		if sub == nil || pub.Closed() {
			break
		}
		if start.IsZero() {
			start = time.Now()
			f.held.Inc()
			if n, ok := f.warn.Allow(start); ok {
				f.b.log.Warn("publisher held: a subscriber is at its in-flight window", "publisher", pub.ID, "subscriber", sub.ID,
					"topic", topic, "held_total", n+1)
			}
		}
		timer := time.NewTimer(min(time.Until(until), time.Second)) // a second: to notice pub going away
		select {
		case <-drained:
		case <-timer.C:
		case <-f.b.stopCtx.Done():
		}
		timer.Stop()
		if f.b.stopCtx.Err() != nil {
			break
		}
	}
	if !start.IsZero() {
		f.heldSeconds.Add(time.Since(start).Seconds())
	}
}

// fullSubscriber returns a connected client other than pub, subscribed to
// topic (not through a shared subscription, which the broker gives to one
// member of its group), that is full and has been full for less than
// backpressure_wait, and when that wait ends; nil if none.
func (f *flow) fullSubscriber(pub *mqttd.Client, topic string) (*mqttd.Client, time.Time) {
	now := time.Now()
	for _, id := range f.srv.Subscribers(topic) {
		if id == pub.ID {
			continue
		}
		cl, ok := f.srv.Client(id)
		if !ok || cl.Inline || cl.Closed() {
			continue
		}
		a := f.b.access.access(cl)
		if a == nil {
			continue
		}
		if since := a.fullSince.Load(); since != 0 {
			if until := time.Unix(0, since).Add(f.wait); now.Before(until) {
				return cl, until
			}
		}
	}
	return nil, time.Time{}
}

// flowHook feeds the flow from the server: messages sent, acknowledgements,
// subscriptions being made, disconnections.
type flowHook struct {
	mqttd.HookBase
	f *flow
}

func (h *flowHook) access(cl *mqttd.Client) *clientAccess {
	if cl.Inline {
		return nil
	}
	return h.f.b.access.access(cl)
}

func (h *flowHook) OnQosPublish(cl *mqttd.Client, _ packets.Packet) {
	if a := h.access(cl); a != nil {
		h.f.update(cl, a)
	}
}

func (h *flowHook) OnQosComplete(cl *mqttd.Client, _ packets.Packet) {
	if a := h.access(cl); a != nil {
		h.f.update(cl, a)
	}
}

func (h *flowHook) OnQosDropped(cl *mqttd.Client, _ packets.Packet) {
	if a := h.access(cl); a != nil {
		h.f.update(cl, a)
	}
}

func (h *flowHook) OnSubscribe(cl *mqttd.Client, pk packets.Packet) packets.Packet {
	if a := h.access(cl); a != nil {
		a.subscribing.Add(1)
	}
	return pk
}

func (h *flowHook) OnSubscribed(cl *mqttd.Client, _ packets.Packet, _ []byte) {
	if a := h.access(cl); a != nil {
		a.subscribing.Add(-1)
	}
}

// OnDisconnect releases a client that was full: nobody waits for a client
// that went away (its session keeps at most its window).
func (h *flowHook) OnDisconnect(cl *mqttd.Client, _ error, _ bool) {
	if a := h.access(cl); a != nil {
		a.flowMu.Lock()
		defer a.flowMu.Unlock()
		h.f.release(a)
	}
}

var _ mqttd.Hook = (*flowHook)(nil)
