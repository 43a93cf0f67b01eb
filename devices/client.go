package devices

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/secretfile"
)

// Message is one MQTT message received by the daemon's client.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
	// Ack acknowledges a QoS 1 or 2 message to the broker. It is set only
	// when the client was made with SetManualAck(true); then it must be
	// called once the message is safe (from any goroutine, at most once
	// counts), or the broker keeps it in flight. Nil otherwise: the
	// client acknowledges when the handler returns.
	Ack func()
}

// Handler receives every message of the client's subscriptions. It is called
// from paho's goroutine, one message at a time, and MUST NOT block: blocking
// stalls acknowledgements and keepalives (hand the message off to a bounded
// queue instead).
type Handler func(Message)

// Subscription is one topic filter (+ and # wildcards) and its QoS.
type Subscription struct {
	Filter string
	QoS    byte
}

// Client is the daemon's MQTT client (paho, MQTT 3.1.1) of the broker in use:
// the embedded one over loopback or an external one. It reconnects by itself
// and subscribes again on every connection.
type Client struct {
	cfg MQTTConfig
	url string
	h   Handler
	log *slog.Logger
	m   clientMetrics

	store *sessionStore // made by options, at Start

	manualAck bool // set by SetManualAck

	// mu guards the fields below. It is held while subscribe/unsubscribe
	// requests are queued (never while waiting for them) so that the
	// subscriptions sent on connect and those sent by SetSubscriptions are
	// queued in the order they were decided.
	mu        sync.Mutex
	subs      []Subscription // the wanted subscriptions, in order
	pc        paho.Client
	started   bool
	stopped   bool
	connected bool       // at least one connection was made (reconnects count after it)
	connTok   paho.Token // the first Connect; done once paho's connect loop ended

	// live is pc for the paths that must not wait for mu (Publish,
	// Connected) while a subscribe request is being queued.
	live atomic.Value // paho.Client

	wg sync.WaitGroup // goroutines waiting on subscribe tokens
}

// paho returns the paho client, nil before Start.
func (c *Client) paho() paho.Client {
	pc, _ := c.live.Load().(paho.Client)
	return pc
}

type clientMetrics struct {
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	received   prometheus.Counter
	published  *prometheus.CounterVec
	abandoned  prometheus.Counter
}

func newClientMetrics(reg prometheus.Registerer, log *slog.Logger) clientMetrics {
	return clientMetrics{
		connected: register(reg, log, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_mqtt_connected", Help: "1 while the daemon's MQTT client is connected to the broker.",
		})),
		reconnects: register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_mqtt_reconnects_total", Help: "Connections of the daemon's MQTT client made again after a connection was lost.",
		})),
		received: register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_mqtt_messages_received_total", Help: "Messages received by the daemon's MQTT client.",
		})),
		published: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_mqtt_messages_published_total", Help: "Messages published by the daemon's MQTT client, by result (ok, error).",
		}, []string{"result"})),
		abandoned: register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_mqtt_publish_abandoned_total",
			Help: "QoS 1 or 2 messages the daemon's client stopped resending because the connection was lost each time they were in flight.",
		})),
	}
}

// NewClient returns a client of the broker at brokerURL (tcp://, ssl://,
// mqtt:// or mqtts://). It has no side effects until Start, apart from
// registering its metrics on reg (which may be nil; a metric already
// registered there is reused).
func NewClient(cfg MQTTConfig, brokerURL string, h Handler, log *slog.Logger, reg prometheus.Registerer) *Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if h == nil {
		h = func(Message) {}
	}
	log = log.With("component", "mqtt_client", "client_id", cfg.ClientID)
	return &Client{cfg: cfg, url: brokerURL, h: h, log: log, m: newClientMetrics(reg, log)}
}

// SetManualAck makes the handler acknowledge QoS 1 and 2 messages itself
// (Message.Ack) instead of the client doing it when the handler returns;
// call it before Start. The session is then persistent (clean session off,
// under the fixed client id), so a broker keeps the messages that were not
// acknowledged when the daemon stopped, and those published while it was
// away, and delivers them when it connects again.
func (c *Client) SetManualAck(on bool) { c.manualAck = on }

// SetSubscriptions replaces the wanted subscriptions. They are made on every
// connection; while connected, removed filters are unsubscribed and new (or
// changed QoS) filters subscribed at once, without waiting for the broker's
// acknowledgements (failures are logged).
func (c *Client) SetSubscriptions(subs []Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.subs
	c.subs = slices.Clone(subs)
	if c.pc == nil || !c.pc.IsConnectionOpen() {
		return
	}
	var removed []string
	for _, o := range old {
		if !slices.ContainsFunc(subs, func(s Subscription) bool { return s.Filter == o.Filter }) {
			removed = append(removed, o.Filter)
		}
	}
	added := make(map[string]byte)
	for _, s := range subs {
		if !slices.Contains(old, s) {
			added[s.Filter] = s.QoS
		}
	}
	if len(removed) > 0 {
		c.track("unsubscribe", strings.Join(removed, ","), c.pc.Unsubscribe(removed...))
	}
	if len(added) > 0 {
		c.track("subscribe", filters(added), c.pc.SubscribeMultiple(added, nil))
	}
}

