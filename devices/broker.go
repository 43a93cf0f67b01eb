package devices

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/devices/mqttd"
	"github.com/prometheus/client_golang/prometheus"
)

// Broker is the embedded MQTT broker (package mqttd) listening on one TCP
// address. The zero value is not usable; build it with NewBroker.
type Broker struct {
	cfg BrokerConfig
	log *slog.Logger
	reg prometheus.Registerer

	mu        sync.Mutex // guards the fields below
	srv       *mqttd.Server
	listeners []*tcpListener // bound by Start
	addr      string
	started   bool
	stopped   bool
	coll      *brokerCollector
	durable   DurablePublish
	devices   *Registry   // device logins (SetRegistry); nil: none
	access    *accessHook // set by Start
	limits    *limits     // set by Start
	flow      *flow       // set by Start
	sweep     *sweeper    // set by Start
	tlsAddr   string      // the TLS listener's address; "" without one
	wsAddr    string      // the WebSocket listener's address; "" without one
	tlsCur    atomic.Pointer[tlsMaterial]
	stopCtx   context.Context    // canceled at Stop: ends a DurablePublish waiting
	cancel    context.CancelFunc // cancels stopCtx

	violations violations // the last refusals of the access rules and limits

	// drop counters, fed by the hook and read by the collector
	droppedPending atomic.Uint64
	lastDropLog    atomic.Int64 // unix nanos of the last drop warning
}

// NewBroker returns a broker for cfg. It has no side effects: nothing is read,
// opened or registered until Start. reg may be nil.
func NewBroker(cfg BrokerConfig, log *slog.Logger, reg prometheus.Registerer) *Broker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Broker{cfg: cfg, log: log.With("component", "broker"), reg: reg}
}

// Start reads the user password files and the TLS material, listens on
// cfg.Listen (port 0 picks a free port, see Addr), on cfg.TLS.Listen
// (TLSAddr) and on cfg.WebSocket.Listen (WSAddr), and serves clients in
// the background.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return fmt.Errorf("start broker: %w", ErrStopped)
	}
	if b.started {
		return fmt.Errorf("start broker: %w", ErrAlreadyStarted)
	}
	b.started = true

	b.limits = newLimits(b.cfg.Limits, b.reg, b.log)
	auth, err := newAccessHook(b)
	if err != nil {
		return err
	}

	opts := mqttd.Options{
		MaxPending:       b.cfg.MaxClientWritesPending,
		MaxSessionExpiry: uint32(min(time.Duration(b.cfg.SessionExpiry)/time.Second, math.MaxUint32)),
	}
	if b.cfg.MaxInflight > 0 {
		opts.MaxInflight = uint16(min(b.cfg.MaxInflight, math.MaxUint16))
	}
	if b.cfg.MaxMessageSize > 0 {
		opts.MaxPacketSize = uint32(min(uint64(b.cfg.MaxMessageSize), math.MaxUint32))
	}
	srv := mqttd.New(opts)
	b.srv = srv
	b.flow = newFlow(b, srv)
	// Before the access hook: it forgets a client at OnDisconnect.
	srv.AddHook(&flowHook{f: b.flow})
	srv.AddHook(auth)
	srv.AddHook(&dropHook{b: b})
	b.sweep = &sweeper{}
	srv.AddHook(b.sweep)
	b.stopCtx, b.cancel = context.WithCancel(context.Background())
	// Limits come before the durable hook: a refused message is not journaled.
	srv.AddHook(&limitsHook{b: b})
	if b.durable != nil {
		srv.AddHook(&durableHook{b: b, srv: srv, f: b.durable, ctx: b.stopCtx})
	}
	tcp := newTCPListener("tcp", b.cfg.Listen, nil, b.log)
	if err := b.listen(tcp); err != nil {
		return fmt.Errorf("listen on %s: %w", b.cfg.Listen, err)
	}
	b.addr = tcp.Address()
	if b.cfg.TLS.Enabled() || b.cfg.WebSocket.TLS {
		m, err := loadTLS(b.cfg.TLS)
		if err != nil {
			b.closeListeners()
			return err
		}
		b.tlsCur.Store(m)
	}
	if b.cfg.TLS.Enabled() {
		ln := newTCPListener("tls", b.cfg.TLS.Listen, serverTLSConfig(&b.tlsCur), b.log)
		if err := b.listen(ln); err != nil {
			b.closeListeners()
			return fmt.Errorf("listen with tls on %s: %w", b.cfg.TLS.Listen, err)
		}
		b.tlsAddr = ln.Address()
	}
	if ws := b.cfg.WebSocket; ws.Enabled() {
		var tcfg *tls.Config
		if ws.TLS {
			tcfg = serverTLSConfig(&b.tlsCur)
		}
		ln := newTCPListener("ws", ws.Listen, tcfg, b.log)
		ln.ws = newWSUpgrader(ws)
		if err := b.listen(ln); err != nil {
			b.closeListeners()
			return fmt.Errorf("listen for websockets on %s: %w", ws.Listen, err)
		}
		b.wsAddr = ln.Address()
	}
	for _, ln := range b.listeners {
		go ln.Serve(srv.Establish)
	}
	if b.reg != nil {
		// The collector reads this server; it is unregistered at Stop so a
		// broker rebuilt on the same registry (reload) can register its own.
		coll := newBrokerCollector(srv, &b.droppedPending)
		if err := b.reg.Register(coll); err != nil {
			b.log.Warn("register broker metrics", "error", err)
		} else {
			b.coll = coll
		}
	}
	attrs := []any{"address", b.addr}
	if b.tlsAddr != "" {
		attrs = append(attrs, "tls_address", b.tlsAddr)
	}
	if b.wsAddr != "" {
		attrs = append(attrs, "websocket_address", b.wsAddr, "websocket_tls", b.cfg.WebSocket.TLS)
	}
	b.log.Info("broker started", append(attrs, "allow_anonymous", b.cfg.AllowAnonymous, "users", len(b.cfg.Users),
		"max_client_writes_pending", b.cfg.MaxClientWritesPending, "max_inflight", opts.MaxInflight)...)
	return nil
}

