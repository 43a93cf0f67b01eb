package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/devices/shadow"
	"github.com/outpost-edge/outpost/internal/store"
)

// Publisher sends the shadow service's replies: the daemon's MQTT client.
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, payload []byte) error
}

// ErrShadowsNotReady: a shadow request came before the service opened or
// after it closed; it is not acknowledged (the device sends it again).
var ErrShadowsNotReady = errors.New("shadow service not running")

// Shadows is the local shadow service: it answers the AWS IoT shadow
// requests ($aws/things/{id}/shadow/get|update|delete, classic and named)
// on their reply topics, and the admin API's reads and writes. Shadows are
// kept in the state store (bucket "shadows", key {thing}/{name}, the
// classic shadow's name empty) and in memory.
//
// A request is applied in memory at once, in arrival order; its record is
// written and synced with those of the requests around it (one fsync a
// batch: group commit), and only then are its replies published and its
// done called (a QoS 1 request is acknowledged to the device then). A
// batch that cannot be written is answered with 500, its shadows read
// back from the store, and its requests refused (not acknowledged).
//
// Lock order: mu only.
type Shadows struct {
	log      *slog.Logger
	requests *prometheus.CounterVec

	mu      sync.Mutex // guards the fields below
	open    bool
	bucket  store.Bucket
	sync    func() error
	pub     Publisher
	docs    map[shadow.Ref]shadow.Doc
	queue   []*shadowWrite
	wake    chan struct{}
	stopped chan struct{}
}

// shadowWrite is one applied request waiting for its batch's fsync.
type shadowWrite struct {
	ref     shadow.Ref
	op      shadow.Op
	token   string      // the request's clientToken
	doc     *shadow.Doc // the record to write; nil: nothing (a read or a refusal)
	replies []reply
	done    func(error)
}

type reply struct {
	topic   string
	payload []byte
}

// replyTimeout bounds the publication of one reply.
const replyTimeout = 5 * time.Second

var shadowRequestsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "outpost_devices_shadow_requests_total",
	Help: "Shadow requests (MQTT and admin API), by operation (get, update, delete) and result (accepted, or the AWS error code: 400, 404, 409, 413, 500).",
}, []string{"op", "result"})

// NewShadows returns a closed service; Open loads it. reg may be nil.
func NewShadows(log *slog.Logger, reg prometheus.Registerer) *Shadows {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "shadows")
	return &Shadows{log: log, requests: register(reg, log, shadowRequestsVec), docs: map[shadow.Ref]shadow.Doc{}}
}

// Open reads the shadows of bucket, and starts answering requests through
// pub; sync makes the bucket's writes durable (the state store's Sync).
func (s *Shadows) Open(ctx context.Context, bucket store.Bucket, sync func() error, pub Publisher) error {
	docs := map[shadow.Ref]shadow.Doc{}
	err := bucket.Scan(ctx, nil, func(k, v []byte) error {
		thing, name, _ := strings.Cut(string(k), "/")
		var d shadow.Doc
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("shadow %q: %w", k, err)
		}
		docs[shadow.Ref{Thing: thing, Name: name}] = d
		return nil
	})
	if err != nil {
		return fmt.Errorf("load shadows: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bucket, s.sync, s.pub, s.docs, s.open = bucket, sync, pub, docs, true
	s.wake, s.stopped = make(chan struct{}, 1), make(chan struct{})
	go s.commitLoop(s.wake, s.stopped)
	s.log.Info("shadows loaded", "shadows", len(docs))
	return nil
}

// Close answers what is queued and stops. It is safe without Open and
// twice.
func (s *Shadows) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.open {
		s.mu.Unlock()
		return nil
	}
	s.open = false
	close(s.wake)
	stopped := s.stopped
	s.mu.Unlock()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop shadows: %w", ctx.Err())
	}
}

