package calls

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/outpost-edge/outpost/internal/store"
)

// BenchmarkJournalWrite is the cost of one durable journal write (what
// Accept waits for) with 16 concurrent writers: group commit beside one
// fsync per write, its baseline.
//
//	go test -run XXX -bench JournalWrite -benchtime 2000x ./coordinator/calls
func BenchmarkJournalWrite(b *testing.B) {
	for _, mode := range []struct {
		name     string
		syncEach bool
	}{{"group_commit", false}, {"fsync_each", true}} {
		b.Run(mode.name, func(b *testing.B) {
			db, err := store.Open(b.TempDir(), store.Defaults(), quietLog)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			j := openJournal(b, db, JournalOptions{SyncEach: mode.syncEach}, nil, nil)
			defer j.Close()
			val := make([]byte, 200)
			var n atomic.Int64
			b.SetParallelism(8) // 8 × GOMAXPROCS writers
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := fmt.Appendf(nil, "calls/r/bench-%d", n.Add(1))
					if err := j.commit(true, kv{key: k, val: val}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkDurableCall runs tiny calls through Accept, the scheduler and
// the journal's STARTED and FINISHED writes, beside the same calls through
// the scheduler alone (no journal), its baseline.
//
//	go test -run XXX -bench DurableCall -benchtime 5000x ./coordinator/calls
func BenchmarkDurableCall(b *testing.B) {
	run := func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK, Output: c.Input} }
	b.Run("journaled", func(b *testing.B) {
		r := newRig(b, b.TempDir(), run)
		b.ResetTimer()
		const batch = 64
		for i := 0; i < b.N; i += batch {
			n := min(batch, b.N-i)
			cs := make([]*Call, n)
			for k := range cs {
				cs[k] = cloudCall(fmt.Sprintf("b%d", i+k), Idempotent)
			}
			if _, err := r.d.Accept(cs); err != nil {
				b.Fatal(err)
			}
		}
		for range b.N {
			<-r.got
		}
	})
	b.Run("scheduler_only", func(b *testing.B) {
		s := NewScheduler(newFake(map[string]int{"t": 4}, run), Options{Workers: 4, QueueSize: 1 << 20}, nil, nil)
		done := make(chan struct{}, b.N)
		b.ResetTimer()
		for range b.N {
			c := New("t", []byte("x"), Source{Kind: "cloud"})
			c.Done = func(*Call) { done <- struct{}{} }
			if err := s.Submit(c); err != nil {
				b.Fatal(err)
			}
		}
		for range b.N {
			<-done
		}
		b.StopTimer()
		_ = s.Drain(context.Background())
	})
}