// listen binds ln and keeps it for Start and Stop.
func (b *Broker) listen(ln *tcpListener) error {
	if err := ln.Init(); err != nil {
		return err
	}
	b.listeners = append(b.listeners, ln)
	return nil
}

// closeListeners closes the listeners bound (a failed Start, or Stop).
func (b *Broker) closeListeners() {
	for _, ln := range b.listeners {
		ln.Close()
	}
}

// server returns the running server: nil before Start, or after Stop.
func (b *Broker) server() *mqttd.Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil
	}
	return b.srv
}

// Addr returns the address the broker listens on after Start ("" before).
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// TLSAddr returns the address of the TLS listener after Start ("" before,
// or without one).
func (b *Broker) TLSAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tlsAddr
}

// WSAddr returns the address of the WebSocket listener after Start (""
// before, or without one).
func (b *Broker) WSAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.wsAddr
}

// Stop disconnects every client and closes the listener. It waits for the
// client goroutines up to ctx. It is safe after a failed Start and twice.
func (b *Broker) Stop(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil
	}
	b.stopped = true
	if b.cancel != nil {
		b.cancel()
	}
	if b.sweep != nil {
		b.sweep.stop()
	}
	if b.coll != nil {
		b.reg.Unregister(b.coll)
	}
	if b.srv == nil {
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.srv.Close()      // disconnects the clients
		b.closeListeners() // closes what connections are left, waits for their goroutines
	}()
	select {
	case <-done:
		b.log.Info("broker stopped", "address", b.addr)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop broker on %s: %w", b.addr, ctx.Err())
	}
}

// DurablePublish takes a QoS 1 or 2 PUBLISH a client sent to the embedded
// broker before the broker acknowledges it (PUBACK, or PUBREC for QoS 2).
// It returns handled=false when the message is none of its business (done
// is then never called). Otherwise it starts making the message safe
// (journaling it) and calls done exactly once, from any goroutine, when the
// message is safe (nil) or cannot be made safe (an error). An error, from
// the call or through done, means the message is not acknowledged and not
// delivered to any subscriber, and the client is disconnected, so that it
// sends the message again on its next connection (MQTT 3.1.1 and 5 clients
// resend unacknowledged PUBLISH packets when they reconnect).
//
// It runs on the reading goroutine of the publisher's connection, inside
// the server's OnPublish hook, and may block there (for
// example while the journal opens): that client's next packets are not
// read meanwhile (other clients go on). ctx ends when the broker stops.
// payload must not be kept.
type DurablePublish func(ctx context.Context, topic string, payload []byte, qos byte, done func(error)) (handled bool, err error)

