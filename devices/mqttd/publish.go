package mqttd

import (
	"errors"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/devices/topic"
)

// processPublish handles a PUBLISH from cl: the access check, the hooks,
// the acknowledgement, the retained message and the delivery.
func (s *Server) processPublish(cl *Client, pk packets.Packet) error {
	if !cl.Inline {
		if code := pk.PublishValidate(s.opts.TopicAliasMaximum); code != packets.CodeSuccess {
			return s.refuse(cl, code)
		}
		if pk.Properties.TopicAliasFlag && pk.Properties.TopicAlias > 0 {
			if pk.TopicName != "" {
				if cl.aliases == nil {
					cl.aliases = map[uint16]string{}
				}
				cl.aliases[pk.Properties.TopicAlias] = pk.TopicName
			} else if pk.TopicName = cl.aliases[pk.Properties.TopicAlias]; pk.TopicName == "" {
				return s.refuse(cl, packets.ErrTopicAliasInvalid)
			}
			pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
		}
		if topic.CheckName(pk.TopicName) != nil {
			return s.refuse(cl, packets.ErrTopicNameInvalid)
		}
		if !s.hooks.acl(cl, pk.TopicName, true) {
			switch {
			case pk.FixedHeader.Qos == 0:
				return nil
			case cl.Version < 5:
				// MQTT 3.1.1 has no way to refuse a message but to end the connection.
				_ = s.DisconnectClient(cl, packets.ErrNotAuthorized)
				return packets.ErrNotAuthorized
			}
			return cl.WritePacket(ack(pk, packets.ErrNotAuthorized))
		}
		if pk.FixedHeader.Qos == 2 && s.received2(cl, pk.PacketID) {
			return cl.WritePacket(ack(pk, packets.CodeSuccess)) // a resent QoS 2 message: delivered once
		}
	}
	pk.Origin, pk.Created = cl.ID, time.Now().Unix()
	pk, err := s.hooks.publish(cl, pk)
	ignore := false
	switch {
	case err == nil:
	case errors.Is(err, packets.ErrRejectPacket):
		return nil
	case errors.Is(err, packets.CodeSuccessIgnore):
		ignore = true
	default:
		var code packets.Code
		if cl.Version == 5 && pk.FixedHeader.Qos > 0 && errors.As(err, &code) {
			return cl.WritePacket(ack(pk, code))
		}
	}
	return s.accept(cl, pk, ignore)
}

// InjectPacket handles pk as if cl had sent it now, past the hooks: a
// message an OnPublish hook held back (packets.ErrRejectPacket) is so
// acknowledged and delivered once the hook made it safe.
func (s *Server) InjectPacket(cl *Client, pk packets.Packet) error {
	if cl.Closed() {
		return errors.New("inject packet: client " + cl.ID + " is gone")
	}
	return s.accept(cl, pk, false)
}

// accept acknowledges, retains and delivers a message cl published (not
// ignore: the hooks let it through).
func (s *Server) accept(cl *Client, pk packets.Packet, ignore bool) error {
	if pk.FixedHeader.Retain && !ignore {
		s.retain(pk)
	}
	if pk.FixedHeader.Qos > 0 && !cl.Inline {
		if pk.FixedHeader.Qos == 2 {
			cl.mu.Lock()
			if cl.sess.inbound2 == nil {
				cl.sess.inbound2 = map[uint16]struct{}{}
			}
			cl.sess.inbound2[pk.PacketID] = struct{}{}
			cl.mu.Unlock()
		}
		if err := cl.WritePacket(ack(pk, packets.CodeSuccess)); err != nil {
			return err
		}
	}
	if !ignore {
		s.route(cl, pk)
	}
	return nil
}

// received2 reports whether the QoS 2 message id of cl was received and
// not released yet.
func (s *Server) received2(cl *Client, id uint16) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	_, ok := cl.sess.inbound2[id]
	return ok
}

// ack is the acknowledgement of a QoS 1 (PUBACK) or 2 (PUBREC) message
// with code; a refusal carries its reason (MQTT 5).
func ack(pk packets.Packet, code packets.Code) packets.Packet {
	t := packets.Puback
	if pk.FixedHeader.Qos == 2 {
		t = packets.Pubrec
	}
	a := packets.Packet{FixedHeader: packets.FixedHeader{Type: t}, PacketID: pk.PacketID, ReasonCode: code.Code}
	if code.Code >= packets.ErrUnspecifiedError.Code {
		a.Properties.ReasonString = code.Reason
	}
	return a
}

