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
// batch: store.Committer), and only then are its replies published and its
// done called (a QoS 1 request is acknowledged to the device then). A
// change that cannot be written or synced is answered with 500 on
// .../rejected and its request refused (not acknowledged); its shadow is
// read back from the store, which may hold it (refused means not known to
// be on disk).
//
// Lock order: mu, then the committer's.
type Shadows struct {
	log      *slog.Logger
	requests *prometheus.CounterVec

	mu     sync.Mutex // guards the fields below
	open   bool
	bucket store.Bucket
	pub    Publisher
	docs   map[shadow.Ref]shadow.Doc
	commit *store.Committer

	// fault, when set (tests), runs before each change is written; an
	// error fails the change's write.
	fault func() error
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

// Open reads the shadows of bucket (of db), and starts answering requests
// through pub.
func (s *Shadows) Open(ctx context.Context, db *store.DB, bucket store.Bucket, pub Publisher) error {
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
	s.bucket, s.pub, s.docs, s.open = bucket, pub, docs, true
	s.commit = store.NewCommitter(db)
	s.commit.Start()
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
	commit := s.commit
	s.mu.Unlock()
	stopped := make(chan struct{})
	go func() { commit.Close(); close(stopped) }()
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
	var (
		accepted, next []byte // next: the record to write (nil: none)
		replies        []reply
	)
	if rerr == nil {
		cur := s.docs[ref]
		var doc shadow.Doc
		switch op {
		case shadow.OpGet:
			accepted, rerr = cur.Get(ref, req.ClientToken, now)
		case shadow.OpDelete:
			doc, accepted, rerr = cur.Delete(ref, req, now)
		case shadow.OpUpdate:
			var r shadow.Replies
			doc, r, rerr = cur.Update(req, now)
			accepted = r.Accepted
			if r.Delta != nil {
				replies = append(replies, reply{ref.Topic(op, "delta"), r.Delta})
			}
			replies = append(replies, reply{ref.Topic(op, "documents"), r.Documents})
		}
		if rerr == nil && op != shadow.OpGet {
			s.docs[ref] = doc
			next = doc.Record()
		}
	}
	result := "accepted"
	if rerr != nil {
		result = strconv.Itoa(rerr.Code)
		replies = nil
		if publish {
			replies = []reply{{ref.Topic(op, "rejected"), shadow.Rejected(rerr, req.ClientToken, now)}}
		}
	} else if publish || op != shadow.OpGet {
		replies = append([]reply{{ref.Topic(op, "accepted"), accepted}}, replies...)
	}
	s.requests.WithLabelValues(string(op), result).Inc()
	var write func(*store.Batch) error
	if next != nil {
		bucket, fault := s.bucket, s.fault
		write = func(b *store.Batch) error {
			if fault != nil {
				if err := fault(); err != nil {
					return err
				}
			}
			return b.Put(bucket, shadowKey(ref), next)
		}
	}
	pub := s.pub
	err := s.commit.Submit(write, func(err error) {
		if err == nil {
			s.publish(pub, replies)
		} else if next != nil {
			s.log.Error("shadow change not written: refused", "shadow", ref.String(), "err", err)
			s.reload(ref)
			s.publish(pub, []reply{{ref.Topic(op, "rejected"), shadow.Rejected(&shadow.Error{Code: 500, Message: "Internal service failure"}, req.ClientToken, time.Now().Unix())}})
		}
		answer(accepted, rerr, err)
	})
	if err != nil {
		answer(nil, nil, fmt.Errorf("shadow %s: %w", ref, ErrShadowsNotReady))
	}
}

func shadowKey(ref shadow.Ref) []byte { return []byte(ref.Thing + "/" + ref.Name) }

// reload puts back in memory what the store holds for a shadow whose
// change was not written.
func (s *Shadows) reload(ref shadow.Ref) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d shadow.Doc
	v, err := s.bucket.Get(shadowKey(ref))
	if err == nil {
		err = json.Unmarshal(v, &d)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("shadow not read back after a failed write", "shadow", ref.String(), "err", err)
	}
	s.docs[ref] = d
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

// Change runs a get, update or delete request (the AWS request document)
// for the admin API and the tasks' host functions, as a device's request
// would: the replies of an accepted update or delete go to MQTT, and it
// returns the accepted payload once it is on disk (a get: once the changes
// queued before it are). A refusal is a *shadow.Error.
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
// history included, in order with the changes queued before it.
func (s *Shadows) Forget(thing string) error {
	s.mu.Lock()
	if !s.open {
		s.mu.Unlock()
		return fmt.Errorf("forget shadows of %q: %w", thing, ErrShadowsNotReady)
	}
	var refs []shadow.Ref
	for ref := range s.docs {
		if ref.Thing == thing {
			refs = append(refs, ref)
			delete(s.docs, ref)
		}
	}
	bucket := s.bucket
	done := make(chan error, 1)
	err := s.commit.Submit(func(b *store.Batch) error {
		for _, ref := range refs {
			if err := b.Delete(bucket, shadowKey(ref)); err != nil {
				return fmt.Errorf("forget shadow %s: %w", ref, err)
			}
		}
		return nil
	}, func(err error) { done <- err })
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return <-done
}
