package devices

import (
	"encoding/json"
	"errors"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/devices/mqttd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/xid"
)

// Presence: the embedded broker publishes a registered device's
// connections and disconnections as AWS IoT lifecycle events, on
// $aws/events/presence/connected/{id} and
// $aws/events/presence/disconnected/{id} ({id} the device id; AWS names
// the MQTT client id there), at QoS 1, not retained. They are kept in the
// registry (connected, last seen, address, last disconnect reason), and a
// route may take them as its source.

// PresenceTopic is the topic of a device's presence event ("connected" or
// "disconnected").
func PresenceTopic(event, id string) string { return "$aws/events/presence/" + event + "/" + id }

// Why a connection ended: the reason of a disconnected event.
const (
	ReasonClean   = "clean"   // the device sent DISCONNECT
	ReasonWill    = "will"    // the connection was lost (its will, if any, was published)
	ReasonTimeout = "timeout" // nothing within 1.5 keepalives (its will, if any, was published)
	ReasonKicked  = "kicked"  // the broker ended it: disabled, removed, refused, taken over, shutting down
)

// awsReasons are AWS IoT's disconnectReason values for each reason.
var awsReasons = map[string]string{
	ReasonClean:   "CLIENT_INITIATED_DISCONNECT",
	ReasonWill:    "CONNECTION_LOST",
	ReasonTimeout: "MQTT_KEEP_ALIVE_TIMEOUT",
	ReasonKicked:  "SERVER_INITIATED_DISCONNECT",
}

// PresenceEvent is the payload of a presence event: the fields of AWS IoT
// lifecycle events, and Outpost's reason.
type PresenceEvent struct {
	ClientID            string `json:"clientId"`
	Timestamp           int64  `json:"timestamp"` // milliseconds since 1970
	EventType           string `json:"eventType"` // connected, disconnected
	SessionIdentifier   string `json:"sessionIdentifier"`
	PrincipalIdentifier string `json:"principalIdentifier"` // the device id
	IPAddress           string `json:"ipAddress,omitempty"`
	VersionNumber       int64  `json:"versionNumber"`
	// Disconnected events only.
	ClientInitiatedDisconnect *bool  `json:"clientInitiatedDisconnect,omitempty"`
	DisconnectReason          string `json:"disconnectReason,omitempty"`
	Reason                    string `json:"reason,omitempty"` // clean, will, timeout, kicked
}

// presence publishes the events and counts them.
type presence struct {
	b           *Broker
	disconnects *prometheus.CounterVec
}

var (
	disconnectsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outpost_devices_disconnects_total",
		Help: "Disconnections of registered devices, by reason (clean, will, timeout, kicked).",
	}, []string{"reason"})
)

func newPresence(b *Broker) *presence {
	if b.devices != nil && b.reg != nil {
		r := b.devices
		register(b.reg, b.log, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_devices_connected",
			Help: "Registered devices with at least one connection to the embedded broker.",
		}, func() float64 { return float64(r.Online()) }))
	}
	return &presence{b: b, disconnects: register(b.reg, b.log, disconnectsVec)}
}

// connect records a device's new session and publishes its event.
func (p *presence) connect(cl *mqttd.Client, a *clientAccess) {
	a.session = xid.New().String()
	version := p.b.devices.Connected(a.device, cl.Remote, time.Now())
	p.publish(PresenceEvent{EventType: "connected"}, cl, a, version)
}

// disconnect records the end of a device's session, with its reason, and
// publishes its event.
func (p *presence) disconnect(cl *mqttd.Client, a *clientAccess, err error) {
	if a.session == "" {
		return // refused before its session began
	}
	reason := disconnectReason(cl.StopCause(), err)
	p.disconnects.WithLabelValues(reason).Inc()
	version := p.b.devices.Disconnected(a.device, cl.Remote, reason, time.Now())
	clean := reason == ReasonClean
	p.publish(PresenceEvent{EventType: "disconnected", ClientInitiatedDisconnect: &clean, DisconnectReason: awsReasons[reason], Reason: reason}, cl, a, version)
}

func (p *presence) publish(ev PresenceEvent, cl *mqttd.Client, a *clientAccess, version int64) {
	ev.ClientID, ev.PrincipalIdentifier, ev.SessionIdentifier, ev.VersionNumber = cl.ID, a.device, a.session, version
	ev.Timestamp = time.Now().UnixMilli()
	if host, _, err := net.SplitHostPort(cl.Remote); err == nil {
		ev.IPAddress = host
	}
	// b.srv and b.stopCtx are set before the server serves and never
	// change after, so a hook reads them without b.mu, which Stop holds
	// while the server disconnects every client (and calls this).
	srv := p.b.srv
	if p.b.stopCtx.Err() != nil {
		return // stopping: the registry has it, subscribers are going
	}
	b, _ := json.Marshal(ev) // strings, numbers and a bool
	if err := srv.Publish(PresenceTopic(ev.EventType, a.device), b, false, 1); err != nil {
		p.b.log.Warn("presence event not published", "device", a.device, "event", ev.EventType, "err", err)
	}
}

// disconnectReason classifies why a connection ended: the client's stop
// cause (the first reason it was stopped for), else the read error.
func disconnectReason(cause, readErr error) string {
	if cause == nil {
		cause = readErr
	}
	var code packets.Code
	var ne net.Error
	switch {
	case errors.Is(cause, packets.CodeDisconnect):
		return ReasonClean
	case errors.Is(cause, packets.CodeDisconnectWillMessage):
		return ReasonWill // MQTT 5: a DISCONNECT asking for the will
	case errors.As(cause, &code):
		return ReasonKicked
	case errors.As(cause, &ne) && ne.Timeout():
		return ReasonTimeout
	}
	return ReasonWill
}
