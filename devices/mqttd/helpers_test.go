package mqttd

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// startServer runs a server with opts and hooks on a random loopback
// port and returns its address; it stops with the test.
func startServer(t testing.TB, opts Options, hs ...Hook) (*Server, string) {
	t.Helper()
	s := New(opts)
	for _, h := range hs {
		s.AddHook(h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go s.Establish("test", c, func(error) {
				c.Close()
				wg.Done()
			})
		}
	}()
	t.Cleanup(func() {
		s.Close()
		ln.Close()
		wg.Wait()
	})
	return s, ln.Addr().String()
}

// rawClient speaks MQTT packet by packet, to check what the server sends
// exactly.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	v    byte
}

// dial connects with the CONNECT pk (protocol version v) and returns the
// client with the server's CONNACK.
func dial(t testing.TB, addr string, v byte, pk packets.Packet) (*rawClient, packets.Packet) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, br: bufio.NewReader(conn), v: v}
	pk.FixedHeader.Type = packets.Connect
	pk.ProtocolVersion = v
	pk.Connect.ProtocolName = []byte("MQTT")
	if pk.Connect.Keepalive == 0 {
		pk.Connect.Keepalive = 30
	}
	c.send(pk)
	ack := c.read()
	if ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("got %s, want CONNACK", packets.PacketNames[ack.FixedHeader.Type])
	}
	return c, ack
}

// connect connects client id (MQTT version v, clean start) and fails the
// test unless it is accepted.
func connect(t testing.TB, addr string, v byte, id string, clean bool) *rawClient {
	t.Helper()
	c, ack := dial(t, addr, v, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: id, Clean: clean}})
	if ack.ReasonCode != 0 {
		t.Fatalf("connect %s: CONNACK reason %#x", id, ack.ReasonCode)
	}
	return c
}

func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	b, err := encode(pk, c.v)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// readErr reads the next packet, waiting up to wait.
func (c *rawClient) readErr(wait time.Duration) (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	var pk packets.Packet
	b, err := c.br.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.br)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.v
	pk.FixedHeader.Remaining = n
	err = decode(&pk, body)
	return pk, err
}

func (c *rawClient) read() packets.Packet {
	c.t.Helper()
	pk, err := c.readErr(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return pk
}

// expect reads the next packet and fails unless it is of type typ.
func (c *rawClient) expect(typ byte) packets.Packet {
	c.t.Helper()
	pk := c.read()
	if pk.FixedHeader.Type != typ {
		c.t.Fatalf("got %s %+v, want %s", packets.PacketNames[pk.FixedHeader.Type], pk, packets.PacketNames[typ])
	}
	return pk
}

// none fails if a packet arrives within d.
func (c *rawClient) none(d time.Duration) {
	c.t.Helper()
	if pk, err := c.readErr(d); err == nil {
		c.t.Fatalf("got %s %q on %q, want nothing", packets.PacketNames[pk.FixedHeader.Type], pk.Payload, pk.TopicName)
	}
}

// subscribe subscribes to filter at qos and returns the SUBACK codes.
func (c *rawClient) subscribe(id uint16, subs ...packets.Subscription) []byte {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: id, Filters: subs})
	ack := c.expect(packets.Suback)
	if ack.PacketID != id {
		c.t.Fatalf("SUBACK for %d, want %d", ack.PacketID, id)
	}
	return ack.ReasonCodes
}

// publish sends a PUBLISH.
func (c *rawClient) publish(topic, payload string, qos byte, retain bool, id uint16) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain}, TopicName: topic,
		Payload: []byte(payload), PacketID: id})
}

// ping waits for a PINGRESP: the server handled every packet the client
// sent before (a client's packets are handled in order, one at a time).
func (c *rawClient) ping() {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	c.expect(packets.Pingresp)
}

// ack acknowledges a PUBLISH received (PUBACK, or PUBREC then PUBCOMP for QoS 2).
func (c *rawClient) ack(pk packets.Packet) {
	c.t.Helper()
	switch pk.FixedHeader.Qos {
	case 1:
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	case 2:
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
		if rel := c.expect(packets.Pubrel); rel.PacketID != pk.PacketID {
			c.t.Fatalf("PUBREL for %d, want %d", rel.PacketID, pk.PacketID)
		}
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
	}
}

// waitFor polls cond until it holds or d passed.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
	}
}
