package mqttd

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

func sub(filter string, qos byte) packets.Subscription {
	return packets.Subscription{Filter: filter, Qos: qos}
}

// QoS 2 both ways: the publisher's PUBREC, PUBREL, PUBCOMP; the
// subscriber's PUBLISH, PUBREC, PUBREL, PUBCOMP; a PUBLISH sent again
// before its PUBREL is acknowledged again and not delivered twice.
func TestQoS2BothWays(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprint("v", v), func(t *testing.T) {
			s, addr := startServer(t, Options{})
			sb := connect(t, addr, v, "sub", true)
			if codes := sb.subscribe(1, sub("a/+", 2)); codes[0] != 2 {
				t.Fatalf("SUBACK %v, want granted QoS 2", codes)
			}
			pb := connect(t, addr, v, "pub", true)
			pb.publish("a/b", "m1", 2, false, 7)
			if rec := pb.expect(packets.Pubrec); rec.PacketID != 7 {
				t.Fatalf("PUBREC %d, want 7", rec.PacketID)
			}
			pb.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: true}, TopicName: "a/b", Payload: []byte("m1"), PacketID: 7})
			if rec := pb.expect(packets.Pubrec); rec.PacketID != 7 {
				t.Fatalf("PUBREC %d for the resent message, want 7", rec.PacketID)
			}
			pb.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 7})
			if comp := pb.expect(packets.Pubcomp); comp.PacketID != 7 {
				t.Fatalf("PUBCOMP %d, want 7", comp.PacketID)
			}

			got := sb.expect(packets.Publish)
			if got.TopicName != "a/b" || string(got.Payload) != "m1" || got.FixedHeader.Qos != 2 || got.PacketID == 0 {
				t.Fatalf("subscriber got %+v", got)
			}
			if n := s.Info.Inflight.Load(); n != 1 {
				t.Errorf("inflight %d before the subscriber acknowledged, want 1", n)
			}
			sb.ack(got)
			sb.none(300 * time.Millisecond) // once, though sent twice
			waitFor(t, "the QoS 2 flow to complete", 5*time.Second, func() bool { return s.Info.Inflight.Load() == 0 })
		})
	}
}

// A retained message goes to later subscribers with the retain flag, is
// replaced by the next and dropped by an empty one; MQTT 5 retain
// handling 2 sends none.
func TestRetained(t *testing.T) {
	s, addr := startServer(t, Options{})
	pb := connect(t, addr, 5, "pub", true)
	pb.publish("r/1", "old", 0, true, 0)
	pb.publish("r/2", "two", 0, false, 0) // not retained
	pb.publish("r/1", "new", 1, true, 1)
	pb.expect(packets.Puback)
	pb.ping() // the server acknowledges a message before it delivers it

	c := connect(t, addr, 5, "c", true)
	c.subscribe(1, sub("r/#", 1))
	got := c.expect(packets.Publish)
	if string(got.Payload) != "new" || !got.FixedHeader.Retain || got.FixedHeader.Qos != 1 {
		t.Fatalf("got %+v, want the retained \"new\" at QoS 1 with the retain flag", got)
	}
	c.ack(got)
	c.none(200 * time.Millisecond)

	// Delivered as published to a subscriber already there: no retain flag.
	pb.publish("r/1", "live", 0, true, 0)
	if got := c.expect(packets.Publish); string(got.Payload) != "live" || got.FixedHeader.Retain {
		t.Fatalf("got %+v, want \"live\" without the retain flag", got)
	}

	d := connect(t, addr, 5, "d", true)
	d.subscribe(1, packets.Subscription{Filter: "r/#", Qos: 0, RetainHandling: 2})
	d.none(200 * time.Millisecond)

	pb.publish("r/1", "", 0, true, 0) // drops it
	waitFor(t, "the retained message dropped", 5*time.Second, func() bool { return s.Info.Retained.Load() == 0 })
	e := connect(t, addr, 4, "e", true)
	e.subscribe(1, sub("r/#", 0))
	e.none(200 * time.Millisecond)
}

