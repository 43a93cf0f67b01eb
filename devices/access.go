package devices

import (
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/devices/mqttd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/ratelog"
)

// SetRegistry makes the broker authenticate devices against r (username =
// device id, password = its secret) and record when they connect; call it
// before Start. Without a registry only configured users and anonymous
// clients can connect.
func (b *Broker) SetRegistry(r *Registry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.devices = r
}

// Kick disconnects the clients logged in as device id (it was disabled).
func (b *Broker) Kick(id string) { b.kick(id, false) }

// Forget disconnects the clients logged in as device id (it was removed)
// and drops its denial counter.
func (b *Broker) Forget(id string) { b.kick(id, true) }

func (b *Broker) kick(id string, forget bool) {
	srv := b.server()
	b.mu.Lock()
	h := b.access
	b.mu.Unlock()
	if srv == nil || h == nil {
		return
	}
	if forget {
		h.denied.DeleteLabelValues(id)
		b.limits.forget(id)
	}
	h.clients.Range(func(k, v any) bool {
		if a := v.(*clientAccess); a.device == id {
			if cl := k.(weak.Pointer[mqttd.Client]).Value(); cl != nil {
				_ = srv.DisconnectClient(cl, packets.ErrNotAuthorized)
			}
		}
		return true
	})
}

// clientAccess is what one connected client may do. Its grants are
// swapped when a reload changes the rules.
type clientAccess struct {
	device    string                 // registered device id; "" for a user or anonymous client
	all       bool                   // a configured user: every topic
	anonymous bool                   // never reaches a registered device's namespace
	grantID   string                 // what {id} stands for in its grants (see grantID)
	grants    atomic.Pointer[grants] // shared with the clients of the same rules
	limit     *limiter               // a device's rate and size limits; nil for others
	session   string                 // a device's session id once established (presence.go)

	subscribing atomic.Int32 // SUBSCRIBE packets being handled (flow.go)
	flowMu      sync.Mutex   // orders the updates of fullSince (flow.go)
	fullSince   atomic.Int64 // unix nanos since the client is at its in-flight window; 0: not (flow.go)
}

// rules are the access rules a reload may change, with their grants
// compiled once for all the clients they apply to.
type rules struct {
	groups        map[string][]Rule
	anonymousOnes *grants // the anonymous clients'

	mu      sync.Mutex         // guards devices
	devices map[string]*grants // by the devices' groups, quoted
}

func newRules(anonymous []Rule, groups map[string][]Rule) *rules {
	return &rules{groups: groups, anonymousOnes: compileGrants(anonymous), devices: map[string]*grants{}}
}

// grantsOf returns what a (a device or an anonymous client) may use under
// r; groups are the device's. Devices of the same groups share them.
func (r *rules) grantsOf(a *clientAccess, groups []string) *grants {
	if a.anonymous {
		return r.anonymousOnes
	}
	key := fmt.Sprintf("%q", groups)
	r.mu.Lock()
	defer r.mu.Unlock()
	g, ok := r.devices[key]
	if !ok {
		rs := [][]Rule{ownRules}
		for _, name := range groups {
			rs = append(rs, r.groups[name])
		}
		g = compileGrants(rs...)
		r.devices[key] = g
	}
	return g
}

// accessHook authenticates clients and enforces the access rules, default
// deny: configured users may use every topic; a registered device its own
// namespace, its shadow topics and its groups' rules; an anonymous client
// (loopback only, when allowed) the anonymous rules, outside the
// registered devices' namespaces. The daemon's inline
// client is not subject to them.
type accessHook struct {
	mqttd.HookBase
	b         *Broker
	anonymous bool
	users     map[string][]byte
	rules     atomic.Pointer[rules]
	devices   *Registry // nil: no device logins
	identity  string    // where a client certificate names its device (BrokerTLS.Identity)
	presence  *presence // a device's connections and disconnections (presence.go)

	// clients maps a weak.Pointer[mqttd.Client] to its *clientAccess; an
	// entry goes at OnDisconnect (when the session goes too), when the
	// session expires, or when the client is collected (a client that
	// never got its CONNACK has no OnDisconnect; one whose session was
	// taken over, none at all).
	clients sync.Map
	denied  *prometheus.CounterVec
	deniedN atomic.Uint64
	warn    ratelog.Limiter // denial warnings
}