// retain keeps pk as its topic's retained message (an empty payload
// drops it).
func (s *Server) retain(pk packets.Packet) {
	pk.FixedHeader.Dup = false
	s.Info.Retained.Add(int64(s.retained.set(pk)))
}

// route delivers a message from (a client or the inline client) to the
// subscriptions its topic matches: every client's, one member's of each
// shared group, and the inline ones.
func (s *Server) route(from *Client, pk packets.Packet) {
	m := s.topics.match(pk.TopicName)
	for id, sub := range m.subs {
		if cl, ok := s.Client(id); ok {
			s.deliver(from, cl, sub, pk, false)
		}
	}
	for _, members := range m.shared {
		s.deliverShared(from, members, pk)
	}
	for _, in := range m.inline {
		in.h(s.inline, in.sub, pk)
	}
}

// deliverShared delivers pk to one member of a shared subscription group:
// one connected, if any (members are tried in a random order).
func (s *Server) deliverShared(from *Client, members map[string]packets.Subscription, pk packets.Packet) {
	var kept *Client
	var keptSub packets.Subscription
	for id, sub := range members {
		cl, ok := s.Client(id)
		if !ok {
			continue
		}
		if !cl.Closed() {
			s.deliver(from, cl, sub, pk, false)
			return
		}
		if kept == nil {
			kept, keptSub = cl, sub
		}
	}
	if kept != nil {
		s.deliver(from, kept, keptSub, pk, false)
	}
}

// deliver sends pk to cl for its subscription sub; retained marks a
// retained message sent because cl subscribed.
func (s *Server) deliver(from, cl *Client, sub packets.Subscription, pk packets.Packet, retained bool) {
	if sub.NoLocal && from.ID == cl.ID {
		return
	}
	if !s.hooks.acl(cl, pk.TopicName, false) {
		return
	}
	out := pk
	out.FixedHeader.Qos = min(pk.FixedHeader.Qos, sub.Qos)
	out.FixedHeader.Retain = retained || (pk.FixedHeader.Retain && sub.RetainAsPublished)
	out.FixedHeader.Dup = false
	out.PacketID = 0
	if cl.Version == 5 {
		out.Properties.SubscriptionIdentifier = subscriptionIDs(sub)
	}
	if out.FixedHeader.Qos == 0 {
		if cl.Closed() {
			return // QoS 0 is not kept for a client away
		}
		b, err := encode(out, cl.Version)
		if err != nil || (cl.maxPacket > 0 && uint32(len(b)) > cl.maxPacket) {
			return
		}
		if !cl.enqueue(b, false) {
			s.dropped(cl, out)
			return
		}
		s.Info.MessagesSent.Add(1)
		return
	}
	// A client's window holds what is in flight to it and, while it is
	// away, what waits for it; past it a message for it is dropped.
	cl.mu.Lock()
	ok := len(cl.sess.inflight)+len(cl.sess.pending) < cl.window()
	if ok {
		if cl.Closed() {
			cl.sess.pending = append(cl.sess.pending, out)
		} else {
			ok = cl.sendLocked(out)
		}
	}
	cl.mu.Unlock()
	if !ok {
		s.Info.InflightDropped.Add(1)
		return
	}
	s.Info.MessagesSent.Add(1)
	s.hooks.each(func(h Hook) { h.OnQosPublish(cl, out) })
}

// dropped counts and reports a message cl had no room for.
func (s *Server) dropped(cl *Client, pk packets.Packet) {
	s.hooks.each(func(h Hook) { h.OnPublishDropped(cl, pk) })
}