// A will is published when the connection is lost or an MQTT 5 client asks
// for it, not after a clean DISCONNECT.
func TestWill(t *testing.T) {
	_, addr := startServer(t, Options{})
	w := connect(t, addr, 5, "watcher", true)
	w.subscribe(1, sub("will/#", 0))
	will := func(id string, v byte) *rawClient {
		c, ack := dial(t, addr, v, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: id, Clean: true,
			WillFlag: true, WillTopic: "will/" + id, WillPayload: []byte("gone")}})
		if ack.ReasonCode != 0 {
			t.Fatalf("connect %s: %#x", id, ack.ReasonCode)
		}
		return c
	}

	lost := will("lost", 4)
	lost.conn.Close()
	if got := w.expect(packets.Publish); got.TopicName != "will/lost" || string(got.Payload) != "gone" {
		t.Fatalf("got %+v, want the will of lost", got)
	}

	clean := will("clean", 4)
	clean.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	w.none(300 * time.Millisecond)

	asks := will("asks", 5)
	asks.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: packets.CodeDisconnectWillMessage.Code})
	if got := w.expect(packets.Publish); got.TopicName != "will/asks" {
		t.Fatalf("got %+v, want the will of asks", got)
	}
}

// A kept session (MQTT 3.1.1 clean session false) keeps the
// subscriptions and the QoS 1 messages published while the client was
// away, and sends again what was in flight, marked DUP, in order.
func TestKeptSession(t *testing.T) {
	s, addr := startServer(t, Options{MaxSessionExpiry: 60})
	c := connect(t, addr, 4, "kept", false)
	c.subscribe(1, sub("k/#", 1))
	pb := connect(t, addr, 4, "pub", true)
	pb.publish("k/1", "in flight", 1, false, 1)
	pb.expect(packets.Puback)
	if got := c.expect(packets.Publish); string(got.Payload) != "in flight" {
		t.Fatalf("got %q", got.Payload)
	}
	c.conn.Close() // not acknowledged
	waitFor(t, "the server to see the client gone", 5*time.Second, func() bool { cl, _ := s.Client("kept"); return cl.Closed() })

	pb.publish("k/1", "qos 0 is not kept", 0, false, 0)
	for i := range 3 {
		pb.publish("k/1", fmt.Sprint("away ", i), 1, false, uint16(2+i))
		pb.expect(packets.Puback)
	}
	pb.ping() // delivered (kept) before the client comes back

	c2, ack := dial(t, addr, 4, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "kept"}})
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("CONNACK %#x present %v, want the session present", ack.ReasonCode, ack.SessionPresent)
	}
	want := []string{"in flight", "away 0", "away 1", "away 2"}
	for i, w := range want {
		got := c2.expect(packets.Publish)
		if string(got.Payload) != w || got.FixedHeader.Dup != (i == 0) {
			t.Fatalf("message %d: %q dup %v, want %q dup %v", i, got.Payload, got.FixedHeader.Dup, w, i == 0)
		}
		c2.ack(got)
	}
	c2.none(200 * time.Millisecond)

	// A clean connection drops the session.
	c2.conn.Close()
	c3, ack := dial(t, addr, 4, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "kept", Clean: true}})
	if ack.SessionPresent {
		t.Fatal("a clean connection got the session")
	}
	pb.publish("k/1", "after", 1, false, 9)
	pb.expect(packets.Puback)
	c3.none(200 * time.Millisecond)
}

// expiryHook counts sessions that expired.
type expiryHook struct {
	HookBase
	expired atomic.Int32
}

func (h *expiryHook) OnClientExpired(*Client) { h.expired.Add(1) }

// A kept session ends after its expiry: the client finds none, and the
// hooks are told.
func TestSessionExpiry(t *testing.T) {
	h := &expiryHook{}
	s, addr := startServer(t, Options{MaxSessionExpiry: 1}, h)
	c, ack := dial(t, addr, 5, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "e"},
		Properties: packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true}})
	if ack.Properties.SessionExpiryInterval != 1 {
		t.Errorf("CONNACK session expiry %d, want the server's maximum 1", ack.Properties.SessionExpiryInterval)
	}
	c.subscribe(1, sub("x", 1))
	c.conn.Close()
	waitFor(t, "the session to expire", 5*time.Second, func() bool { return h.expired.Load() == 1 })
	if _, ok := s.Client("e"); ok {
		t.Fatal("the expired client is still known")
	}
	if n := s.Info.Subscriptions.Load(); n != 0 {
		t.Errorf("%d subscriptions left", n)
	}
	_, ack = dial(t, addr, 5, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "e"}})
	if ack.SessionPresent {
		t.Fatal("session present after it expired")
	}
}

