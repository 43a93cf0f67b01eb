package devices

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/outpost-edge/outpost/internal/store"
)

// BenchmarkShadowUpdates measures shadow updates a second through the
// service with the real state store: each of 256 devices sends updates of
// its reported state one after another (as a device waiting for its
// accepted reply does), every one on disk (group commit) before its
// replies; the publisher discards them. Reported: updates/s, and updates
// per commit (the batches the group commit made: one badger transaction,
// one WAL sync, each).
func BenchmarkShadowUpdates(b *testing.B) {
	db, err := store.Open(b.TempDir(), store.Defaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s := NewShadows(nil, nil)
	if err := s.Open(context.Background(), db, db.Bucket("shadows"), discard{}); err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	const devices = 256
	b.ResetTimer()
	before := db.Badger().MaxVersion()
	var wg sync.WaitGroup
	per := b.N/devices + 1
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("$aws/things/d%d/shadow/update", d)
			done := make(chan error, 1)
			for i := range per {
				s.Request(topic, fmt.Appendf(nil, `{"state":{"reported":{"temp":%d,"led":"on"}}}`, i), func(err error) { done <- err })
				if err := <-done; err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*devices)/b.Elapsed().Seconds(), "updates/s")
	b.ReportMetric(float64(per*devices)/float64(max(1, db.Badger().MaxVersion()-before)), "updates/commit")
}

type discard struct{}

func (discard) Publish(context.Context, string, byte, []byte) error { return nil }
