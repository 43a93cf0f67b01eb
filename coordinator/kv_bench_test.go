package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/outpost-edge/outpost/internal/store"
)

// BenchmarkKVPut is the cost of one task kv put (what a guest's kv.put
// waits for) in the real state store, 16 writers putting distinct keys of
// 200 bytes.
//
//	go test -run XXX -bench KVPut -benchtime 2000x ./coordinator/
func BenchmarkKVPut(b *testing.B) {
	db, err := store.Open(b.TempDir(), store.Defaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	c := store.NewCommitter(db)
	c.Start()
	defer c.Close()
	kv := storeKV{db: db, commit: c, space: &kvSpace{}, task: "bench", log: slog.New(slog.DiscardHandler)}
	val := make([]byte, 200)
	var n atomic.Int64
	b.SetParallelism(8) // 8 × GOMAXPROCS writers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := kv.Put(context.Background(), fmt.Appendf(nil, "k%d", n.Add(1)), val, 1<<30); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
