package store

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

func openTestDB(t *testing.T) *DB {
	t.Helper()
	db, err := Open(t.TempDir(), Defaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestCommitterBatchesAndOrders(t *testing.T) {
	var mu sync.Mutex
	var log []string
	syncs := 0
	block := make(chan struct{})
	db := openTestDB(t)
	bk := db.Bucket("t")
	c := NewCommitter(db, func() error { mu.Lock(); syncs++; mu.Unlock(); return db.Sync() })
	c.Start()
	var wg sync.WaitGroup
	add := func(name string, write func(*Batch) error) {
		wg.Add(1)
		if err := c.Submit(write, func(err error) {
			mu.Lock()
			log = append(log, name)
			mu.Unlock()
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The first write holds the goroutine: the next ones pile up into one batch.
	put := func(k string) func(*Batch) error {
		return func(b *Batch) error { return b.Put(bk, []byte(k), []byte(k)) }
	}
	add("a", func(b *Batch) error { <-block; return put("a")(b) })
	add("b", put("b"))
	add("read", nil)
	add("c", put("c"))
	close(block)
	wg.Wait()
	c.Close()
	if !slices.Equal(log, []string{"a", "b", "read", "c"}) || syncs > 2 {
		t.Errorf("done order %v, %d syncs (want a, b, read, c in at most 2)", log, syncs)
	}
	for _, k := range []string{"a", "b", "c"} {
		if v, err := bk.Get([]byte(k)); err != nil || string(v) != k {
			t.Errorf("%s: %q %v", k, v, err)
		}
	}
	if err := c.Submit(nil, func(error) { t.Error("done after Close") }); !errors.Is(err, ErrCommitterClosed) {
		t.Errorf("submit after close: %v", err)
	}
}

func TestCommitterFailedBatch(t *testing.T) {
	boom := errors.New("disk full")
	db := openTestDB(t)
	c := NewCommitter(db, func() error { return boom })
	var got []error
	_ = c.Submit(func(b *Batch) error { return b.Put(db.Bucket("t"), []byte("k"), nil) }, func(err error) { got = append(got, err) })
	_ = c.Submit(nil, func(err error) { got = append(got, err) })
	c.Close() // never started: Close answers the queue
	if len(got) != 2 || !errors.Is(got[0], boom) || !errors.Is(got[1], boom) {
		t.Errorf("a failed sync answered %v", got)
	}
}

// A done that takes time does not hold up the batches behind it: they are
// written and synced meanwhile, and their dones still come after it, in
// order.
func TestCommitterSlowDoneDoesNotHoldCommits(t *testing.T) {
	db := openTestDB(t)
	bk := db.Bucket("t")
	var mu sync.Mutex
	syncs := 0
	synced := make(chan struct{}, 8)
	c := NewCommitter(db, func() error {
		err := db.Sync()
		mu.Lock()
		syncs++
		mu.Unlock()
		synced <- struct{}{}
		return err
	})
	c.Start()
	defer c.Close()
	put := func(k string) func(*Batch) error {
		return func(b *Batch) error { return b.Put(bk, []byte(k), []byte(k)) }
	}
	release := make(chan struct{})
	order := make(chan string, 2)
	if err := c.Submit(put("a"), func(err error) { <-release; order <- "a" }); err != nil {
		t.Fatal(err)
	}
	<-synced // a's batch is on disk; its done now blocks
	if err := c.Submit(put("b"), func(err error) { order <- "b" }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-synced: // b's batch was written and synced while a's done still ran
	case <-time.After(10 * time.Second):
		t.Fatal("the batch behind a blocked done was not committed")
	}
	select {
	case got := <-order:
		t.Fatalf("%s answered before a's done returned", got)
	default:
	}
	close(release)
	if first, second := <-order, <-order; first != "a" || second != "b" {
		t.Errorf("dones in order %s, %s (want a, b)", first, second)
	}
	mu.Lock()
	defer mu.Unlock()
	if syncs != 2 {
		t.Errorf("%d syncs for two batches", syncs)
	}
}