// SetDurablePublish installs f; call it before Start. See DurablePublish.
func (b *Broker) SetDurablePublish(f DurablePublish) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.durable = f
}

// durableWindow bounds the QoS 1 messages of one client that wait for
// their DurablePublish: past it the client's connection is not read until
// one is done.
const durableWindow = 64

// durableHook calls the broker's DurablePublish from the server's
// OnPublish, which runs before the PUBACK is written: an OnPublish error
// packets.ErrRejectPacket drops the message without an acknowledgement and
// without delivering it.
//
// A QoS 1 message does not hold its connection while it is made safe, so a
// client's messages in flight share one journal commit: the hook rejects
// it for now and puts it in the client's ackQueue; once it is safe, and
// every message the client sent before it was handled, the queue hands it
// back to the server (mqttd.Server.InjectPacket, past the hooks), which
// acknowledges it and delivers it. The client's QoS 1 messages are so
// acknowledged and delivered in the order it sent them.
// QoS 2 messages hold the connection until they are safe.
type durableHook struct {
	mqttd.HookBase
	b      *Broker
	srv    *mqttd.Server
	f      DurablePublish
	ctx    context.Context
	queues sync.Map // *mqttd.Client -> *ackQueue
}

// OnPublish hands QoS 1 and 2 messages to the DurablePublish.
func (h *durableHook) OnPublish(cl *mqttd.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || cl.Inline {
		return pk, nil
	}
	q := h.queue(cl)
	if pk.FixedHeader.Qos == 2 {
		done := make(chan error, 1)
		handled, err := h.f(h.ctx, pk.TopicName, pk.Payload, pk.FixedHeader.Qos, func(err error) { done <- err })
		if err == nil && handled {
			err = <-done
		}
		if err != nil {
			h.refuse(cl, pk, err)
			return pk, packets.ErrRejectPacket
		}
		return pk, nil
	}
	e := q.push(h.ctx, pk)
	if e == nil {
		return pk, packets.ErrRejectPacket // the client or the broker is going away
	}
	handled, err := h.f(h.ctx, pk.TopicName, pk.Payload, pk.FixedHeader.Qos, func(err error) { q.finish(e, err) })
	switch {
	case err != nil:
		q.finish(e, err)
	case !handled && q.alone(e):
		return pk, nil // nothing before it: the server acknowledges it now
	case !handled:
		q.finish(e, nil) // acknowledged in its turn
	}
	return pk, packets.ErrRejectPacket
}

// OnDisconnect forgets the client's queue: what it holds is not
// acknowledged, and the client sends it again.
func (h *durableHook) OnDisconnect(cl *mqttd.Client, _ error, _ bool) {
	if q, ok := h.queues.LoadAndDelete(cl); ok {
		q.(*ackQueue).kill()
	}
}

func (h *durableHook) queue(cl *mqttd.Client) *ackQueue {
	if q, ok := h.queues.Load(cl); ok {
		return q.(*ackQueue)
	}
	q, _ := h.queues.LoadOrStore(cl, newAckQueue(h, cl))
	return q.(*ackQueue)
}

// refuse disconnects cl without acknowledging pk, which was not made safe.
func (h *durableHook) refuse(cl *mqttd.Client, pk packets.Packet, err error) {
	h.b.log.Warn("QoS 1 message not journaled: not acknowledged, client disconnected to send it again",
		"client", cl.ID, "topic", pk.TopicName, "err", err)
	_ = h.srv.DisconnectClient(cl, packets.ErrImplementationSpecificError)
}

// ackQueue holds one client's QoS 1 messages, in the order it sent them,
// until each is safe and acknowledged.
type ackQueue struct {
	h     *durableHook
	cl    *mqttd.Client
	slots chan struct{} // one per message held: the window
	dead  chan struct{} // closed when the client went away or a message failed

	mu       sync.Mutex // guards the fields below
	pending  []*ackEntry
	flushing bool // a flush goroutine runs
	killed   bool
}

