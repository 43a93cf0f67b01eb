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

// A change whose sync fails is refused (not acknowledged) and answered
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
	sync := func() error {
		if failing {
			return errors.New("disk full")
		}
		return db.Sync()
	}
	pub := &published{}
	s := NewShadows(testLogger(t), nil)
	if err := s.Open(context.Background(), db, db.Bucket("shadows"), sync, pub); err != nil {
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
		t.Fatal("a change that was not synced was acknowledged")
	}
	if !strings.Contains(pub.all(), `$aws/things/d1/shadow/update/rejected {"code":500,"message":"Internal service failure"`) {
		t.Errorf("no 500 on rejected:\n%s", pub.all())
	}
	raw, _ := db.Bucket("shadows").Get([]byte("d1/"))
	if d, err := s.Get(shadow.Ref{Thing: "d1"}); err != nil || !strings.Contains(string(raw), fmt.Sprintf(`"version":%d`, d.Version)) {
		t.Errorf("after the failed write the shadow is %+v, %v; the store holds %s", d, err, raw)
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
	if err := s2.Open(context.Background(), db, db.Bucket("shadows"), db.Sync, pub); err != nil {
		t.Fatal(err)
	}
	defer s2.Close(context.Background())
	if d, err := s2.Get(shadow.Ref{Thing: "d1"}); err != nil || d.Version != 3 || string(mustMarshal(t, d.State.Reported)) != `{"v":3}` {
		t.Errorf("after reopen: %+v, %v", d, err)
	}
	if got := s2.List("d1"); len(got) != 1 || got[0].Version != 3 {
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
