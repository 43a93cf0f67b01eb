package mqttd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/xid"

	"github.com/outpost-edge/outpost/devices/topic"
)

// Options are the server's limits.
type Options struct {
	// MaxInflight bounds the QoS 1/2 messages in flight to a client, or
	// kept for it while it is away; past it messages for it are dropped
	// (Info.InflightDropped). It is also the receive maximum clients are
	// told (MQTT 5). Default 1024.
	MaxInflight uint16
	// MaxPending bounds the packets waiting to be written to a client;
	// past it QoS 0 messages for it are dropped. Default 1024.
	MaxPending int
	// MaxPacketSize bounds a packet a client sends, in bytes (0: MQTT's
	// 256 MiB).
	MaxPacketSize uint32
	// MaxSessionExpiry bounds how long a session is kept after its
	// connection ended, in seconds; an MQTT 3.1.1 client that asks to keep
	// its session (clean session false) gets it.
	MaxSessionExpiry uint32
	// TopicAliasMaximum is the number of topic aliases a client may set
	// (MQTT 5). Default 16.
	TopicAliasMaximum uint16
}

// Info counts what the server did; read it with the atomics' Load.
type Info struct {
	ClientsConnected atomic.Int64
	Subscriptions    atomic.Int64
	MessagesReceived atomic.Int64
	MessagesSent     atomic.Int64
	PacketsReceived  atomic.Int64
	Inflight         atomic.Int64
	InflightDropped  atomic.Int64
	Retained         atomic.Int64
	BytesReceived    atomic.Int64
	BytesSent        atomic.Int64
}

// Server is an MQTT server. Listeners hand it their connections
// (Establish); it is stopped with Close.
type Server struct {
	opts  Options
	hooks hooks
	Info  Info

	inline   *Client
	topics   index
	retained retained
	closed   atomic.Bool

	mu      sync.Mutex
	clients map[string]*Client // connected, and disconnected with a kept session
}

// connectTimeout bounds the wait for a connection's CONNECT.
const connectTimeout = 10 * time.Second

// New returns a server with opts; add its hooks before the first Establish.
func New(opts Options) *Server {
	if opts.MaxInflight == 0 {
		opts.MaxInflight = 1024
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 1024
	}
	if opts.TopicAliasMaximum == 0 {
		opts.TopicAliasMaximum = 16
	}
	s := &Server{opts: opts, clients: map[string]*Client{}}
	s.inline = &Client{ID: "inline", Inline: true, Version: 5, s: s}
	return s
}

// AddHook adds h after the hooks already added.
func (s *Server) AddHook(h Hook) { s.hooks = append(s.hooks, h) }

// Client returns the client with id: connected, or disconnected with its
// session kept.
func (s *Server) Client(id string) (*Client, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cl, ok := s.clients[id]
	return cl, ok
}

// Subscribers returns the ids of the clients with a subscription (not a
// shared one) matching topic.
func (s *Server) Subscribers(topic string) []string {
	m := s.topics.match(topic)
	ids := make([]string, 0, len(m.subs))
	for id := range m.subs {
		ids = append(ids, id)
	}
	return ids
}

// Establish reads and answers the CONNECT of conn on the caller's
// goroutine, then serves the client on a goroutine of its own until its
// connection ends, and calls done with why: nil for a clean DISCONNECT.
//
// That goroutine is where an idle client waits. It only ever parks on a
// one-byte read, and hands each burst of packets to a goroutine that lives
// as long as the burst: so it never grows past the smallest stack (2 KiB,
// with GODEBUG=adaptivestackstart=0), which the garbage collector would
// otherwise keep at the deepest the handling of a packet ever went.
func (s *Server) Establish(listener string, conn net.Conn, done func(error)) {
	cl, err := s.connect(listener, conn)
	if err != nil {
		done(err)
		return
	}
	go func() {
		err := s.serve(cl)
		done(s.ended(cl, err))
	}()
}