// Request serves a message on topic if it is a shadow request (it reports
// false otherwise, and done is not called). done, when not nil, is called
// once the request is answered: nil when its outcome (accepted or
// rejected) is on disk and published, an error when it is not, so the
// message must not be acknowledged. payload is not kept.
func (s *Shadows) Request(topic string, payload []byte, done func(error)) bool {
	ref, op, ok := shadow.ParseTopic(topic)
	if !ok {
		return false
	}
	if done == nil {
		done = func(error) {}
	}
	s.apply(ref, op, payload, true, func(_ []byte, _ *shadow.Error, err error) { done(err) })
	return true
}

// apply runs one request. publish says whether its replies go to MQTT
// (always for accepted updates and deletes: devices must hear of them;
// the admin API's gets and refusals are answered to their caller only).
// answer gets the accepted payload, or the refusal, or a storage error.
func (s *Shadows) apply(ref shadow.Ref, op shadow.Op, payload []byte, publish bool, answer func([]byte, *shadow.Error, error)) {
	now := time.Now().Unix()
	req, rerr := shadow.ParseRequest(op, payload)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.open {
		answer(nil, nil, fmt.Errorf("shadow %s: %w", ref, ErrShadowsNotReady))
		return
	}
	w := &shadowWrite{ref: ref, op: op, token: req.ClientToken}
	var accepted []byte
	if rerr == nil {
		cur := s.docs[ref]
		switch op {
		case shadow.OpGet:
			accepted, rerr = cur.Get(ref, req.ClientToken, now)
		case shadow.OpDelete:
			var next shadow.Doc
			next, accepted, rerr = cur.Delete(ref, req, now)
			if rerr == nil {
				s.docs[ref], w.doc = next, &next
			}
		case shadow.OpUpdate:
			var next shadow.Doc
			var r shadow.Replies
			next, r, rerr = cur.Update(req, now)
			if rerr == nil {
				s.docs[ref], w.doc = next, &next
				accepted = r.Accepted
				if r.Delta != nil {
					w.replies = append(w.replies, reply{ref.Topic(op, "delta"), r.Delta})
				}
				w.replies = append(w.replies, reply{ref.Topic(op, "documents"), r.Documents})
			}
		}
	}
	result := "accepted"
	if rerr != nil {
		result = strconv.Itoa(rerr.Code)
		if publish {
			w.replies = []reply{{ref.Topic(op, "rejected"), shadow.Rejected(rerr, req.ClientToken, now)}}
		}
	} else if publish || op != shadow.OpGet {
		w.replies = append([]reply{{ref.Topic(op, "accepted"), accepted}}, w.replies...)
	}
	s.requests.WithLabelValues(string(op), result).Inc()
	w.done = func(err error) { answer(accepted, rerr, err) }
	s.queue = append(s.queue, w)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// commitLoop writes what is queued, one fsync a batch, then publishes its
// replies and calls its dones, in order. It ends when wake is closed and
// the queue is empty.
func (s *Shadows) commitLoop(wake chan struct{}, stopped chan struct{}) {
	defer close(stopped)
	for {
		_, ok := <-wake
		for {
			s.mu.Lock()
			batch := s.queue
			s.queue = nil
			bucket, sync, pub := s.bucket, s.sync, s.pub
			s.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			err := s.write(bucket, sync, batch)
			if err != nil {
				s.log.Error("shadow updates not written: refused", "requests", len(batch), "err", err)
				s.reload(bucket, batch)
			}
			for _, w := range batch {
				if err == nil {
					s.publish(pub, w.replies)
				} else if w.doc != nil {
					s.publish(pub, []reply{{w.ref.Topic(w.op, "rejected"), shadow.Rejected(&shadow.Error{Code: 500, Message: "Internal service failure"}, w.token, time.Now().Unix())}})
				}
				w.done(err)
			}
		}
		if !ok {
			return
		}
	}
}

func shadowKey(ref shadow.Ref) []byte { return []byte(ref.Thing + "/" + ref.Name) }

func (s *Shadows) write(bucket store.Bucket, sync func() error, batch []*shadowWrite) error {
	n := 0
	for _, w := range batch {
		if w.doc == nil {
			continue
		}
		v, err := json.Marshal(*w.doc)
		if err != nil {
			return fmt.Errorf("encode shadow %s: %w", w.ref, err)
		}
		if err := bucket.Put(shadowKey(w.ref), v); err != nil {
			return fmt.Errorf("write shadow %s: %w", w.ref, err)
		}
		n++
	}
	if n == 0 {
		return nil
	}
	return sync()
}

// reload puts back in memory what the store holds for the shadows of a
// batch that failed.
func (s *Shadows) reload(bucket store.Bucket, batch []*shadowWrite) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range batch {
		if w.doc == nil {
			continue
		}
		var d shadow.Doc
		v, err := bucket.Get(shadowKey(w.ref))
		if err == nil {
			err = json.Unmarshal(v, &d)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("shadow not read back after a failed write", "shadow", w.ref.String(), "err", err)
		}
		s.docs[w.ref] = d
	}
}