// denyWarnEvery bounds the warnings of refused topics: one a period.
const denyWarnEvery = 10 * time.Second

var deniedVec = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "outpost_devices_acl_denied_total",
	Help: "Publishes and subscriptions the embedded broker refused by its access rules, by device (a registered device id, else unknown).",
}, []string{"device"})

func newAccessHook(b *Broker) (*accessHook, error) {
	h := &accessHook{b: b, anonymous: b.cfg.AllowAnonymous, users: make(map[string][]byte, len(b.cfg.Users)),
		devices: b.devices, identity: b.cfg.TLS.Identity, warn: ratelog.Limiter{Every: denyWarnEvery}}
	h.rules.Store(newRules(b.cfg.Anonymous, b.cfg.Groups))
	for _, u := range b.cfg.Users {
		if u.Username == "" {
			return nil, errors.New("broker user with an empty username")
		}
		pw, err := readSecret(u.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("broker user %q: %w", u.Username, err)
		}
		if len(pw) == 0 {
			return nil, fmt.Errorf("broker user %q: empty password file %s", u.Username, u.PasswordFile)
		}
		h.users[u.Username] = pw
	}
	h.denied = register(b.reg, b.log, deniedVec)
	h.presence = newPresence(b)
	b.access = h
	return h, nil
}

// OnConnectAuthenticate accepts a registered enabled device by the client
// certificate it presented on the TLS listener (see certLogin), a
// configured user with its password, a registered enabled device with its
// secret (username = device id), and a client without a username only
// when anonymous clients are allowed and it connects over loopback.
// Anything else is refused.
func (h *accessHook) OnConnectAuthenticate(cl *mqttd.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	a := &clientAccess{}
	var groups []string
	certID, hasCert := h.certDevice(cl)
	switch want, isUser := h.users[user]; {
	case hasCert:
		var ok bool
		if groups, ok = h.certLogin(certID, user, pk.Connect.Password); !ok {
			return false
		}
		a.device, a.grantID = certID, certID
	case user == "":
		if !h.anonymous || !loopbackRemote(cl.Remote) {
			return false
		}
		a.anonymous, a.grantID = true, grantID(cl.ID)
	case isUser:
		if subtle.ConstantTimeCompare(pk.Connect.Password, want) != 1 {
			return false
		}
		a.all = true
	case h.devices != nil:
		var ok bool
		if groups, ok = h.devices.Authenticate(user, pk.Connect.Password); !ok {
			return false
		}
		a.device, a.grantID = user, user
	default:
		return false
	}
	if !a.all {
		a.grants.Store(h.rules.Load().grantsOf(a, groups))
	}
	if a.device != "" {
		a.limit = h.b.limits.forDevice(a.device)
	}
	// A will is published by the broker when the client goes away, past
	// OnACLCheck: its topic must be one the client may publish to.
	if pk.Connect.WillFlag && !h.allowed(cl, a, pk.Connect.WillTopic, true) {
		return false
	}
	key := weak.Make(cl)
	h.clients.Store(key, a)
	runtime.AddCleanup(cl, func(k weak.Pointer[mqttd.Client]) { h.clients.Delete(k) }, key)
	return true
}

// OnSessionEstablished records when and from where a device connected,
// and publishes its presence.
func (h *accessHook) OnSessionEstablished(cl *mqttd.Client, _ packets.Packet) {
	if a := h.access(cl); a != nil && a.device != "" {
		h.presence.connect(cl, a)
	}
}

// OnDisconnect records when and why a device left, publishes its
// presence, and forgets the client unless the broker keeps its session
// (expire false: MQTT 3.1.1 clean session false, an MQTT 5 session
// expiry): the QoS 1/2 messages queued for the session while the client is
// away are judged by its grants, and held to its in-flight window (flow.go).
// Such a client is forgotten when its session expires, or when it is
// collected after its next connection took the session over.
func (h *accessHook) OnDisconnect(cl *mqttd.Client, err error, expire bool) {
	if a := h.access(cl); a != nil && a.device != "" {
		h.presence.disconnect(cl, a, err)
	}
	if expire {
		h.clients.Delete(weak.Make(cl))
	}
}

// OnClientExpired forgets a client whose kept session expired.
func (h *accessHook) OnClientExpired(cl *mqttd.Client) {
	h.clients.Delete(weak.Make(cl))
}