// connect reads and answers the CONNECT of conn. The burst's reader goes
// back to the pool unless the client sent more after its CONNECT.
func (s *Server) connect(listener string, conn net.Conn) (_ *Client, err error) {
	cl := &Client{Listener: listener, Conn: conn, Remote: conn.RemoteAddr().String(), s: s, Version: 4}
	_ = conn.SetReadDeadline(time.Now().Add(connectTimeout))
	if err := cl.park(); err != nil {
		return nil, err
	}
	cl.br = getReader(conn)
	defer func() {
		if err != nil || cl.br.Buffered() == 0 {
			putReader(cl)
		}
	}()
	fh, body, err := s.readRaw(cl, cl.one[0])
	if err != nil {
		return nil, err
	}
	if fh.Type != packets.Connect {
		return nil, packets.ErrProtocolViolationRequireFirstConnect
	}
	pk := packets.Packet{FixedHeader: fh}
	if err := decode(&pk, body); err != nil {
		return nil, err
	}
	s.Info.PacketsReceived.Add(1)
	cl.Version = pk.ProtocolVersion
	code := pk.ConnectValidate()
	if code == packets.CodeSuccess && cl.Version < 5 && !pk.Connect.Clean && pk.Connect.ClientIdentifier == "" {
		code = packets.ErrClientIdentifierNotValid
	}
	if code == packets.CodeSuccess && s.closed.Load() {
		code = packets.ErrServerUnavailable
	}
	if code != packets.CodeSuccess {
		_ = s.connack(cl, code, false, nil)
		return nil, code
	}
	s.parseConnect(cl, &pk)
	props := packets.Properties{}
	if pk.Connect.ClientIdentifier == "" {
		cl.ID = xid.New().String()
		props.AssignedClientID = cl.ID
	}
	if !s.hooks.authenticate(cl, pk) {
		_ = s.connack(cl, packets.ErrBadUsernameOrPassword, false, nil)
		return nil, packets.ErrBadUsernameOrPassword
	}
	if cl.Version == 5 && pk.Properties.SessionExpiryInterval > s.opts.MaxSessionExpiry {
		props.SessionExpiryInterval, props.SessionExpiryIntervalFlag = cl.expiry, true
	}
	present := s.takeSession(cl, pk.Connect.Clean)
	if err := s.connack(cl, packets.CodeSuccess, present, &props); err != nil {
		cl.Stop(err)
		s.forget(cl) // registered, never served
		return nil, err
	}
	s.Info.ClientsConnected.Add(1)
	if present {
		cl.mu.Lock()
		cl.resendLocked()
		cl.mu.Unlock()
	}
	s.hooks.each(func(h Hook) { h.OnSessionEstablished(cl, pk) })
	return cl, nil
}

// parseConnect takes the client's id, keepalive, session expiry, will and
// limits from its CONNECT.
func (s *Server) parseConnect(cl *Client, pk *packets.Packet) {
	c := &pk.Connect
	cl.ID, cl.keepalive = c.ClientIdentifier, c.Keepalive
	cl.sendMax = 65535
	switch {
	case cl.Version == 5:
		cl.expiry = min(pk.Properties.SessionExpiryInterval, s.opts.MaxSessionExpiry)
		if pk.Properties.ReceiveMaximum > 0 {
			cl.sendMax = pk.Properties.ReceiveMaximum
		}
		cl.maxPacket = pk.Properties.MaximumPacketSize
	case !c.Clean:
		cl.expiry = s.opts.MaxSessionExpiry
	}
	if c.WillFlag {
		cl.will = &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: c.WillQos, Retain: c.WillRetain},
			TopicName: c.WillTopic, Payload: c.WillPayload, Properties: c.WillProperties}
	}
}

// connack answers a CONNECT with code.
func (s *Server) connack(cl *Client, code packets.Code, present bool, props *packets.Properties) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, SessionPresent: present, ReasonCode: code.Code}
	if props != nil {
		pk.Properties = *props
	}
	if code.Code >= packets.ErrUnspecifiedError.Code {
		pk.SessionPresent = false
		if cl.Version < 5 {
			if v3, ok := packets.V5CodesToV3[code]; ok {
				pk.ReasonCode = v3.Code
			}
		} else {
			pk.Properties.ReasonString = code.Reason
		}
	} else if cl.Version == 5 {
		pk.Properties.ReceiveMaximum = s.opts.MaxInflight
		pk.Properties.TopicAliasMaximum = s.opts.TopicAliasMaximum
		if s.opts.MaxPacketSize > 0 {
			pk.Properties.MaximumPacketSize = s.opts.MaxPacketSize
		}
	}
	b, err := encode(pk, cl.Version)
	if err != nil {
		return err
	}
	return cl.writeNow(b, connectTimeout)
}