type ackEntry struct {
	pk   packets.Packet
	done bool
	err  error
}

func newAckQueue(h *durableHook, cl *mqttd.Client) *ackQueue {
	return &ackQueue{h: h, cl: cl, slots: make(chan struct{}, durableWindow), dead: make(chan struct{})}
}

// push appends pk, waiting for room in the window; nil if the queue died
// or ctx ended meanwhile.
func (q *ackQueue) push(ctx context.Context, pk packets.Packet) *ackEntry {
	select {
	case q.slots <- struct{}{}:
	case <-q.dead:
		return nil
	case <-ctx.Done():
		return nil
	}
	e := &ackEntry{pk: pk}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.killed {
		return nil
	}
	q.pending = append(q.pending, e)
	return e
}

// alone removes e if it is the only message held and reports whether it did.
func (q *ackQueue) alone(e *ackEntry) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) != 1 || q.pending[0] != e {
		return false
	}
	q.pending = q.pending[:0]
	<-q.slots
	return true
}

// finish records e's outcome and acknowledges what is ready in a goroutine
// of the queue's own (a slow client's socket must not hold the caller, the
// journal's completions).
func (q *ackQueue) finish(e *ackEntry, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e.done, e.err = true, err
	if !q.flushing && !q.killed {
		q.flushing = true
		go q.flush()
	}
}

// flush acknowledges and delivers the messages at the head of the queue
// that are safe, in order, until one is not done yet.
func (q *ackQueue) flush() {
	for {
		q.mu.Lock()
		if q.killed || len(q.pending) == 0 || !q.pending[0].done {
			q.flushing = false
			q.mu.Unlock()
			return
		}
		e := q.pending[0]
		q.pending = q.pending[1:]
		q.mu.Unlock()
		<-q.slots
		if e.err != nil {
			q.kill()
			q.h.refuse(q.cl, e.pk, e.err)
			return
		}
		if err := q.h.srv.InjectPacket(q.cl, e.pk); err != nil {
			q.h.b.log.Debug("acknowledge journaled message", "client", q.cl.ID, "topic", e.pk.TopicName, "err", err)
		}
	}
}

// kill drops what the queue holds (not acknowledged) and wakes a push
// waiting for the window.
func (q *ackQueue) kill() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.killed {
		return
	}
	q.killed = true
	q.pending = nil
	close(q.dead)
}

// sweeper collects the garbage a wave of connections or disconnections
// left, once it is over, and gives the memory back to the OS: when
// thousands of devices leave at once (a network outage, a restart of their
// gateway) their sessions and connections are garbage, and when they come
// back their handshakes leave some, but Go collects only when the heap has
// doubled since the last collection, so the devices coming back would be
// served on top of it, and RSS would stay that much higher
// (docs/devices.md, "Limits per client, and memory").
type sweeper struct {
	mqttd.HookBase

	runs atomic.Int32 // sweeps run

	mu      sync.Mutex // guards the fields below
	gone    int        // connections and disconnections since the last sweep
	timer   *time.Timer
	stopped bool
}

// sweepAfter is how many connections and disconnections make a wave;
// sweepQuiet how long after the last of them the sweep runs.
const (
	sweepAfter = 1000
	sweepQuiet = 200 * time.Millisecond
)

func (s *sweeper) OnSessionEstablished(*mqttd.Client, packets.Packet) { s.count() }

func (s *sweeper) OnDisconnect(*mqttd.Client, error, bool) { s.count() }

// count counts a connection or disconnection, and sweeps sweepQuiet after
// the last of a wave.
func (s *sweeper) count() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone++
	switch {
	case s.gone < sweepAfter || s.stopped:
	case s.timer == nil:
		s.timer = time.AfterFunc(sweepQuiet, s.run)
	default:
		s.timer.Reset(sweepQuiet)
	}
}

func (s *sweeper) run() {
	s.mu.Lock()
	s.gone = 0
	stopped := s.stopped
	s.mu.Unlock()
	if !stopped {
		debug.FreeOSMemory()
		s.runs.Add(1)
	}
}