// A shared subscription delivers each message to one member of its group.
func TestSharedSubscription(t *testing.T) {
	_, addr := startServer(t, Options{})
	a := connect(t, addr, 5, "a", true)
	b := connect(t, addr, 5, "b", true)
	all := connect(t, addr, 5, "all", true)
	a.subscribe(1, sub("$share/g/s/+", 0))
	b.subscribe(1, sub("$share/g/s/+", 0))
	all.subscribe(1, sub("s/+", 0))
	pb := connect(t, addr, 5, "pub", true)
	const n = 20
	for i := range n {
		pb.publish("s/x", fmt.Sprint(i), 0, false, 0)
	}
	for range n {
		all.expect(packets.Publish)
	}
	count := func(c *rawClient) int {
		k := 0
		for {
			if _, err := c.readErr(300 * time.Millisecond); err != nil {
				return k
			}
			k++
		}
	}
	if got := count(a) + count(b); got != n {
		t.Fatalf("the group got %d messages, want %d", got, n)
	}
}

// MQTT 5 topic aliases: an alias set with its topic stands for it later;
// an unknown alias ends the connection.
func TestTopicAlias(t *testing.T) {
	_, addr := startServer(t, Options{})
	c := connect(t, addr, 5, "c", true)
	c.subscribe(1, sub("alias/#", 0))
	pb := connect(t, addr, 5, "pub", true)
	pb.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "alias/long/topic", Payload: []byte("1"),
		Properties: packets.Properties{TopicAlias: 3, TopicAliasFlag: true}})
	pb.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, Payload: []byte("2"),
		Properties: packets.Properties{TopicAlias: 3, TopicAliasFlag: true}})
	for _, want := range []string{"1", "2"} {
		got := c.expect(packets.Publish)
		if got.TopicName != "alias/long/topic" || string(got.Payload) != want || got.Properties.TopicAliasFlag {
			t.Fatalf("got %+v, want %q on alias/long/topic without an alias", got, want)
		}
	}
	pb.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, Payload: []byte("3"),
		Properties: packets.Properties{TopicAlias: 4, TopicAliasFlag: true}})
	if d := pb.expect(packets.Disconnect); d.ReasonCode != packets.ErrTopicAliasInvalid.Code {
		t.Fatalf("DISCONNECT %#x, want topic alias invalid", d.ReasonCode)
	}
}

// A second connection with a client id takes the session over: the first
// is told (MQTT 5) and closed.
func TestTakeover(t *testing.T) {
	_, addr := startServer(t, Options{})
	first := connect(t, addr, 5, "same", true)
	connect(t, addr, 5, "same", true)
	if d := first.expect(packets.Disconnect); d.ReasonCode != packets.ErrSessionTakenOver.Code {
		t.Fatalf("DISCONNECT %#x, want session taken over", d.ReasonCode)
	}
	if _, err := first.readErr(2 * time.Second); err == nil {
		t.Fatal("the first connection is still open")
	}
}

// A client silent for 1.5 keepalives is disconnected; PINGREQ keeps it.
func TestKeepalive(t *testing.T) {
	_, addr := startServer(t, Options{})
	c, _ := dial(t, addr, 4, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "k", Clean: true, Keepalive: 1}})
	for range 3 {
		time.Sleep(700 * time.Millisecond)
		c.ping()
	}
	start := time.Now()
	if _, err := c.readErr(5 * time.Second); err == nil {
		t.Fatal("got a packet, want the connection closed")
	}
	if d := time.Since(start); d < time.Second || d > 3*time.Second {
		t.Fatalf("closed after %s of silence, want 1.5 s", d)
	}
}

// Past a client's window of messages in flight, messages for it are
// dropped and counted; what it acknowledges makes room again.
func TestWindow(t *testing.T) {
	s, addr := startServer(t, Options{MaxInflight: 2})
	c := connect(t, addr, 5, "slow", true)
	c.subscribe(1, sub("w", 1))
	pb := connect(t, addr, 5, "pub", true)
	for i := range 5 {
		pb.publish("w", fmt.Sprint(i), 1, false, uint16(i+1))
		pb.expect(packets.Puback)
	}
	first := c.expect(packets.Publish)
	c.expect(packets.Publish)
	c.none(200 * time.Millisecond)
	if n := s.Info.InflightDropped.Load(); n != 3 {
		t.Fatalf("dropped %d, want 3", n)
	}
	c.ack(first)
	waitFor(t, "the acknowledgement", 5*time.Second, func() bool { cl, _ := s.Client("slow"); return cl.InflightLen() == 1 })
	pb.publish("w", "room", 1, false, 9)
	pb.expect(packets.Puback)
	if got := c.expect(packets.Publish); string(got.Payload) != "room" {
		t.Fatalf("got %q, want room", got.Payload)
	}
}

