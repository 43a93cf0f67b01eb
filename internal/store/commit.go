package store

import (
	"errors"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// ErrCommitterClosed: a write submitted after Close.
var ErrCommitterClosed = errors.New("store committer closed")

// Committer writes in batches with one sync each (group commit): each
// submitted write runs on the committer's goroutine in submission order,
// adding to one badger write batch; the batch is written (on disk when
// that returns: the store syncs every write, see Open), then each done is
// called in order with nil, or with the batch's first error (the batch is
// then not known to be on disk, and its writes may or may not be there).
// One batch is one badger transaction, so one sync of the WAL, where as
// many separate writes would be synced one after another.
//
// The dones run on a goroutine of their own, batch after batch in order,
// while the next batch is written and synced: a done that takes time
// (the shadow service publishes its replies there) does not hold up the
// commits behind it. At most answerBacklog batches wait for their dones;
// past that the committer waits too.
//
// Lock order: mu only.
type Committer struct {
	db *DB

	mu      sync.Mutex // guards the fields below
	queue   []commitItem
	wake    chan struct{}
	stopped chan struct{}
	started bool
	closed  bool
}

// answerBacklog bounds the committed batches waiting for their dones.
const answerBacklog = 2

// committed is a batch written and synced, or that failed (err).
type committed struct {
	items []commitItem
	err   error
}

// answer calls the batch's dones in order.
func (b committed) answer() {
	for _, it := range b.items {
		it.done(b.err)
	}
}

type commitItem struct {
	write func(*Batch) error // nil: nothing to write (only ordered behind the writes before it)
	done  func(error)
}

// Batch collects the writes of one commit.
type Batch struct{ wb *badger.WriteBatch }

// writeBatch writes what fn adds to a Batch as one badger write batch (one
// transaction unless it outgrows badger's batch size), or nothing if fn
// fails.
func writeBatch(db *badger.DB, fn func(*Batch) error) error {
	w := &Batch{wb: db.NewWriteBatch()}
	if err := fn(w); err != nil {
		w.wb.Cancel()
		return err
	}
	return w.wb.Flush()
}

// Put stores v at k of bucket b.
func (w *Batch) Put(b Bucket, k, v []byte) error { return w.wb.Set(b.key(k), v) }

// Delete removes k of bucket b.
func (w *Batch) Delete(b Bucket, k []byte) error { return w.wb.Delete(b.key(k)) }

// NewCommitter returns a committer writing to db; Start runs it.
func NewCommitter(db *DB) *Committer {
	return &Committer{db: db, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
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
		c.commit(committed.answer) // nothing runs the queue: answer it here
		close(c.stopped)
	}
	<-c.stopped
}

// loop commits until Close, handing each batch to the goroutine that
// calls its dones; it stops once that one has answered every batch.
func (c *Committer) loop() {
	answers := make(chan committed, answerBacklog)
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		for b := range answers {
			b.answer()
		}
	}()
	send := func(b committed) { answers <- b }
	for range c.wake {
		c.commit(send)
	}
	c.commit(send)
	close(answers)
	<-answered
	close(c.stopped)
}

// commit writes what is queued, batch after batch, until the queue is
// empty, and passes each batch to answer once it is on disk (or failed).
func (c *Committer) commit(answer func(committed)) {
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		c.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		err := writeBatch(c.db.db, func(w *Batch) error {
			for _, it := range batch {
				if it.write != nil {
					if err := it.write(w); err != nil {
						return err
					}
				}
			}
			return nil
		})
		answer(committed{batch, err})
	}
}
