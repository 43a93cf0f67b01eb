package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/outpost-edge/outpost/devices/shadow"
	"github.com/outpost-edge/outpost/internal/store"
)

// published records what the shadow service publishes.
type published struct {
	mu   sync.Mutex
	msgs []string // "TOPIC PAYLOAD"
}

func (p *published) Publish(_ context.Context, topic string, _ byte, payload []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, topic+" "+string(payload))
	return nil
}

func (p *published) all() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.msgs, "\n")
}

// A change whose write fails is refused (not acknowledged) and answered
// with 500; the shadow in memory is what the store holds (the write may
// have reached it: refused means not known to be on disk); the next change
// that is written survives a reopen.
func TestShadowsWriteFailure(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Defaults(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	failing := false
	pub := &published{}
	s := NewShadows(testLogger(t), nil)
	s.fault = func() error {
		if failing {
			return errors.New("disk full")
		}
		return nil
	}
	if err := s.Open(context.Background(), db, db.Bucket("shadows"), pub); err != nil {
		t.Fatal(err)
	}
	request := func(payload string) error {
		done := make(chan error, 1)
		if !s.Request("$aws/things/d1/shadow/update", []byte(payload), func(err error) { done <- err }) {
			t.Fatal("not a shadow request")
		}
		return <-done
	}
	if err := request(`{"state":{"reported":{"v":1}}}`); err != nil {
		t.Fatal(err)
	}
	failing = true
	if err := request(`{"state":{"reported":{"v":2}},"clientToken":"t2"}`); err == nil {
		t.Fatal("a change that was not written was acknowledged")
	}
	if !strings.Contains(pub.all(), `$aws/things/d1/shadow/update/rejected {"code":500,"message":"Internal service failure"`) {
		t.Errorf("no 500 on rejected:\n%s", pub.all())
	}
	raw, _ := db.Bucket("shadows").Get([]byte("d1/"))
	held, err := s.Get(shadow.Ref{Thing: "d1"})
	if err != nil || !strings.Contains(string(raw), fmt.Sprintf(`"version":%d`, held.Version)) {
		t.Errorf("after the failed write the shadow is %+v, %v; the store holds %s", held, err, raw)
	}
	failing = false
	if err := request(`{"state":{"reported":{"v":3}}}`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.Request("$aws/things/d1/shadow/get", nil, func(err error) {
		if !errors.Is(err, ErrShadowsNotReady) {
			t.Errorf("request after close: %v", err)
		}
	}) != true {
		t.Error("a shadow topic was not recognized after close")
	}
	s2 := NewShadows(testLogger(t), nil)
	if err := s2.Open(context.Background(), db, db.Bucket("shadows"), pub); err != nil {
		t.Fatal(err)
	}
	defer s2.Close(context.Background())
	want := held.Version + 1 // the change written after the failure
	if d, err := s2.Get(shadow.Ref{Thing: "d1"}); err != nil || d.Version != want || string(mustMarshal(t, d.State.Reported)) != `{"v":3}` {
		t.Errorf("after reopen: %+v, %v (want version %d)", d, err, want)
	}
	if got := s2.List("d1"); len(got) != 1 || got[0].Version != want {
		t.Errorf("list: %+v", got)
	}
	if err := s2.Forget("d1"); err != nil || len(s2.List("d1")) != 0 {
		t.Errorf("forget: %v, %+v", err, s2.List("d1"))
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Concurrent updates of many things are written in shared batches (fewer
// badger transactions, so WAL syncs, than updates), each acknowledged only
// once the store holds it, and every one is in the store when it is opened
// again.
func TestShadowsConcurrentUpdatesDurable(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(dir, store.Defaults(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	before := db.Badger().MaxVersion()
	pub := &published{}
	s := NewShadows(testLogger(t), nil)
	if err := s.Open(context.Background(), db, db.Bucket("shadows"), pub); err != nil {
		t.Fatal(err)
	}
	const things, updates = 200, 5
	var wg sync.WaitGroup
	for i := range things {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("$aws/things/t%d/shadow/update", i)
			for u := 1; u <= updates; u++ {
				done := make(chan error, 1)
				s.Request(topic, fmt.Appendf(nil, `{"state":{"reported":{"n":%d}}}`, u), func(err error) {
					if err == nil {
						err = storedVersion(db, fmt.Sprintf("t%d/", i), int64(u))
					}
					done <- err
				})
				if err := <-done; err != nil {
					t.Errorf("t%d update %d: %v", i, u, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := db.Badger().MaxVersion() - before; n >= things*updates {
		t.Errorf("%d transactions for %d updates: not batched", n, things*updates)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = store.Open(dir, store.Defaults(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s2 := NewShadows(testLogger(t), nil)
	if err := s2.Open(context.Background(), db, db.Bucket("shadows"), pub); err != nil {
		t.Fatal(err)
	}
	defer s2.Close(context.Background())
	for i := range things {
		d, err := s2.Get(shadow.Ref{Thing: fmt.Sprintf("t%d", i)})
		if err != nil || d.Version != updates || string(mustMarshal(t, d.State.Reported)) != fmt.Sprintf(`{"n":%d}`, updates) {
			t.Errorf("t%d after reopen: %+v, %v", i, d, err)
		}
	}
}

// Two updates naming the same version of a shadow at the same time: one is
// accepted, the other refused with 409, every round; the version counts
// the accepted ones only.
func TestShadowsConcurrentVersionConflict(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Defaults(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := NewShadows(testLogger(t), nil)
	if err := s.Open(context.Background(), db, db.Bucket("shadows"), &published{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx := context.Background()
	ref := shadow.Ref{Thing: "lamp"}
	if _, err := s.Change(ctx, ref, shadow.OpUpdate, []byte(`{"state":{"desired":{"on":false}}}`)); err != nil {
		t.Fatal(err)
	}
	const rounds = 50
	for round := range rounds {
		version := int64(round + 1)
		errs := make(chan error, 2)
		for w := range 2 {
			go func() {
				_, err := s.Change(ctx, ref, shadow.OpUpdate, fmt.Appendf(nil, `{"state":{"desired":{"on":%t}},"version":%d}`, w == 0, version))
				errs <- err
			}()
		}
		accepted, conflicts := 0, 0
		for range 2 {
			var se *shadow.Error
			switch err := <-errs; {
			case err == nil:
				accepted++
			case errors.As(err, &se) && se.Code == 409:
				conflicts++
			default:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if accepted != 1 || conflicts != 1 {
			t.Fatalf("round %d (version %d): %d accepted, %d conflicts", round, version, accepted, conflicts)
		}
	}
	if d, err := s.Get(ref); err != nil || d.Version != rounds+1 {
		t.Errorf("after %d rounds: version %d, %v (want %d)", rounds, d.Version, err, rounds+1)
	}
}

// storedVersion reports whether the store holds version want (or later) of
// the shadow at key.
func storedVersion(db *store.DB, key string, want int64) error {
	raw, err := db.Bucket("shadows").Get([]byte(key))
	if err != nil {
		return fmt.Errorf("acknowledged, not in the store: %w", err)
	}
	var d shadow.Doc
	if err := json.Unmarshal(raw, &d); err != nil {
		return err
	}
	if d.Version < want {
		return fmt.Errorf("acknowledged version %d, the store holds %d", want, d.Version)
	}
	return nil
}