// takeSession registers cl under its id, taking the session of a client
// with the same id unless cl starts clean; it reports whether a session
// was taken.
func (s *Server) takeSession(cl *Client, clean bool) bool {
	s.mu.Lock()
	old := s.clients[cl.ID]
	s.clients[cl.ID] = cl
	s.mu.Unlock()
	if old == nil {
		return false
	}
	old.takenOver.Store(true)
	if !old.Closed() {
		_ = s.DisconnectClient(old, packets.ErrSessionTakenOver)
	}
	old.mu.Lock()
	sess := old.sess
	old.sess = session{}
	if old.expiration != nil {
		old.expiration.Stop()
	}
	old.mu.Unlock()
	if clean || old.expiry == 0 {
		s.dropSession(old, sess)
		return false
	}
	cl.mu.Lock()
	cl.sess = sess
	cl.mu.Unlock()
	return true
}

// dropSession removes a session's subscriptions and drops its messages.
func (s *Server) dropSession(cl *Client, sess session) {
	for f := range sess.subs.all() {
		if s.topics.unsubscribe(cl.ID, f) {
			s.Info.Subscriptions.Add(-1)
		}
	}
	s.Info.Inflight.Add(-int64(len(sess.inflight)))
	for _, m := range sess.inflight {
		s.hooks.each(func(h Hook) { h.OnQosDropped(cl, m.pk) })
	}
	for _, pk := range sess.pending {
		s.hooks.each(func(h Hook) { h.OnQosDropped(cl, pk) })
	}
}

// serve reads the client's packets until its connection ends: it parks
// until a packet begins, and has its burst handled on a goroutine of its
// own (see Establish).
func (s *Server) serve(cl *Client) error {
	burst := make(chan error, 1)
	for {
		if cl.Closed() {
			return nil
		}
		if cl.br == nil {
			cl.refreshDeadline()
			if err := cl.park(); err != nil {
				return err
			}
		}
		go func() { burst <- s.burst(cl) }()
		if err := <-burst; err != nil {
			return err
		}
	}
}

// burst handles the packets the client sent, the first byte of the first
// one in cl.one (or, the last time, left buffered), until no more is
// buffered.
func (s *Server) burst(cl *Client) error {
	var b byte
	if cl.br == nil {
		b = cl.one[0]
		cl.br = getReader(cl.Conn)
	} else {
		var err error
		if b, err = cl.br.ReadByte(); err != nil {
			return err
		}
	}
	for {
		if err := s.receive(cl, b); err != nil {
			return err
		}
		if cl.Closed() {
			return nil
		}
		if cl.br.Buffered() == 0 {
			putReader(cl)
			return nil
		}
		cl.refreshDeadline()
		var err error
		if b, err = cl.br.ReadByte(); err != nil {
			return err
		}
	}
}

// refreshDeadline gives the client 1.5 keepalives to send its next packet.
func (cl *Client) refreshDeadline() {
	if cl.keepalive > 0 {
		_ = cl.Conn.SetReadDeadline(time.Now().Add(time.Duration(cl.keepalive) * 1500 * time.Millisecond))
	} else {
		_ = cl.Conn.SetReadDeadline(time.Time{})
	}
}

