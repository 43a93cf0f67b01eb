package mqttd

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// encodeAll encodes packets as an MQTT version v client sends them.
func encodeAll(t testing.TB, v byte, pks ...packets.Packet) []byte {
	var out []byte
	for _, pk := range pks {
		if pk.FixedHeader.Type == packets.Connect {
			pk.Connect.ProtocolName = []byte("MQTT")
		}
		b, err := encode(pk, v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

// FuzzServe sends a connection anything after a valid CONNECT (or
// anything at all): the server answers or ends the connection, never
// panics, and goes on serving other clients.
func FuzzServe(f *testing.F) {
	for _, v := range []byte{4, 5} {
		f.Add(v, encodeAll(f, v,
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: packets.Subscriptions{{Filter: "a/#", Qos: 2}, {Filter: "$share/g/b", Qos: 1}}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Retain: true}, TopicName: "a/b", Payload: []byte("x"), PacketID: 2},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 2},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/c", Payload: []byte("y"), PacketID: 3,
				Properties: packets.Properties{TopicAlias: 1, TopicAliasFlag: true}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe}, PacketID: 4, Filters: packets.Subscriptions{{Filter: "a/#"}}},
		))
		f.Add(v, []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}) // a length past 4 bytes
		f.Add(v, []byte{0x82, 0x04, 0x00, 0x01, 0x00, 0x00}) // SUBSCRIBE without a filter
		f.Add(v, []byte{0x10, 0x00})                         // a second CONNECT
	}
	_, addr := startServer(f, Options{MaxPacketSize: 1 << 16, MaxSessionExpiry: 1})
	f.Fuzz(func(t *testing.T, v byte, data []byte) {
		if v != 4 && v != 5 {
			v = 4
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go func() { _, _ = io.Copy(io.Discard, conn) }()
		hello := encodeAll(t, v, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{ClientIdentifier: "fuzz", Clean: true, Keepalive: 5}})
		_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = conn.Write(append(hello, data...))
		// The server still serves: a client connects and is answered.
		c := connect(t, addr, 4, "after", true)
		c.ping()
		c.conn.Close()
	})
}
