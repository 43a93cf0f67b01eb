package store

import (
	"errors"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// ErrCommitterClosed: a write submitted after Close.
var ErrCommitterClosed = errors.New("store committer closed")

// Committer writes in batches with one Sync each (group commit): each
// submitted write runs on the committer's goroutine in submission order,
// adding to one badger write batch; the batch is written, then synced
// once; then each done is called in order with nil, or with the batch's
// first error (the batch is then not known to be on disk, and its writes
// may or may not be there).
//
// Lock order: mu only.
type Committer struct {
	db   *DB
	sync func() error

	mu      sync.Mutex // guards the fields below
	queue   []commitItem
	wake    chan struct{}
	stopped chan struct{}
	started bool
	closed  bool
}

type commitItem struct {
	write func(*Batch) error // nil: nothing to write (only ordered behind the writes before it)
	done  func(error)
}

// Batch collects the writes of one commit.
type Batch struct{ wb *badger.WriteBatch }

// Put stores v at k of bucket b.
func (w *Batch) Put(b Bucket, k, v []byte) error { return w.wb.Set(b.key(k), v) }

// Delete removes k of bucket b.
func (w *Batch) Delete(b Bucket, k []byte) error { return w.wb.Delete(b.key(k)) }

// NewCommitter returns a committer writing to db and making each batch
// durable with sync (db.Sync; a test may fail it); Start runs it.
func NewCommitter(db *DB, sync func() error) *Committer {
	return &Committer{db: db, sync: sync, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
}

// Start runs the committer's goroutine.
func (c *Committer) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started && !c.closed {
		c.started = true
		go c.loop()
	}
}

// Submit queues a write (nil: none) and its done, which is called from the
// committer's goroutine. After Close it returns ErrCommitterClosed and
// done is never called.
func (c *Committer) Submit(write func(*Batch) error, done func(error)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrCommitterClosed
	}
	c.queue = append(c.queue, commitItem{write, done})
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// Close commits what is queued and stops; it waits for that. Safe twice
// and without Start.
func (c *Committer) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.stopped
		return
	}
	c.closed = true
	started := c.started
	close(c.wake)
	c.mu.Unlock()
	if !started {
		c.commit() // nothing runs the queue: answer it here
		close(c.stopped)
	}
	<-c.stopped
}

func (c *Committer) loop() {
	defer close(c.stopped)
	for range c.wake {
		c.commit()
	}
	c.commit()
}

// commit writes and syncs what is queued, batch after batch, until the
// queue is empty.
func (c *Committer) commit() {
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		c.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		var err error
		wb := &Batch{wb: c.db.db.NewWriteBatch()}
		wrote := false
		for _, it := range batch {
			if it.write == nil || err != nil {
				continue
			}
			wrote = true
			err = it.write(wb)
		}
		switch {
		case err != nil || !wrote:
			wb.wb.Cancel()
		default:
			if err = wb.wb.Flush(); err == nil {
				err = c.sync()
			}
		}
		for _, it := range batch {
			it.done(err)
		}
	}
}
