package mqttd

import "github.com/mochi-mqtt/server/v2/packets"

// Hook is told of, and decides, what happens on the server. Hooks run in
// the order they were added; embed HookBase for the methods a hook does
// not need. Unless said otherwise a method runs on the goroutine of the
// client's connection, and must not block for long: that client's next
// packets are not read meanwhile.
type Hook interface {
	// OnConnectAuthenticate decides whether a client may connect; every
	// hook must accept it. A refused client gets CONNACK "bad username or
	// password" (MQTT 3.1.1: "not authorized").
	OnConnectAuthenticate(cl *Client, pk packets.Packet) bool
	// OnACLCheck decides a publish to topic (write), a subscription to a
	// filter, or the delivery of a message on topic to cl; every hook must
	// allow it. It is not asked for the inline client.
	OnACLCheck(cl *Client, topic string, write bool) bool
	// OnSessionEstablished is told a client got its CONNACK.
	OnSessionEstablished(cl *Client, pk packets.Packet)
	// OnDisconnect is told a connection that got its CONNACK ended, and
	// why; expire is true when its session ends with it.
	OnDisconnect(cl *Client, err error, expire bool)
	// OnClientExpired is told the kept session of a disconnected client
	// expired.
	OnClientExpired(cl *Client)
	// OnPublish may change or refuse a message a client published, before
	// it is acknowledged, retained or delivered: packets.ErrRejectPacket
	// drops it unacknowledged (the hook then owns the answer, see
	// Server.InjectPacket), packets.CodeSuccessIgnore acknowledges it
	// without delivering it, and another packets.Code answers an MQTT 5
	// QoS 1/2 message with that code and its Reason as the reason string,
	// without delivering it.
	OnPublish(cl *Client, pk packets.Packet) (packets.Packet, error)
	// OnSubscribe may change a SUBSCRIBE before it is handled;
	// OnSubscribed is told its reason codes.
	OnSubscribe(cl *Client, pk packets.Packet) packets.Packet
	OnSubscribed(cl *Client, pk packets.Packet, codes []byte)
	// OnQosPublish is told a QoS 1/2 message was sent or queued to cl,
	// OnQosComplete that cl acknowledged one, OnQosDropped that one was
	// dropped from its session. They may run on any goroutine.
	OnQosPublish(cl *Client, pk packets.Packet)
	OnQosComplete(cl *Client, pk packets.Packet)
	OnQosDropped(cl *Client, pk packets.Packet)
	// OnPublishDropped is told a message for cl was dropped because its
	// queue of pending writes was full.
	OnPublishDropped(cl *Client, pk packets.Packet)
}

// HookBase allows everything and ignores every event.
type HookBase struct{}

func (HookBase) OnConnectAuthenticate(*Client, packets.Packet) bool { return true }
func (HookBase) OnACLCheck(*Client, string, bool) bool              { return true }
func (HookBase) OnSessionEstablished(*Client, packets.Packet)       {}
func (HookBase) OnDisconnect(*Client, error, bool)                  {}
func (HookBase) OnClientExpired(*Client)                            {}
func (HookBase) OnPublish(_ *Client, pk packets.Packet) (packets.Packet, error) {
	return pk, nil
}
func (HookBase) OnSubscribe(_ *Client, pk packets.Packet) packets.Packet { return pk }
func (HookBase) OnSubscribed(*Client, packets.Packet, []byte)            {}
func (HookBase) OnQosPublish(*Client, packets.Packet)                    {}
func (HookBase) OnQosComplete(*Client, packets.Packet)                   {}
func (HookBase) OnQosDropped(*Client, packets.Packet)                    {}
func (HookBase) OnPublishDropped(*Client, packets.Packet)                {}

var _ Hook = HookBase{}

// hooks is the server's hooks, called in order.
type hooks []Hook

func (hs hooks) authenticate(cl *Client, pk packets.Packet) bool {
	for _, h := range hs {
		if !h.OnConnectAuthenticate(cl, pk) {
			return false
		}
	}
	return true
}

func (hs hooks) acl(cl *Client, topic string, write bool) bool {
	if cl.Inline {
		return true
	}
	for _, h := range hs {
		if !h.OnACLCheck(cl, topic, write) {
			return false
		}
	}
	return true
}

func (hs hooks) publish(cl *Client, pk packets.Packet) (packets.Packet, error) {
	for _, h := range hs {
		var err error
		if pk, err = h.OnPublish(cl, pk); err != nil {
			return pk, err
		}
	}
	return pk, nil
}

func (hs hooks) subscribe(cl *Client, pk packets.Packet) packets.Packet {
	for _, h := range hs {
		pk = h.OnSubscribe(cl, pk)
	}
	return pk
}

func (hs hooks) each(f func(Hook)) {
	for _, h := range hs {
		f(h)
	}
}
