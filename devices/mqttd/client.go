package mqttd

import (
	"bufio"
	"bytes"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Client is one client of the server: a network connection and its
// session, or the inline client (the daemon's own, in process).
type Client struct {
	ID       string   // the client identifier (assigned by the server when the client sent none)
	Remote   string   // the remote address; "" for the inline client
	Listener string   // the listener it connected through
	Conn     net.Conn // nil for the inline client
	Version  byte     // the protocol version: 3 (3.1), 4 (3.1.1) or 5
	Inline   bool     // the inline client

	s         *Server
	keepalive uint16            // seconds; 0: none
	expiry    uint32            // seconds its session is kept after its connection ends
	will      *packets.Packet   // published if the connection ends uncleanly
	sendMax   uint16            // QoS 1/2 messages in flight to it (its receive maximum)
	maxPacket uint32            // the largest packet it takes (MQTT 5); 0: any
	aliases   map[uint16]string // topic aliases it set (read goroutine only)
	one       [1]byte           // the first byte of the next packet, read while idle
	br        *bufio.Reader     // the burst's reader; nil while idle (read goroutine only)

	takenOver atomic.Bool // a new connection with its id took its session
	stopped   atomic.Bool
	stopOnce  sync.Once

	wmu sync.Mutex // serializes writes to Conn

	mu         sync.Mutex // guards what follows
	cause      error      // why it stopped
	out        [][]byte   // encoded packets waiting for the writer
	writing    bool       // a writer goroutine runs
	sess       session
	expiration *time.Timer // ends a kept session
}

// session is what a client's session keeps across connections.
type session struct {
	subs     small[string, struct{}] // the filters, as subscribed
	inflight map[uint16]*outMsg      // sent, not acknowledged yet
	pending  []packets.Packet        // QoS 1/2 published while the client was away
	nextID   uint16
	seq      uint64
	inbound2 map[uint16]struct{} // QoS 2 messages received and acknowledged with PUBREC, waiting for their PUBREL
}

// outMsg is a QoS 1/2 message sent to the client: its PUBLISH until
// acknowledged (PUBACK, or PUBREC for QoS 2), then, for QoS 2, its PUBREL
// until PUBCOMP.
type outMsg struct {
	pk     packets.Packet
	seq    uint64 // the order it was sent in
	pubrel bool   // PUBREC received: PUBREL sent
}

// Closed reports whether the client's connection ended (or Stop was called).
func (cl *Client) Closed() bool { return cl.stopped.Load() }

// StopCause returns why the client was stopped; nil while connected, or
// when its connection just ended.
func (cl *Client) StopCause() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.cause
}

// Stop ends the client's connection for cause (the first cause given is
// kept).
func (cl *Client) Stop(cause error) {
	cl.stopOnce.Do(func() {
		cl.mu.Lock()
		cl.cause = cause
		cl.mu.Unlock()
		cl.stopped.Store(true)
		if cl.Conn != nil {
			_ = cl.Conn.Close()
		}
	})
}

// InflightLen returns the QoS 1/2 messages in flight to the client and
// waiting to be sent to it.
func (cl *Client) InflightLen() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return len(cl.sess.inflight) + len(cl.sess.pending)
}

// WritePacket sends pk to the client, after what is queued for it. It
// returns an error only if pk cannot be encoded.
func (cl *Client) WritePacket(pk packets.Packet) error {
	b, err := encode(pk, cl.Version)
	if err != nil {
		return err
	}
	cl.enqueue(b, true)
	return nil
}

// writeLocked is WritePacket with cl.mu held; a packet that cannot be
// encoded is not sent.
func (cl *Client) writeLocked(pk packets.Packet) {
	if b, err := encode(pk, cl.Version); err == nil {
		cl.enqueueLocked(b, true)
	}
}

// pubrel is the PUBREL of the QoS 2 message id.
func pubrel(id uint16) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id}
}

// enqueue queues b to be written, unless the client is gone or (!force)
// its pending writes are full; it reports whether it did.
func (cl *Client) enqueue(b []byte, force bool) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.enqueueLocked(b, force)
}

func (cl *Client) enqueueLocked(b []byte, force bool) bool {
	if cl.Conn == nil || cl.stopped.Load() || (!force && len(cl.out) >= cl.s.opts.MaxPending) {
		return false
	}
	cl.out = append(cl.out, b)
	if !cl.writing {
		cl.writing = true
		go cl.flush()
	}
	return true
}