// denyHook refuses every topic under "secret/".
type denyHook struct{ HookBase }

func (denyHook) OnACLCheck(_ *Client, topic string, _ bool) bool {
	return len(topic) < 7 || topic[:7] != "secret/"
}

// Refused publishes and subscriptions: MQTT 5 gets reason codes, MQTT
// 3.1.1 a SUBACK failure and, for a QoS 1 publish, the end of its
// connection; nothing is delivered.
func TestRefusals(t *testing.T) {
	_, addr := startServer(t, Options{}, denyHook{})
	w := connect(t, addr, 5, "watcher", true)
	w.subscribe(1, sub("#", 0))

	c5 := connect(t, addr, 5, "c5", true)
	if codes := c5.subscribe(1, sub("secret/x", 1), sub("ok/x", 1)); codes[0] != packets.ErrNotAuthorized.Code || codes[1] != 1 {
		t.Fatalf("SUBACK %v, want [0x87 1]", codes)
	}
	c5.publish("secret/x", "no", 1, false, 1)
	if a := c5.expect(packets.Puback); a.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("PUBACK %#x, want not authorized", a.ReasonCode)
	}
	c4 := connect(t, addr, 4, "c4", true)
	if codes := c4.subscribe(1, sub("secret/x", 1)); codes[0] != 0x80 {
		t.Fatalf("SUBACK %v, want [0x80]", codes)
	}
	c4.publish("secret/x", "no", 1, false, 1)
	if _, err := c4.readErr(2 * time.Second); err == nil {
		t.Fatal("an MQTT 3.1.1 client publishing where it may not got an answer, want its connection closed")
	}
	w.none(300 * time.Millisecond)
}

// The inline client publishes and subscribes in process: once per
// subscription id, whatever filters of it match.
func TestInline(t *testing.T) {
	s, addr := startServer(t, Options{})
	var got atomic.Int32
	h := func(_ *Client, _ packets.Subscription, pk packets.Packet) { got.Add(1) }
	if err := s.Subscribe("in/+", 1, h); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe("in/#", 1, h); err != nil {
		t.Fatal(err)
	}
	c := connect(t, addr, 4, "c", true)
	c.subscribe(1, sub("in/#", 1))
	if err := s.Publish("in/x", []byte("hi"), false, 1); err != nil {
		t.Fatal(err)
	}
	if pk := c.expect(packets.Publish); string(pk.Payload) != "hi" || pk.FixedHeader.Qos != 1 {
		t.Fatalf("got %+v", pk)
	}
	if n := got.Load(); n != 1 {
		t.Fatalf("inline handler called %d times, want 1", n)
	}
	if err := s.Publish("in/+", nil, false, 0); err == nil {
		t.Fatal("published to a filter")
	}
	if err := s.Unsubscribe("in/+", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Unsubscribe("in/+", 1); err == nil {
		t.Fatal("unsubscribed twice")
	}
}

// Nothing larger than an MQTT 5 client's maximum packet size is sent to it.
func TestClientMaximumPacketSize(t *testing.T) {
	s, addr := startServer(t, Options{})
	c, _ := dial(t, addr, 5, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "small", Clean: true},
		Properties: packets.Properties{MaximumPacketSize: 64}})
	c.subscribe(1, sub("m/#", 1), sub("z/#", 0))
	pb := connect(t, addr, 5, "pub", true)
	big := string(make([]byte, 100))
	pb.publish("m/1", big, 1, false, 1)
	pb.publish("z/1", big, 0, false, 0)
	pb.publish("m/1", "fits", 1, false, 2)
	pb.expect(packets.Puback)
	pb.expect(packets.Puback)
	if got := c.expect(packets.Publish); string(got.Payload) != "fits" {
		t.Fatalf("got %d bytes on %s, want \"fits\"", len(got.Payload), got.TopicName)
	}
	c.none(200 * time.Millisecond)
	if n := s.Info.InflightDropped.Load(); n != 1 {
		t.Fatalf("dropped %d QoS 1 messages, want 1", n)
	}
}
