package devices

import (
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/devices/topic"
	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/loopback"
)

// MQTTConfig configures the broker the devices talk to and the daemon's
// client of it (config key mqtt).
type MQTTConfig struct {
	// Broker is the embedded broker; it runs unless URL names an external one.
	Broker BrokerConfig `yaml:"broker"`
	// URL of an external broker (tcp://host:1883 or ssl://host:8883). Empty: use the embedded broker.
	URL            string           `yaml:"url"`
	ClientID       string           `yaml:"client_id"` // default: outpost-<node id>
	Username       string           `yaml:"username"`
	PasswordFile   string           `yaml:"password_file"`
	TLS            confval.TLS      `yaml:"tls"`
	KeepAlive      confval.Duration `yaml:"keepalive"`
	ConnectTimeout confval.Duration `yaml:"connect_timeout"`
	MaxReconnect   confval.Duration `yaml:"max_reconnect_interval"`
	PublishTimeout confval.Duration `yaml:"publish_timeout"`
	// MaxMessageSize is the largest MQTT packet the external broker
	// accepts (its limit: set it to the broker's). With the embedded broker
	// it is not used: Broker.MaxMessageSize is the limit.
	MaxMessageSize confval.ByteSize `yaml:"max_message_size"`
}

// External reports whether the daemon uses an external broker.
func (m MQTTConfig) External() bool { return m.URL != "" }

// MessageLimit is the largest MQTT packet the daemon's client may send:
// the embedded broker's max_message_size, or the external broker's limit
// as configured. The client refuses a larger message before it is sent
// (the broker would drop the connection), and a task's publish is held to
// it (docs/abi.md).
func (m MQTTConfig) MessageLimit() int {
	if m.External() {
		return int(m.MaxMessageSize)
	}
	return int(m.Broker.MaxMessageSize)
}

// BrokerConfig configures the embedded MQTT broker (MQTT 3.1.1 and 5).
type BrokerConfig struct {
	Listen         string `yaml:"listen"`
	AllowAnonymous bool   `yaml:"allow_anonymous"`
	// Users that may connect with a password (read from PasswordFile).
	Users []BrokerUser `yaml:"users"`
	// Anonymous are the access rules of anonymous clients ({id}: the
	// client id). The default grants every topic but those starting with
	// $; a registered device's namespace is never theirs.
	Anonymous []Rule `yaml:"anonymous"`
	// Groups name the rules that devices in a group get besides their own
	// namespace ({id}: the device id).
	Groups map[string][]Rule `yaml:"groups"`
	// MaxClientWritesPending bounds a client's queued outbound packets; past it the broker drops (counted).
	MaxClientWritesPending int `yaml:"max_client_writes_pending"`
	// MaxInflight bounds unacknowledged QoS 1/2 messages per client; past it the broker drops (counted).
	MaxInflight int `yaml:"max_inflight"`
	// BackpressureWait is the longest a publisher is held for a subscriber
	// at its in-flight window (flow.go); 0: never held.
	BackpressureWait confval.Duration `yaml:"backpressure_wait"`
	MaxMessageSize   confval.ByteSize `yaml:"max_message_size"`
	// SessionExpiry is how long the session of a client that asked to keep
	// it (MQTT 3.1.1 clean session false; MQTT 5 session expiry, at most
	// this) is kept after it disconnects: its subscriptions and the QoS 1/2
	// messages queued for it. Then the session and its memory are freed.
	SessionExpiry confval.Duration `yaml:"session_expiry"`
	// TLS is a second listener, MQTT over TLS, with device certificates.
	TLS BrokerTLS `yaml:"tls"`
	// WebSocket is a listener for MQTT over WebSocket, plain or TLS.
	WebSocket BrokerWebSocket `yaml:"websocket"`
	// Limits hold each registered device to a message rate and size.
	Limits DeviceLimits `yaml:"limits"`
}

// BrokerUser is one password credential of the embedded broker.
type BrokerUser struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// MQTTDefaults returns the mqtt settings used for every key a file leaves
// out: the embedded broker on loopback, anonymous clients allowed there.
func MQTTDefaults() MQTTConfig {
	return MQTTConfig{
		Broker: BrokerConfig{
			Listen:                 "127.0.0.1:1883",
			AllowAnonymous:         true,
			Anonymous:              []Rule{{Publish: []string{"#"}, Subscribe: []string{"#"}}},
			Groups:                 map[string][]Rule{},
			MaxClientWritesPending: 64,
			MaxInflight:            1024,
			BackpressureWait:       confval.Duration(2 * time.Second),
			MaxMessageSize:         256 << 10,
			SessionExpiry:          confval.Duration(time.Hour),
			TLS:                    BrokerTLS{Identity: IdentityCN},
			Limits:                 DeviceLimits{MessagesPerSecond: 100, Burst: 200, MaxMessageSize: 128 << 10, MaxInflight: 32},
		},
		KeepAlive:      confval.Duration(15 * time.Second),
		ConnectTimeout: confval.Duration(10 * time.Second),
		MaxReconnect:   confval.Duration(30 * time.Second),
		PublishTimeout: confval.Duration(10 * time.Second),
		MaxMessageSize: 256 << 10,
	}
}

