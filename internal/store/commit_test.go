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

// The writes that wait behind one another go in one batch: one badger
// transaction (one commit timestamp, MaxVersion), so one sync of the WAL.
func TestCommitterBatchesAndOrders(t *testing.T) {
	var mu sync.Mutex
	var log []string
	block := make(chan struct{})
	db := openTestDB(t)
	bk := db.Bucket("t")
	before := db.Badger().MaxVersion()
	c := NewCommitter(db)
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
	if txns := db.Badger().MaxVersion() - before; !slices.Equal(log, []string{"a", "b", "read", "c"}) || txns > 2 {
		t.Errorf("done order %v, %d transactions (want a, b, read, c in at most 2)", log, txns)
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

// A write that fails fails its whole batch: every done in it gets the
// error, and nothing of the batch is written.
func TestCommitterFailedBatch(t *testing.T) {
	boom := errors.New("value too large")
	db := openTestDB(t)
	bk := db.Bucket("t")
	c := NewCommitter(db)
	var got []error
	_ = c.Submit(func(b *Batch) error { return b.Put(bk, []byte("k"), []byte("v")) }, func(err error) { got = append(got, err) })
	_ = c.Submit(func(*Batch) error { return boom }, func(err error) { got = append(got, err) })
	_ = c.Submit(nil, func(err error) { got = append(got, err) })
	c.Close() // never started: Close answers the queue
	if len(got) != 3 || !errors.Is(got[0], boom) || !errors.Is(got[1], boom) || !errors.Is(got[2], boom) {
		t.Errorf("a failed batch answered %v", got)
	}
	if _, err := bk.Get([]byte("k")); !errors.Is(err, ErrNotFound) {
		t.Errorf("a write of the failed batch: %v (want not found)", err)
	}
}

// A done that takes time does not hold up the batches behind it: they are
// written meanwhile, and their dones still come after it, in order.
func TestCommitterSlowDoneDoesNotHoldCommits(t *testing.T) {
	db := openTestDB(t)
	bk := db.Bucket("t")
	c := NewCommitter(db)
	c.Start()
	defer c.Close()
	put := func(k string) func(*Batch) error {
		return func(b *Batch) error { return b.Put(bk, []byte(k), []byte(k)) }
	}
	release := make(chan struct{})
	answering := make(chan struct{})
	order := make(chan string, 2)
	if err := c.Submit(put("a"), func(err error) { close(answering); <-release; order <- "a" }); err != nil {
		t.Fatal(err)
	}
	<-answering // a's batch is on disk; its done now blocks
	if err := c.Submit(put("b"), func(err error) { order <- "b" }); err != nil {
		t.Fatal(err)
	}
	// b's batch is written while a's done still runs.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := bk.Get([]byte("b")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the batch behind a blocked done was not committed")
		}
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
}
