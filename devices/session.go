package devices

import (
	"log/slog"
	"strings"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// maxLosses is how many connection losses a QoS 1 or 2 publish may be in
// flight for before the client stops sending it again.
const maxLosses = 2

// sessionStore is the client's session store (paho's memory store of the
// messages in flight) with a bound on resending. paho sends every publish
// not yet acknowledged again after a reconnect; a message the broker
// answers by closing the connection (larger than its limit, or refused)
// would be sent on every reconnect and keep the daemon off MQTT. A publish
// that was in flight at maxLosses connection losses is dropped from the
// store instead, logged and counted. (paho keeps the message id of a
// dropped publish taken until the client restarts: one id of 65535 per
// dropped message.)
type sessionStore struct {
	paho.Store
	log     *slog.Logger
	dropped prometheus.Counter

	mu     sync.Mutex
	losses map[string]int // key of an outbound publish in the store → connection losses seen
}

func newSessionStore(log *slog.Logger, dropped prometheus.Counter) *sessionStore {
	return &sessionStore{Store: paho.NewMemoryStore(), log: log, dropped: dropped, losses: make(map[string]int)}
}

func outboundPublish(key string, m packets.ControlPacket) bool {
	_, ok := m.(*packets.PublishPacket)
	return ok && strings.HasPrefix(key, "o.")
}

func (s *sessionStore) Put(key string, m packets.ControlPacket) {
	s.Store.Put(key, m)
	if outboundPublish(key, m) {
		s.mu.Lock()
		s.losses[key] = 0 // a message id is reused for a new message
		s.mu.Unlock()
	}
}

func (s *sessionStore) Del(key string) {
	s.Store.Del(key)
	s.mu.Lock()
	delete(s.losses, key)
	s.mu.Unlock()
}

func (s *sessionStore) Reset() {
	s.Store.Reset()
	s.mu.Lock()
	clear(s.losses)
	s.mu.Unlock()
}

// connectionLost counts a loss against every publish in flight and drops
// those at maxLosses.
func (s *sessionStore) connectionLost() {
	s.mu.Lock()
	var drop []string
	for key := range s.losses {
		s.losses[key]++
		if s.losses[key] >= maxLosses {
			drop = append(drop, key)
			delete(s.losses, key)
		}
	}
	s.mu.Unlock()
	for _, key := range drop {
		topic, size := "", 0
		if p, ok := s.Store.Get(key).(*packets.PublishPacket); ok {
			topic, size = p.TopicName, len(p.Payload)
		}
		s.Store.Del(key)
		s.dropped.Inc()
		s.log.Error("mqtt publish dropped: the connection was lost each time it was in flight; the broker may refuse it (check its message size limit)",
			"topic", topic, "payload_bytes", size, "losses", maxLosses)
	}
}

// PacketSize is the size in bytes of the MQTT 3.1.1 PUBLISH packet that
// carries payloadLen bytes to topic at qos: what a broker's maximum packet
// size is compared with.
func PacketSize(topic string, qos byte, payloadLen int) int {
	remaining := 2 + len(topic) + payloadLen
	if qos > 0 {
		remaining += 2 // packet identifier
	}
	n := 1 + 1 // fixed header byte, one byte of remaining length
	for r := remaining; r >= 128; r >>= 7 {
		n++
	}
	return n + remaining
}