// Resolve fills the client id from the node id and, with the embedded
// broker, the client's message limit from the broker's; it makes file
// names absolute against dir, the config file's directory.
func (m *MQTTConfig) Resolve(dir, nodeID string) {
	if m.ClientID == "" {
		m.ClientID = "outpost-" + nodeID
	}
	if !m.External() && m.MaxMessageSize == MQTTDefaults().MaxMessageSize {
		m.MaxMessageSize = m.Broker.MaxMessageSize // the client's limit is the embedded broker's
	}
	if l := &m.Broker.Limits; l.MaxMessageSize == MQTTDefaults().Broker.Limits.MaxMessageSize {
		l.MaxMessageSize = min(l.MaxMessageSize, m.Broker.MaxMessageSize) // a device's default fits the broker
	}
	confval.Rel(dir, &m.PasswordFile)
	m.TLS.Resolve(dir)
	for i := range m.Broker.Users {
		confval.Rel(dir, &m.Broker.Users[i].PasswordFile)
	}
	m.Broker.TLS.Resolve(dir)
}

// Validate reports every problem of the mqtt settings.
func (m MQTTConfig) Validate(c *confval.Checker) {
	if m.External() {
		u, err := url.Parse(m.URL)
		switch {
		case err != nil:
			c.Errorf("url", "%v", err)
		case u.Scheme != "tcp" && u.Scheme != "ssl" && u.Scheme != "mqtt" && u.Scheme != "mqtts":
			c.Errorf("url", "scheme %q is not supported (tcp://, ssl://)", u.Scheme)
		case u.Port() == "":
			c.Errorf("url", "must include a port, such as tcp://broker:1883")
		}
		if m.MaxMessageSize < 1<<10 || m.MaxMessageSize > 256<<20 {
			c.Errorf("max_message_size", "must be between 1KiB and 256MiB")
		}
	} else {
		if c.Set("max_message_size") && m.MaxMessageSize != m.Broker.MaxMessageSize {
			c.Errorf("max_message_size", "is the limit of an external broker (mqtt.url); the embedded broker's is mqtt.broker.max_message_size")
		}
		m.Broker.Validate(c.At("broker"))
	}
	c.SecretFile("password_file", m.PasswordFile, false)
	m.TLS.Validate(c.At("tls"))
	for _, f := range []struct {
		key string
		v   confval.Duration
	}{{"keepalive", m.KeepAlive}, {"connect_timeout", m.ConnectTimeout}, {"max_reconnect_interval", m.MaxReconnect}, {"publish_timeout", m.PublishTimeout}} {
		if f.v <= 0 {
			c.Errorf(f.key, "must be positive")
		}
	}
}

// Validate reports every problem of the embedded broker's settings.
func (b BrokerConfig) Validate(c *confval.Checker) {
	c.HostPort("listen", b.Listen)
	if b.AllowAnonymous && !loopback.HostPort(b.Listen) {
		k := "allow_anonymous"
		if !c.Set(k) {
			k = "listen"
		}
		c.Errorf(k, "anonymous clients are only allowed on a loopback listener; add users and set allow_anonymous: false, or listen on 127.0.0.1")
	}
	seen := map[string]bool{}
	for i, u := range b.Users {
		uc := c.Index("users", i)
		if u.Username == "" {
			uc.Errorf("username", "must not be empty")
		} else if seen[u.Username] {
			uc.Errorf("username", "duplicate user %q", u.Username)
		}
		seen[u.Username] = true
		uc.SecretFile("password_file", u.PasswordFile, true)
	}
	checkRules := func(c *confval.Checker, key string, rules []Rule) {
		for i, r := range rules {
			rc := c.Index(key, i)
			for key, fs := range map[string][]string{"publish": r.Publish, "subscribe": r.Subscribe} {
				for j, f := range fs {
					if err := topic.CheckFilter(strings.ReplaceAll(f, "{id}", "id")); err != nil {
						rc.Index(key, j).Errorf("", "%v", err)
					}
				}
			}
		}
	}
	checkRules(c, "anonymous", b.Anonymous)
	for name, rules := range b.Groups {
		if !ValidDeviceID(name) {
			c.At("groups").Errorf(name, "a group name is letters, digits, '.', '_' and '-'")
		}
		checkRules(c.At("groups"), name, rules)
	}
	if b.MaxClientWritesPending < 1 {
		c.Errorf("max_client_writes_pending", "must be at least 1")
	}
	if b.MaxInflight < 1 || b.MaxInflight > 65535 {
		c.Errorf("max_inflight", "must be between 1 and 65535")
	}
	if b.MaxMessageSize < 1<<10 || b.MaxMessageSize > 256<<20 {
		c.Errorf("max_message_size", "must be between 1KiB and 256MiB")
	}
	if b.SessionExpiry < 0 || b.SessionExpiry > confval.Duration(math.MaxUint32*time.Second) {
		c.Errorf("session_expiry", "must be between 0s and %v", time.Duration(math.MaxUint32*time.Second))
	}
	b.TLS.Validate(c.At("tls"), b.WebSocket.TLS)
	b.WebSocket.Validate(c.At("websocket"))
	if b.BackpressureWait < 0 || b.BackpressureWait > confval.Duration(time.Minute) {
		c.Errorf("backpressure_wait", "must be between 0s and 1m")
	}
	b.Limits.Validate(c.At("limits"), b.MaxMessageSize, b.MaxInflight)
}