// park waits for the first byte of the next packet (cl.one), holding no
// buffer, with as little as can be on the goroutine's stack: idle clients
// spend their life here.
func (cl *Client) park() error {
	for {
		n, err := cl.Conn.Read(cl.one[:])
		if n == 1 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readers lend bufio readers to connections in a burst. Devices send small
// packets; a larger one is read past the buffer, straight into its own.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 512) }}

func getReader(r io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(cl *Client) {
	if cl.br != nil {
		cl.br.Reset(nil)
		readers.Put(cl.br)
		cl.br = nil
	}
}

// readRaw reads the rest of a packet whose first byte is b.
func (s *Server) readRaw(cl *Client, b byte) (packets.FixedHeader, []byte, error) {
	var fh packets.FixedHeader
	if err := fh.Decode(b); err != nil {
		return fh, nil, err
	}
	n, nb, err := packets.DecodeLength(cl.br)
	if err != nil {
		return fh, nil, err
	}
	fh.Remaining = n
	if s.opts.MaxPacketSize > 0 && uint32(n+1+nb) > s.opts.MaxPacketSize {
		return fh, nil, packets.ErrPacketTooLarge
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(cl.br, body); err != nil {
		return fh, nil, err
	}
	s.Info.BytesReceived.Add(int64(1 + nb + n))
	return fh, body, nil
}

// receive reads and handles one packet whose first byte is b.
func (s *Server) receive(cl *Client, b byte) error {
	fh, body, err := s.readRaw(cl, b)
	if err != nil {
		if errors.Is(err, packets.ErrPacketTooLarge) && cl.Version == 5 {
			_ = s.DisconnectClient(cl, packets.ErrPacketTooLarge)
		}
		return err
	}
	s.Info.PacketsReceived.Add(1)
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: cl.Version}
	switch fh.Type {
	case packets.Connect:
		return s.refuse(cl, packets.ErrProtocolViolationSecondConnect)
	case packets.Publish, packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp, packets.Subscribe,
		packets.Unsubscribe, packets.Pingreq, packets.Disconnect:
	default:
		return s.refuse(cl, packets.ErrProtocolViolation)
	}
	if err := decode(&pk, body); err != nil {
		return s.refuse(cl, packets.ErrMalformedPacket)
	}
	switch fh.Type {
	case packets.Publish:
		s.Info.MessagesReceived.Add(1)
		return s.processPublish(cl, pk)
	case packets.Subscribe:
		return s.processSubscribe(cl, pk)
	case packets.Unsubscribe:
		return s.processUnsubscribe(cl, pk)
	case packets.Pingreq:
		return cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}})
	case packets.Disconnect:
		if pk.ReasonCode == packets.CodeDisconnectWillMessage.Code {
			cl.Stop(packets.CodeDisconnectWillMessage)
		} else {
			cl.Stop(packets.CodeDisconnect)
		}
		return nil
	}
	s.processAck(cl, pk)
	return nil
}

// decode decodes the body of a packet (its fixed header in pk): a
// client's, and for the tests the server's. A body the decoder trips on
// (mochi's decoders index past the end of some malformed packets) is
// malformed, not a crash.
func decode(pk *packets.Packet, body []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", packets.ErrMalformedPacket, r)
		}
	}()
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return pk.ConnectDecode(body)
	case packets.Connack:
		return pk.ConnackDecode(body)
	case packets.Suback:
		return pk.SubackDecode(body)
	case packets.Unsuback:
		return pk.UnsubackDecode(body)
	case packets.Publish:
		return pk.PublishDecode(body)
	case packets.Puback:
		return pk.PubackDecode(body)
	case packets.Pubrec:
		return pk.PubrecDecode(body)
	case packets.Pubrel:
		return pk.PubrelDecode(body)
	case packets.Pubcomp:
		return pk.PubcompDecode(body)
	case packets.Subscribe:
		return pk.SubscribeDecode(body)
	case packets.Unsubscribe:
		return pk.UnsubscribeDecode(body)
	case packets.Disconnect:
		return pk.DisconnectDecode(body)
	}
	return nil
}

// refuse ends cl's connection for a protocol error: MQTT 5 clients are
// told why.
func (s *Server) refuse(cl *Client, code packets.Code) error {
	if cl.Version == 5 {
		_ = s.DisconnectClient(cl, code)
	}
	return code
}

// ended finishes a connection that ended with err: the will, the hooks,
// and the session, dropped or kept.
func (s *Server) ended(cl *Client, err error) error {
	putReader(cl)
	cause := cl.StopCause()
	cl.Stop(err)
	s.Info.ClientsConnected.Add(-1)
	clean := errors.Is(cause, packets.CodeDisconnect)
	if cl.will != nil && !clean {
		s.publishWill(cl)
	}
	expire := cl.expiry == 0
	s.hooks.each(func(h Hook) { h.OnDisconnect(cl, err, expire) })
	if cl.takenOver.Load() {
		return s.endErr(cause, err)
	}
	switch {
	case expire:
		s.forget(cl)
	case s.closed.Load():
		// no session outlives the server
	default:
		d := time.Duration(cl.expiry) * time.Second
		cl.mu.Lock()
		cl.expiration = time.AfterFunc(d, func() { s.expire(cl) })
		cl.mu.Unlock()
	}
	return s.endErr(cause, err)
}

