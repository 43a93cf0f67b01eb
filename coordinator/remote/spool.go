package remote

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/xid"

	"github.com/outpost-edge/outpost/internal/store"
)

// Device messages to the cloud (docs/cloud-link.md "Device messages"):
// messages matched by a route with the cloud target are written to an
// on-disk spool (bucket "cloudmsgs" of the state store) before they are
// acknowledged, and uploaded in batches over the link, oldest first. The
// spool has a byte cap: a message that does not fit is refused (not
// acknowledged, counted, logged), never one already taken. An upload
// that fails is retried until the control plane stores the batch; a
// message is removed from the spool only then. Each carries an id unique
// to the node, by which the control plane drops a repeated upload (a
// kill -9 between its answer and the removal), so every accepted message
// is stored there once.

// ErrSpoolFull: the spool holds its cap; the message is refused.
var ErrSpoolFull = errors.New("cloud message spool full")

// Message is one device message on its way to the control plane.
type Message struct {
	ID      string    `json:"id"` // unique to the node (an xid)
	Topic   string    `json:"topic"`
	Payload []byte    `json:"payload"`
	QoS     byte      `json:"qos"`
	Time    time.Time `json:"time"` // when the node took it (wall clock, for people)
}

// size is what a message counts against the spool's cap.
func (m Message) size() int64 { return int64(len(m.Topic) + len(m.Payload) + len(m.ID) + 64) }

// NewMessage is a message taken now, with a new id.
func NewMessage(topic string, payload []byte, qos byte) Message {
	return Message{ID: xid.New().String(), Topic: topic, Payload: payload, QoS: qos, Time: time.Now().UTC()}
}

// spooled is a message with its key in the spool.
type spooled struct {
	seq uint64
	Message
}

// Spool is the node's on-disk queue of device messages for the cloud.
//
// Lock order: mu, then the committer's.
type Spool struct {
	log *slog.Logger
	max int64
	m   spoolMetrics

	mu     sync.Mutex // guards the fields below
	bucket store.Bucket
	commit *store.Committer
	next   uint64 // key of the next message
	count  int
	bytes  int64 // taken (written or being written) and not removed
	open   bool
	notify func() // tells the uploader there is something to send
}

type spoolMetrics struct {
	messages, bytes prometheus.Gauge
	refused         prometheus.Counter
	uploaded        prometheus.Counter
}

// NewSpool returns a closed spool of at most maxBytes; Open loads it. reg
// may be nil.
func NewSpool(maxBytes int64, log *slog.Logger, reg prometheus.Registerer) *Spool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := spoolMetrics{
		messages: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_cloud_messages_spooled", Help: "Device messages in the spool, waiting for upload to the cloud."}),
		bytes:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_cloud_messages_spool_bytes", Help: "Bytes of device messages in the spool (counted against cloud.messages_max_bytes)."}),
		refused:  prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cloud_messages_refused_total", Help: "Device messages for the cloud refused because the spool was full (or could not be written): not acknowledged."}),
		uploaded: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cloud_messages_uploaded_total", Help: "Device messages the control plane stored (repeats it dropped included)."}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.bytes, m.refused, m.uploaded)
	}
	return &Spool{log: log.With("part", "cloud-messages"), max: maxBytes, m: m, notify: func() {}}
}