// stop cancels a sweep to come (the broker stops).
func (s *sweeper) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
	}
}

// dropHook counts messages the server drops instead of delivering.
type dropHook struct {
	mqttd.HookBase
	b *Broker
}

// OnPublishDropped is called when a client's pending writes are full.
func (h *dropHook) OnPublishDropped(cl *mqttd.Client, pk packets.Packet) {
	h.b.droppedPending.Add(1)
	h.warn("broker dropped a message: client pending writes full", cl, pk)
}

// warn logs at most one drop warning every 10 s.
func (h *dropHook) warn(msg string, cl *mqttd.Client, pk packets.Packet) {
	now := time.Now().UnixNano()
	last := h.b.lastDropLog.Load()
	if now-last < int64(10*time.Second) || !h.b.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	h.b.log.Warn(msg, "client", cl.ID, "topic", pk.TopicName, "dropped_pending_writes_total", h.b.droppedPending.Load())
}

// brokerCollector exports the server's Info counters and the drop counters.
type brokerCollector struct {
	srv            *mqttd.Server
	droppedPending *atomic.Uint64
}

var (
	descClients     = prometheus.NewDesc("outpost_broker_clients_connected", "Clients connected to the embedded broker.", nil, nil)
	descSubs        = prometheus.NewDesc("outpost_broker_subscriptions", "Subscriptions active on the embedded broker.", nil, nil)
	descRecv        = prometheus.NewDesc("outpost_broker_messages_received_total", "PUBLISH packets received by the embedded broker.", nil, nil)
	descSent        = prometheus.NewDesc("outpost_broker_messages_sent_total", "PUBLISH packets sent by the embedded broker.", nil, nil)
	descInflight    = prometheus.NewDesc("outpost_broker_inflight", "QoS 1/2 messages in flight on the embedded broker.", nil, nil)
	descRetained    = prometheus.NewDesc("outpost_broker_retained", "Retained messages held by the embedded broker.", nil, nil)
	descBytesRecv   = prometheus.NewDesc("outpost_broker_received_bytes_total", "Bytes received by the embedded broker.", nil, nil)
	descBytesSent   = prometheus.NewDesc("outpost_broker_sent_bytes_total", "Bytes sent by the embedded broker.", nil, nil)
	descDropped     = prometheus.NewDesc("outpost_broker_dropped_total", "Messages the embedded broker dropped instead of delivering, by reason (pending_writes: a client's outbound queue was full; inflight: a client's QoS 1/2 in-flight limit or packet ids were exhausted).", []string{"reason"}, nil)
	brokerDescsList = []*prometheus.Desc{descClients, descSubs, descRecv, descSent, descInflight, descRetained, descBytesRecv, descBytesSent, descDropped}
)

func newBrokerCollector(srv *mqttd.Server, dropped *atomic.Uint64) *brokerCollector {
	return &brokerCollector{srv: srv, droppedPending: dropped}
}

// Describe implements prometheus.Collector.
func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range brokerDescsList {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	i := &c.srv.Info
	ld := func(v *atomic.Int64) float64 { return float64(v.Load()) }
	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, ld(&i.ClientsConnected))
	ch <- prometheus.MustNewConstMetric(descSubs, prometheus.GaugeValue, ld(&i.Subscriptions))
	ch <- prometheus.MustNewConstMetric(descRecv, prometheus.CounterValue, ld(&i.MessagesReceived))
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, ld(&i.MessagesSent))
	ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, ld(&i.Inflight))
	ch <- prometheus.MustNewConstMetric(descRetained, prometheus.GaugeValue, ld(&i.Retained))
	ch <- prometheus.MustNewConstMetric(descBytesRecv, prometheus.CounterValue, ld(&i.BytesReceived))
	ch <- prometheus.MustNewConstMetric(descBytesSent, prometheus.CounterValue, ld(&i.BytesSent))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(c.droppedPending.Load()), "pending_writes")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, ld(&i.InflightDropped), "inflight")
}

var _ prometheus.Collector = (*brokerCollector)(nil)
var _ mqttd.Hook = (*dropHook)(nil)
var _ mqttd.Hook = (*sweeper)(nil)
var _ mqttd.Hook = (*durableHook)(nil)