func (h *accessHook) access(cl *mqttd.Client) *clientAccess {
	if v, ok := h.clients.Load(weak.Make(cl)); ok {
		return v.(*clientAccess)
	}
	return nil
}

// OnACLCheck decides a publish (write), a subscription or a delivery to a
// subscriber (topic is then a topic name). A refusal is counted and
// logged at a bounded rate.
func (h *accessHook) OnACLCheck(cl *mqttd.Client, topic string, write bool) bool {
	if cl.Inline {
		return true
	}
	a := h.access(cl)
	if !write && a != nil && h.b.flow.refuse(cl, a, topic) {
		return false // a device at its in-flight window: counted as limited, not denied
	}
	return h.allowed(cl, a, topic, write)
}

// allowed decides one publish (write) or subscription for a client whose
// access is a (nil: unknown); a refusal is counted and logged at a bounded
// rate.
func (h *accessHook) allowed(cl *mqttd.Client, a *clientAccess, topic string, write bool) bool {
	switch {
	case a == nil:
	case a.all:
		return true
	case a.anonymous && h.reserved(topic):
	case write && a.grants.Load().allowPublish(topic, a.grantID), !write && a.grants.Load().allowSubscribe(topic, a.grantID):
		return true
	}
	label, device := "unknown", ""
	if a != nil && a.device != "" {
		label, device = a.device, a.device
	}
	h.denied.WithLabelValues(label).Inc()
	n := h.deniedN.Add(1)
	action := actionSubscribe
	if write {
		action = actionPublish
	}
	now := time.Now()
	h.b.violations.add(Violation{Time: now, Device: device, Client: cl.ID, Topic: topic, Action: action, Reason: reasonACL})
	if _, ok := h.warn.Allow(now); ok {
		what := "subscribe or receive"
		if write {
			what = "publish"
		}
		h.b.log.Warn("access rules refused a client", "client", cl.ID, "device", label, "action", what, "topic", topic, "denied_total", n)
	}
	return false
}

// reserved reports whether topic is in a registered device's namespace
// (devices/{id}/...), which anonymous clients never reach whatever their
// rules: they neither publish there nor receive from there. A subscription
// with a wildcard at the device level is accepted, and the messages of
// registered devices are then held back one by one as they are delivered.
func (h *accessHook) reserved(topic string) bool {
	if h.devices == nil {
		return false
	}
	rest, ok := strings.CutPrefix(shareless(topic), "devices/")
	if !ok {
		return false
	}
	id, _, _ := strings.Cut(rest, "/")
	return h.devices.Known(id)
}

// certDevice returns the device id named by the client certificate cl
// presented on the TLS or wss:// listener ("" when the certificate names no valid
// device id), and whether it presented one. The handshake verified the
// certificate against mqtt.broker.tls.client_ca_file.
func (h *accessHook) certDevice(cl *mqttd.Client) (string, bool) {
	tc, ok := cl.Conn.(interface{ ConnectionState() tls.ConnectionState }) // TLS, or WebSocket over TLS
	if !ok {
		return "", false
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", false
	}
	return certIdentity(certs[0], h.identity), true
}

// certLogin logs in the device id a client certificate names: it must be
// registered and enabled; a username, if given, must be that id; and a
// password, if given, must be the device's secret (the certificate then
// goes with the secret instead of replacing it).
func (h *accessHook) certLogin(id, user string, password []byte) ([]string, bool) {
	if id == "" || h.devices == nil || (user != "" && user != id) {
		return nil, false
	}
	if len(password) > 0 {
		return h.devices.Authenticate(id, password)
	}
	return h.devices.Enabled(id)
}

// reload swaps in new rules and gives every connected client its grants
// under them at once: a grant removed no longer lets a message through,
// not even one for a subscription made before.
func (h *accessHook) reload(r *rules) {
	h.rules.Store(r)
	h.clients.Range(func(_, v any) bool {
		a := v.(*clientAccess)
		switch {
		case a.all:
		case a.anonymous:
			a.grants.Store(r.grantsOf(a, nil))
		default:
			groups, _ := h.devices.Enabled(a.device) // disabled or removed: it was kicked
			a.grants.Store(r.grantsOf(a, groups))
		}
		return true
	})
}

// loopbackRemote reports whether a client's remote address is a loopback
// address.
func loopbackRemote(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var _ mqttd.Hook = (*accessHook)(nil)