// track waits for tok in a goroutine owned by c (waited for at Stop) and logs
// a failure. Callers must not wait on tokens from paho's goroutines.
func (c *Client) track(op, what string, tok paho.Token) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		timeout := max(c.cfg.PublishTimeout.Std(), time.Second)
		if !tok.WaitTimeout(timeout) {
			c.log.Warn("mqtt "+op+" not acknowledged", "topic", what, "timeout", timeout)
			return
		}
		if err := tok.Error(); err != nil {
			c.log.Warn("mqtt "+op+" failed", "topic", what, "error", err)
			return
		}
		if st, ok := tok.(*paho.SubscribeToken); ok {
			for f, code := range st.Result() {
				if code == 0x80 {
					c.log.Warn("mqtt subscribe refused by broker", "topic", f)
				}
			}
		}
		c.log.Debug("mqtt "+op+" done", "topic", what)
	}()
}

func filters(m map[string]byte) string {
	fs := make([]string, 0, len(m))
	for f := range m {
		fs = append(fs, f)
	}
	slices.Sort(fs)
	return strings.Join(fs, ",")
}

// Start connects to the broker. It waits up to cfg.ConnectTimeout (or ctx)
// for the first connection; if there is none by then it logs a warning,
// returns nil and keeps trying in the background. It returns an error only
// for bad settings: the URL, the TLS files or the password file.
func (c *Client) Start(ctx context.Context) error {
	opts, err := c.options()
	if err != nil {
		return fmt.Errorf("start mqtt client for %s: %w", c.url, err)
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return fmt.Errorf("start mqtt client: %w", ErrStopped)
	}
	if c.started {
		c.mu.Unlock()
		return fmt.Errorf("start mqtt client: %w", ErrAlreadyStarted)
	}
	c.started = true
	c.pc = paho.NewClient(opts)
	pc := c.pc
	c.live.Store(pc)
	c.mu.Unlock()

	tok := pc.Connect()
	c.mu.Lock()
	c.connTok = tok
	c.mu.Unlock()
	timeout := c.cfg.ConnectTimeout.Std()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			c.log.Warn("mqtt connect failed, retrying in the background", "broker", c.url, "error", err)
		}
	case <-t.C:
		c.log.Warn("mqtt broker not reachable yet, retrying in the background", "broker", c.url, "timeout", timeout)
	case <-ctx.Done():
		c.log.Warn("mqtt connect interrupted, retrying in the background", "broker", c.url, "error", ctx.Err())
	}
	return nil
}

// options builds the paho options; it reads the TLS and password files.
func (c *Client) options() (*paho.ClientOptions, error) {
	u, err := brokerURL(c.url)
	if err != nil {
		return nil, err
	}
	o := paho.NewClientOptions()
	o.AddBroker(u.String())
	o.SetClientID(c.cfg.ClientID)
	// Clean session, unless the handler acknowledges messages itself: then
	// a persistent session keeps what it has not acknowledged across a
	// restart. Either way subscriptions are made again on every connect.
	o.SetCleanSession(!c.manualAck)
	o.SetAutoAckDisabled(c.manualAck)
	o.SetOrderMatters(true) // handlers do not block; false would start a goroutine per message
	c.store = newSessionStore(c.log, c.m.abandoned)
	o.SetStore(c.store)
	if d := c.cfg.KeepAlive.Std(); d > 0 {
		o.SetKeepAlive(d)
		o.SetPingTimeout(min(d, 10*time.Second))
	}
	if d := c.cfg.ConnectTimeout.Std(); d > 0 {
		o.SetConnectTimeout(d)
	}
	if d := c.cfg.MaxReconnect.Std(); d > 0 {
		o.SetMaxReconnectInterval(d)
		o.SetConnectRetryInterval(min(d, time.Second))
	} else {
		o.SetConnectRetryInterval(time.Second)
	}
	if d := c.cfg.PublishTimeout.Std(); d > 0 {
		o.SetWriteTimeout(d)
	}
	o.SetConnectRetry(true)
	o.SetAutoReconnect(true)
	if c.cfg.Username != "" {
		o.SetUsername(c.cfg.Username)
	}
	if c.cfg.PasswordFile != "" {
		pw, err := readSecret(c.cfg.PasswordFile)
		if err != nil {
			return nil, err
		}
		o.SetPassword(string(pw))
	}
	if u.Scheme == "ssl" {
		tc, err := tlsConfig(c.cfg.TLS)
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(tc)
	}
	o.SetDefaultPublishHandler(c.onMessage)
	o.SetOnConnectHandler(c.onConnect)
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		c.m.connected.Set(0)
		c.store.connectionLost()
		c.log.Warn("mqtt connection lost", "broker", c.url, "error", err)
	})
	o.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
		c.log.Debug("mqtt reconnecting", "broker", c.url)
	})
	return o, nil
}

