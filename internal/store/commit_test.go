package store

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

func TestCommitterBatchesAndOrders(t *testing.T) {
	var mu sync.Mutex
	var log []string
	syncs := 0
	block := make(chan struct{})
	c := NewCommitter(func() error { mu.Lock(); syncs++; mu.Unlock(); return nil })
	c.Start()
	var wg sync.WaitGroup
	add := func(name string, write func() error) {
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
	add("a", func() error { <-block; return nil })
	add("b", func() error { return nil })
	add("read", nil)
	add("c", func() error { return nil })
	close(block)
	wg.Wait()
	c.Close()
	if !slices.Equal(log, []string{"a", "b", "read", "c"}) || syncs > 2 {
		t.Errorf("done order %v, %d syncs (want a, b, read, c in at most 2)", log, syncs)
	}
	if err := c.Submit(nil, func(error) { t.Error("done after Close") }); !errors.Is(err, ErrCommitterClosed) {
		t.Errorf("submit after close: %v", err)
	}
}

func TestCommitterFailedBatch(t *testing.T) {
	boom := errors.New("disk full")
	c := NewCommitter(func() error { return boom })
	var got []error
	_ = c.Submit(func() error { return nil }, func(err error) { got = append(got, err) })
	_ = c.Submit(nil, func(err error) { got = append(got, err) })
	c.Close() // never started: Close answers the queue
	if len(got) != 2 || !errors.Is(got[0], boom) || !errors.Is(got[1], boom) {
		t.Errorf("a failed sync answered %v", got)
	}
}