// subscriptionIDs returns the subscription identifiers of sub (merged from
// every subscription of the client the topic matched).
func subscriptionIDs(sub packets.Subscription) []int {
	var ids []int
	for _, id := range sub.Identifiers {
		if id > 0 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 && sub.Identifier > 0 {
		ids = append(ids, sub.Identifier)
	}
	return ids
}

// processAck handles PUBACK, PUBREC and PUBCOMP for messages sent to cl,
// and PUBREL for a QoS 2 message cl sent.
func (s *Server) processAck(cl *Client, pk packets.Packet) {
	if pk.FixedHeader.Type == packets.Pubrel {
		cl.mu.Lock()
		delete(cl.sess.inbound2, pk.PacketID)
		cl.mu.Unlock()
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
		return
	}
	cl.mu.Lock()
	m, ok := cl.sess.inflight[pk.PacketID]
	done := false
	switch {
	case !ok:
	case pk.FixedHeader.Type == packets.Pubrec && !m.pubrel && pk.ReasonCode < packets.ErrUnspecifiedError.Code:
		m.pubrel = true
		cl.writeLocked(pubrel(pk.PacketID))
	case pk.FixedHeader.Type == packets.Puback && m.pk.FixedHeader.Qos == 1,
		pk.FixedHeader.Type == packets.Pubrec && !m.pubrel, // refused by an MQTT 5 client
		pk.FixedHeader.Type == packets.Pubcomp && m.pubrel:
		delete(cl.sess.inflight, pk.PacketID)
		s.Info.Inflight.Add(-1)
		done = true
		cl.promoteLocked()
	}
	cl.mu.Unlock()
	if done {
		s.hooks.each(func(h Hook) { h.OnQosComplete(cl, m.pk) })
	}
}

// processSubscribe handles a SUBSCRIBE: each filter checked and
// subscribed, the SUBACK, then the retained messages.
func (s *Server) processSubscribe(cl *Client, pk packets.Packet) error {
	if code := pk.SubscribeValidate(); code != packets.CodeSuccess {
		return s.refuse(cl, code)
	}
	pk = s.hooks.subscribe(cl, pk)
	codes := make([]byte, len(pk.Filters))
	type sendRetained struct {
		sub packets.Subscription
		pks []packets.Packet
	}
	var toSend []sendRetained
	for i, sub := range pk.Filters {
		group, filter := splitShare(sub.Filter)
		switch {
		case topic.CheckFilter(filter) != nil || (sub.Filter != filter && group == ""):
			codes[i] = refusal(cl, packets.ErrTopicFilterInvalid)
		case !s.hooks.acl(cl, sub.Filter, false):
			codes[i] = refusal(cl, packets.ErrNotAuthorized)
		default:
			codes[i] = sub.Qos
			isNew := s.topics.subscribe(cl.ID, sub)
			if isNew {
				s.Info.Subscriptions.Add(1)
			}
			cl.mu.Lock()
			cl.sess.subs.set(sub.Filter, struct{}{})
			cl.mu.Unlock()
			if group == "" && (sub.RetainHandling == 0 || (sub.RetainHandling == 1 && isNew)) {
				if pks := s.retained.matching(filter); len(pks) > 0 {
					toSend = append(toSend, sendRetained{sub, pks})
				}
			}
		}
	}
	err := cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: pk.PacketID, ReasonCodes: codes})
	for _, r := range toSend {
		for _, rpk := range r.pks {
			s.deliver(s.inline, cl, r.sub, rpk, true)
		}
	}
	s.hooks.each(func(h Hook) { h.OnSubscribed(cl, pk, codes) })
	return err
}

// refusal is the SUBACK code of a refused filter: MQTT 3.1.1 has one.
func refusal(cl *Client, code packets.Code) byte {
	if cl.Version < 5 {
		return packets.ErrUnspecifiedError.Code // 0x80, "failure"
	}
	return code.Code
}

// processUnsubscribe handles an UNSUBSCRIBE.
func (s *Server) processUnsubscribe(cl *Client, pk packets.Packet) error {
	if code := pk.UnsubscribeValidate(); code != packets.CodeSuccess {
		return s.refuse(cl, code)
	}
	codes := make([]byte, len(pk.Filters))
	for i, sub := range pk.Filters {
		cl.mu.Lock()
		cl.sess.subs.del(sub.Filter)
		cl.mu.Unlock()
		if s.topics.unsubscribe(cl.ID, sub.Filter) {
			s.Info.Subscriptions.Add(-1)
		} else {
			codes[i] = packets.CodeNoSubscriptionExisted.Code
		}
	}
	return cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsuback}, PacketID: pk.PacketID, ReasonCodes: codes})
}