// flush writes what is queued until nothing is; it runs on a goroutine of
// its own only while there is something to write.
func (cl *Client) flush() {
	for {
		cl.mu.Lock()
		bufs := cl.out
		cl.out = nil
		if len(bufs) == 0 || cl.stopped.Load() {
			cl.writing = false
			cl.mu.Unlock()
			return
		}
		cl.mu.Unlock()
		cl.wmu.Lock()
		nb := net.Buffers(bufs)
		n, err := nb.WriteTo(cl.Conn)
		cl.wmu.Unlock()
		cl.s.Info.BytesSent.Add(n)
		if err != nil {
			cl.Stop(err)
		}
	}
}

// writeNow writes b at once (a CONNACK, or a DISCONNECT before the
// connection is closed), waiting at most d.
func (cl *Client) writeNow(b []byte, d time.Duration) error {
	cl.wmu.Lock()
	defer cl.wmu.Unlock()
	_ = cl.Conn.SetWriteDeadline(time.Now().Add(d))
	n, err := cl.Conn.Write(b)
	_ = cl.Conn.SetWriteDeadline(time.Time{})
	cl.s.Info.BytesSent.Add(int64(n))
	return err
}

// window is how many QoS 1/2 messages may be in flight to the client.
func (cl *Client) window() int {
	return int(min(cl.sendMax, cl.s.opts.MaxInflight))
}

// nextIDLocked returns a packet id not in flight, or 0 if none is free.
func (cl *Client) nextIDLocked() uint16 {
	for range 65535 {
		cl.sess.nextID++
		if cl.sess.nextID == 0 {
			cl.sess.nextID = 1
		}
		if _, used := cl.sess.inflight[cl.sess.nextID]; !used {
			return cl.sess.nextID
		}
	}
	return 0
}

// sendLocked sends pk (QoS 1 or 2) with a new packet id; false if no id is
// free, or pk is larger than the client takes.
func (cl *Client) sendLocked(pk packets.Packet) bool {
	id := cl.nextIDLocked()
	if id == 0 {
		return false
	}
	pk.PacketID = id
	b, err := encode(pk, cl.Version)
	if err != nil || (cl.maxPacket > 0 && uint32(len(b)) > cl.maxPacket) {
		return false
	}
	if cl.sess.inflight == nil {
		cl.sess.inflight = map[uint16]*outMsg{}
	}
	cl.sess.seq++
	cl.sess.inflight[id] = &outMsg{pk: pk, seq: cl.sess.seq}
	cl.s.Info.Inflight.Add(1)
	cl.enqueueLocked(b, true)
	return true
}

// promoteLocked sends pending messages while the window has room.
func (cl *Client) promoteLocked() {
	for len(cl.sess.pending) > 0 && len(cl.sess.inflight) < cl.window() && !cl.stopped.Load() {
		pk := cl.sess.pending[0]
		cl.sess.pending[0] = packets.Packet{}
		cl.sess.pending = cl.sess.pending[1:]
		if !cl.sendLocked(pk) {
			if len(cl.sess.inflight) >= 65535 { // no packet id free: later
				cl.sess.pending = slices.Insert(cl.sess.pending, 0, pk)
				return
			}
			cl.s.Info.InflightDropped.Add(1) // larger than the client takes
		}
	}
	if len(cl.sess.pending) == 0 {
		cl.sess.pending = nil
	}
}

// resendLocked sends again what was in flight when the client's previous
// connection ended, in the order first sent, then what waits.
func (cl *Client) resendLocked() {
	msgs := make([]*outMsg, 0, len(cl.sess.inflight))
	for _, m := range cl.sess.inflight {
		msgs = append(msgs, m)
	}
	slices.SortFunc(msgs, func(a, b *outMsg) int { return int(a.seq - b.seq) })
	for _, m := range msgs {
		if m.pubrel {
			cl.writeLocked(pubrel(m.pk.PacketID))
			continue
		}
		pk := m.pk
		pk.FixedHeader.Dup = true
		cl.writeLocked(pk)
	}
	cl.promoteLocked()
}

// encode encodes pk as a peer speaking protocol version v sends it (the
// server's packets, and for the tests a client's).
func encode(pk packets.Packet, v byte) ([]byte, error) {
	pk.ProtocolVersion = v
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		pk.FixedHeader.Qos = 1
		err = pk.UnsubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Connack:
		err = pk.ConnackEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Suback:
		err = pk.SubackEncode(&buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(&buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		return nil, packets.ErrNoValidPacketAvailable
	}
	return buf.Bytes(), err
}