func (s *Shadows) publish(pub Publisher, replies []reply) {
	for _, r := range replies {
		ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
		if err := pub.Publish(ctx, r.topic, 1, r.payload); err != nil {
			s.log.Warn("shadow reply not published", "topic", r.topic, "err", err)
		}
		cancel()
	}
}

// ShadowInfo lists one shadow of a device.
type ShadowInfo struct {
	Name      string `json:"name"` // "" for the classic shadow
	Version   int64  `json:"version"`
	Timestamp int64  `json:"timestamp"`
}

// List returns the existing shadows of thing, the classic one first.
func (s *Shadows) List(thing string) []ShadowInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ShadowInfo
	for ref, d := range s.docs {
		if ref.Thing == thing && d.Exists {
			out = append(out, ShadowInfo{Name: ref.Name, Version: d.Version, Timestamp: d.Timestamp})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns a shadow's document (with its delta); a *shadow.Error 404
// when it does not exist.
func (s *Shadows) Get(ref shadow.Ref) (shadow.Document, error) {
	if !shadow.ValidRef(ref) {
		return shadow.Document{}, &shadow.Error{Code: 400, Message: fmt.Sprintf("invalid shadow %q: a device id, and a name of 1 to 64 of [a-zA-Z0-9:_-]", ref.String())}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.docs[ref]
	if !d.Exists {
		return shadow.Document{}, &shadow.Error{Code: 404, Message: fmt.Sprintf("No shadow exists with name: '%s'", ref)}
	}
	return d.Document(), nil
}

// Change runs an update or a delete request (the AWS request document)
// for the admin API, as a device's request would: its replies go to MQTT,
// and it returns the accepted payload once it is on disk. A refusal is a
// *shadow.Error.
func (s *Shadows) Change(ctx context.Context, ref shadow.Ref, op shadow.Op, payload []byte) ([]byte, error) {
	if !shadow.ValidRef(ref) {
		return nil, &shadow.Error{Code: 400, Message: fmt.Sprintf("invalid shadow %q: a device id, and a name of 1 to 64 of [a-zA-Z0-9:_-]", ref.String())}
	}
	type outcome struct {
		b   []byte
		err error
	}
	ch := make(chan outcome, 1)
	s.apply(ref, op, payload, false, func(b []byte, rerr *shadow.Error, err error) {
		if rerr != nil {
			err = rerr
		}
		ch <- outcome{b, err}
	})
	select {
	case o := <-ch:
		return o.b, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Forget deletes every shadow of thing (its device was removed), version
// history included.
func (s *Shadows) Forget(thing string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.open {
		return fmt.Errorf("forget shadows of %q: %w", thing, ErrShadowsNotReady)
	}
	for ref := range s.docs {
		if ref.Thing != thing {
			continue
		}
		if err := s.bucket.Delete(shadowKey(ref)); err != nil {
			return fmt.Errorf("forget shadow %s: %w", ref, err)
		}
		delete(s.docs, ref)
	}
	return s.sync()
}