// endErr is what Establish returns for a connection stopped for cause
// whose read ended with err.
func (s *Server) endErr(cause, err error) error {
	switch {
	case errors.Is(cause, packets.CodeDisconnect):
		return nil
	case cause != nil:
		return cause
	}
	return err
}

// forget drops cl and its session, unless a new connection took it.
func (s *Server) forget(cl *Client) {
	s.mu.Lock()
	mine := s.clients[cl.ID] == cl
	if mine {
		delete(s.clients, cl.ID)
	}
	s.mu.Unlock()
	if !mine {
		return
	}
	cl.mu.Lock()
	sess := cl.sess
	cl.sess = session{}
	cl.mu.Unlock()
	s.dropSession(cl, sess)
}

// expire ends the kept session of a client that did not come back.
func (s *Server) expire(cl *Client) {
	if cl.takenOver.Load() {
		return
	}
	s.forget(cl)
	s.hooks.each(func(h Hook) { h.OnClientExpired(cl) })
}

// publishWill publishes the will of a client whose connection ended
// uncleanly (its topic was allowed when it connected).
func (s *Server) publishWill(cl *Client) {
	pk := *cl.will
	cl.will = nil
	pk.Origin, pk.Created = cl.ID, time.Now().Unix()
	if pk.FixedHeader.Retain {
		s.retain(pk)
	}
	s.route(cl, pk)
}

// DisconnectClient ends cl's connection for code, telling an MQTT 5 client
// why (a DISCONNECT with that reason).
func (s *Server) DisconnectClient(cl *Client, code packets.Code) error {
	var err error
	if cl.Version == 5 && cl.Conn != nil && !cl.Closed() {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: code.Code}
		if code.Reason != "" {
			pk.Properties.ReasonString = code.Reason
		}
		var b []byte
		if b, err = encode(pk, cl.Version); err == nil {
			err = cl.writeNow(b, time.Second)
		}
	}
	cl.Stop(code)
	return err
}

// Close stops accepting connections and ends every connection (MQTT 5
// clients are told the server is shutting down). Listeners then close
// what connections they still hold.
func (s *Server) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.mu.Lock()
	cls := make([]*Client, 0, len(s.clients))
	for _, cl := range s.clients {
		cls = append(cls, cl)
	}
	s.mu.Unlock()
	for _, cl := range cls {
		cl.mu.Lock()
		if cl.expiration != nil {
			cl.expiration.Stop()
		}
		cl.mu.Unlock()
		if !cl.Closed() {
			_ = s.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// Publish publishes a message from the inline client.
func (s *Server) Publish(topicName string, payload []byte, retain bool, qos byte) error {
	if err := topic.CheckName(topicName); err != nil {
		return fmt.Errorf("publish: topic %w", err)
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName: topicName, Payload: payload}
	return s.processPublish(s.inline, pk)
}

// Subscribe subscribes handler to filter as the inline client's
// subscription id; the retained messages filter matches are handed to it
// first.
func (s *Server) Subscribe(filter string, id int, handler InlineHandler) error {
	if err := topic.CheckFilter(filter); err != nil {
		return fmt.Errorf("subscribe: filter %w", err)
	}
	sub := packets.Subscription{Filter: filter, Identifier: id, Qos: 2}
	s.topics.inlineSubscribe(id, sub, handler)
	for _, pk := range s.retained.matching(filter) {
		handler(s.inline, sub, pk)
	}
	return nil
}

// Unsubscribe removes the inline client's subscription id to filter.
func (s *Server) Unsubscribe(filter string, id int) error {
	if !s.topics.inlineUnsubscribe(id, filter) {
		return fmt.Errorf("unsubscribe %q: no inline subscription %d", filter, id)
	}
	return nil
}
