package devices

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/devices/mqttd"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/ratelog"
)

// DeviceLimits hold each registered device to a message rate and a message
// size (config key mqtt.broker.limits). A message over a limit is refused
// and counted; other clients are not affected. Users, anonymous clients and
// the daemon's own client are not limited.
type DeviceLimits struct {
	// MessagesPerSecond is the rate of PUBLISH packets a device may keep up.
	MessagesPerSecond float64 `yaml:"messages_per_second"`
	// Burst is how many messages a device may send at once above the rate
	// (the size of its token bucket).
	Burst int `yaml:"burst"`
	// MaxMessageSize is the largest payload a device may publish.
	MaxMessageSize confval.ByteSize `yaml:"max_message_size"`
	// MaxInflight is the most QoS 1/2 messages sent to a device and not
	// yet acknowledged by it; past it the device receives nothing more
	// until it acknowledges, and publishers to it are held (flow.go).
	MaxInflight int `yaml:"max_inflight"`
}

// Validate reports every problem of the limits; packetLimit and
// inflightLimit are the broker's max_message_size and max_inflight, which
// a device's limits must stay under.
func (l DeviceLimits) Validate(c *confval.Checker, packetLimit confval.ByteSize, inflightLimit int) {
	if l.MessagesPerSecond <= 0 {
		c.Errorf("messages_per_second", "must be positive")
	}
	if l.Burst < 1 {
		c.Errorf("burst", "must be at least 1")
	}
	if l.MaxMessageSize < 1 || l.MaxMessageSize > packetLimit {
		c.Errorf("max_message_size", "must be between 1 byte and mqtt.broker.max_message_size (%v)", packetLimit)
	}
	if l.MaxInflight < 1 || l.MaxInflight > inflightLimit {
		c.Errorf("max_inflight", "must be between 1 and mqtt.broker.max_inflight (%d)", inflightLimit)
	}
}

// Reasons a device's message is refused, the label of
// outpost_devices_limited_total.
const (
	limitRate     = "rate"
	limitSize     = "size"
	limitInflight = "inflight" // a message for the device, not from it (flow.go)
)

var limitedVec = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "outpost_devices_limited_total",
	Help: "Messages the embedded broker refused by the per-device limits, by device and reason (rate, size: from the device; inflight: to the device, at its in-flight limit).",
}, []string{"device", "reason"})

// limits applies the DeviceLimits, which a reload may swap.
type limits struct {
	cfg     atomic.Pointer[DeviceLimits]
	refused *prometheus.CounterVec
	log     *slog.Logger
	warn    ratelog.Limiter
}

func newLimits(cfg DeviceLimits, reg prometheus.Registerer, log *slog.Logger) *limits {
	l := &limits{refused: register(reg, log, limitedVec), log: log, warn: ratelog.Limiter{Every: denyWarnEvery}}
	l.cfg.Store(&cfg)
	return l
}

// forDevice returns the limiter of one connection of device id, with a
// full bucket.
func (l *limits) forDevice(id string) *limiter {
	return &limiter{l: l, device: id, tokens: float64(l.cfg.Load().Burst), last: time.Now()}
}

// forget drops the counters of a removed device.
func (l *limits) forget(id string) {
	l.refused.DeletePartialMatch(prometheus.Labels{"device": id})
}

// limiter is one connection's token bucket. OnPublish calls it from the
// connection's reading goroutine, and for a journaled message injected
// again, not at all (limitsHook).
type limiter struct {
	l      *limits
	device string

	mu     sync.Mutex // guards tokens, last
	tokens float64
	last   time.Time
}

// admit takes a message of size payload bytes, or returns why it is
// refused ("" when admitted). A refused message takes no token.
func (d *limiter) admit(size int, now time.Time) (reason, detail string) {
	cfg := d.l.cfg.Load()
	if size > int(cfg.MaxMessageSize) {
		return limitSize, fmt.Sprintf("message of %d bytes over the device limit of %d bytes", size, cfg.MaxMessageSize)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tokens = min(float64(cfg.Burst), d.tokens+now.Sub(d.last).Seconds()*cfg.MessagesPerSecond)
	d.last = now
	if d.tokens < 1 {
		return limitRate, fmt.Sprintf("message rate over the device limit of %g/s", cfg.MessagesPerSecond)
	}
	d.tokens--
	return "", ""
}

// limitsHook refuses the messages of a device over its limits before they
// are journaled or delivered, and holds a publisher whose message goes to
// a subscriber at its in-flight window (flow.go). A refused message is never delivered. An
// MQTT 5 client gets the reason in its PUBACK (QoS 1) or PUBREC (QoS 2):
// 0x97 quota exceeded for the rate, 0x83 implementation specific error
// for the size, with a reason string. MQTT 3.1.1 has no negative
// acknowledgement: the message is acknowledged as usual and dropped, so
// that the device does not send it again forever.
type limitsHook struct {
	mqttd.HookBase
	b *Broker
}

// OnPublish admits or refuses a device's message.
func (h *limitsHook) OnPublish(cl *mqttd.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Inline {
		return pk, nil
	}
	a := h.b.access.access(cl)
	if a == nil || a.limit == nil {
		h.b.flow.hold(cl, pk.TopicName)
		return pk, nil
	}
	now := time.Now()
	reason, detail := a.limit.admit(len(pk.Payload), now)
	if reason == "" {
		h.b.flow.hold(cl, pk.TopicName)
		return pk, nil
	}
	l := a.limit.l
	l.refused.WithLabelValues(a.device, reason).Inc()
	h.b.violations.add(Violation{Time: now, Device: a.device, Client: cl.ID, Topic: pk.TopicName, Action: actionPublish, Reason: reason})
	if n, ok := l.warn.Allow(now); ok {
		l.log.Warn("device limit refused a message", "device", a.device, "client", cl.ID, "topic", pk.TopicName,
			"reason", reason, "detail", detail, "unlogged", n)
	}
	if cl.Version != 5 || pk.FixedHeader.Qos == 0 {
		return pk, packets.CodeSuccessIgnore // acknowledged as usual, not delivered
	}
	code := packets.ErrQuotaExceeded
	if reason == limitSize {
		code = packets.ErrImplementationSpecificError
	}
	return pk, packets.Code{Code: code.Code, Reason: detail} // the server answers with it
}

var _ mqttd.Hook = (*limitsHook)(nil)