// brokerURL parses a broker URL and maps mqtt:// to tcp:// and mqtts:// to ssl://.
func brokerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("parse broker url: %w", err)
	}
	switch u.Scheme {
	case "tcp", "ssl":
	case "mqtt":
		u.Scheme = "tcp"
	case "mqtts", "tls":
		u.Scheme = "ssl"
	default:
		return nil, fmt.Errorf("broker url %q: scheme must be tcp, ssl, mqtt or mqtts", s)
	}
	if u.Host == "" || u.Port() == "" {
		return nil, fmt.Errorf("broker url %q: host and port required", s)
	}
	return u, nil
}

func tlsConfig(t confval.TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // only when configured
	if t.CAFile != "" {
		pool, err := secretfile.CertPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca file: %w", err)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := secretfile.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// onConnect (paho's goroutine) subscribes to the wanted filters; with a clean
// session this is what makes a reconnect resubscribe.
func (c *Client) onConnect(pc paho.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connected {
		c.m.reconnects.Inc()
	}
	c.connected = true
	c.m.connected.Set(1)
	c.log.Info("mqtt connected", "broker", c.url, "subscriptions", len(c.subs))
	if len(c.subs) == 0 {
		return
	}
	m := make(map[string]byte, len(c.subs))
	for _, s := range c.subs {
		m[s.Filter] = s.QoS
	}
	c.track("subscribe", filters(m), pc.SubscribeMultiple(m, nil))
}

func (c *Client) onMessage(_ paho.Client, m paho.Message) {
	c.m.received.Inc()
	msg := Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Retained: m.Retained()}
	if c.manualAck {
		msg.Ack = m.Ack
	}
	c.h(msg)
}

// Publish sends a message. QoS 0 is not waited for; QoS 1 and 2 wait for the
// broker's acknowledgement up to cfg.PublishTimeout or ctx. It fails at once
// while disconnected, and with ErrTooLarge, sending nothing, for a message
// over the broker's limit (cfg.MessageLimit; 0: none).
func (c *Client) Publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	return c.m.publish(c.cfg.MessageLimit(), topic, qos, payload, func() error { return c.publish(ctx, topic, qos, payload) })
}

// publish checks a message's size against limit (0: none), failing with
// ErrTooLarge without calling send, then sends it and counts the result.
func (m clientMetrics) publish(limit int, topic string, qos byte, payload []byte, send func() error) error {
	var err error
	if n := PacketSize(topic, qos, len(payload)); limit > 0 && n > limit {
		err = fmt.Errorf("%w: a packet of %d bytes (payload %d) exceeds the limit of %d", ErrTooLarge, n, len(payload), limit)
	} else {
		err = send()
	}
	if err != nil {
		m.published.WithLabelValues("error").Inc()
		return fmt.Errorf("mqtt publish to %s: %w", topic, err)
	}
	m.published.WithLabelValues("ok").Inc()
	return nil
}

func (c *Client) publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	pc := c.paho()
	if pc == nil || !pc.IsConnectionOpen() {
		return ErrNotConnected
	}
	tok := pc.Publish(topic, qos, false, payload)
	if qos == 0 {
		select {
		case <-tok.Done():
			return tok.Error()
		default:
			return nil
		}
	}
	timeout := c.cfg.PublishTimeout.Std()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return fmt.Errorf("no acknowledgement after %s: %w", timeout, context.DeadlineExceeded)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Connected reports whether the client has a connection to the broker now.
func (c *Client) Connected() bool {
	pc := c.paho()
	return pc != nil && pc.IsConnectionOpen()
}

// Stop disconnects (waiting briefly, bounded by ctx, for queued work) and
// stops reconnecting. It is safe before Start, after a failed Start and twice.
func (c *Client) Stop(ctx context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	pc, connTok := c.pc, c.connTok
	c.mu.Unlock()
	if pc != nil {
		quiesce := 250 * time.Millisecond
		if dl, ok := ctx.Deadline(); ok {
			quiesce = min(quiesce, max(time.Until(dl), 0))
		}
		if !pc.IsConnectionOpen() {
			// Nothing to flush; a quiesce would only leave paho's
			// disconnect goroutine waiting after Stop returned.
			quiesce = 0
		}
		pc.Disconnect(uint(quiesce.Milliseconds()))
		// Disconnect returns after quiesce even when paho is still in its
		// connect-retry loop; wait (up to ctx) for that loop to end so
		// nothing is left running after Stop.
		if connTok != nil {
			select {
			case <-connTok.Done():
			case <-ctx.Done():
				return fmt.Errorf("stop mqtt client: %w", ctx.Err())
			}
		}
	}
	c.m.connected.Set(0)
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("stop mqtt client: %w", ctx.Err())
	}
	c.log.Info("mqtt client stopped", "broker", c.url)
	return nil
}