// Open reads the spool's totals from bucket (of db) and starts taking
// messages.
func (s *Spool) Open(ctx context.Context, db *store.DB, bucket store.Bucket) error {
	var next uint64
	count, bytes := 0, int64(0)
	err := bucket.Scan(ctx, nil, func(k, v []byte) error {
		var m Message
		if len(k) != 8 {
			return fmt.Errorf("spooled message key %x: not 8 bytes", k)
		}
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("spooled message %x: %w", k, err)
		}
		next = binary.BigEndian.Uint64(k) + 1
		count++
		bytes += m.size()
		return nil
	})
	if err != nil {
		return fmt.Errorf("open cloud message spool: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bucket, s.next, s.count, s.bytes, s.open = bucket, next, count, bytes, true
	s.commit = store.NewCommitter(db)
	s.commit.Start()
	s.gauges()
	if count > 0 {
		s.log.Info("cloud message spool loaded", "messages", count, "bytes", bytes)
	}
	return nil
}

// SetNotify sets what Append calls once a message is on disk (the
// uploader's wake-up). Call before Open.
func (s *Spool) SetNotify(f func()) { s.notify = f }

// Close writes what is queued and stops taking messages. Safe twice and
// without Open.
func (s *Spool) Close() {
	s.mu.Lock()
	commit := s.commit
	s.open = false
	s.mu.Unlock()
	if commit != nil {
		commit.Close()
	}
}

func (s *Spool) gauges() {
	s.m.messages.Set(float64(s.count))
	s.m.bytes.Set(float64(s.bytes))
}

// Append takes msgs: it returns ErrSpoolFull at once when they do not fit
// the cap (nothing is taken), else writes them and calls done once they
// are on disk (nil) or could not be (an error: they are not in the spool).
func (s *Spool) Append(msgs []Message, done func(error)) error {
	var size int64
	for _, m := range msgs {
		size += m.size()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.open {
		s.m.refused.Add(float64(len(msgs)))
		return fmt.Errorf("cloud message spool: %w", ErrStopped)
	}
	if s.bytes+size > s.max {
		s.m.refused.Add(float64(len(msgs)))
		return fmt.Errorf("%w: %d bytes held, cap %d (cloud.messages_max_bytes)", ErrSpoolFull, s.bytes, s.max)
	}
	first := s.next
	s.next += uint64(len(msgs))
	s.count += len(msgs)
	s.bytes += size
	s.gauges()
	bucket := s.bucket
	write := func(b *store.Batch) error {
		for i, m := range msgs {
			v, err := json.Marshal(m)
			if err != nil {
				return err
			}
			if err := b.Put(bucket, spoolKey(first+uint64(i)), v); err != nil {
				return err
			}
		}
		return nil
	}
	return s.commit.Submit(write, func(err error) {
		if err != nil {
			s.m.refused.Add(float64(len(msgs)))
			s.forget(first, len(msgs), size)
		} else {
			s.notify()
		}
		done(err)
	})
}

// ErrStopped: the spool is closed.
var ErrStopped = errors.New("stopped")

// forget takes back n messages from first that were not written.
func (s *Spool) forget(first uint64, n int, size int64) {
	_ = s.bucket.Write(func(w *store.Batch) error { // a half-written batch
		for i := range n {
			if err := w.Delete(s.bucket, spoolKey(first+uint64(i))); err != nil {
				return err
			}
		}
		return nil
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count -= n
	s.bytes -= size
	s.gauges()
}

func spoolKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// peek returns the oldest messages, at most max of them and about
// maxBytes of payload (at least one).
func (s *Spool) peek(max int, maxBytes int) ([]spooled, error) {
	s.mu.Lock()
	bucket, open := s.bucket, s.open
	s.mu.Unlock()
	if !open {
		return nil, nil
	}
	var out []spooled
	total := 0
	stop := errors.New("enough")
	err := bucket.Scan(context.Background(), nil, func(k, v []byte) error {
		var m Message
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("spooled message %x: %w", k, err)
		}
		if len(out) > 0 && total+len(m.Payload) > maxBytes {
			return stop
		}
		out = append(out, spooled{seq: binary.BigEndian.Uint64(k), Message: m})
		total += len(m.Payload)
		if len(out) == max {
			return stop
		}
		return nil
	})
	if err != nil && !errors.Is(err, stop) {
		return nil, err
	}
	return out, nil
}

// remove deletes messages the control plane stored.
func (s *Spool) remove(msgs []spooled) error {
	var size int64
	err := s.bucket.Write(func(w *store.Batch) error { // one sync for them all
		for _, m := range msgs {
			if err := w.Delete(s.bucket, spoolKey(m.seq)); err != nil {
				return err
			}
			size += m.size()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove uploaded messages: %w", err)
	}
	s.m.uploaded.Add(float64(len(msgs)))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count -= len(msgs)
	s.bytes -= size
	s.gauges()
	return nil
}

// Len is the number of messages and bytes in the spool.
func (s *Spool) Len() (int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, s.bytes
}
