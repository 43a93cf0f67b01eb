// Package store owns Outpost's state store: one badger DB under the data
// directory, sized for edge hosts, shared by the subsystems through buckets
// (one key prefix each: calls, tasks, kv, shadows…). It also sizes the
// options of other badger DBs (the telemetry store) so that every DB in the
// daemon is tuned in one place.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/internal/format"
)

// ErrNotFound is returned by Get for a missing key.
var ErrNotFound = errors.New("not found")

// ErrLocked is returned by Open when another process holds the directory.
var ErrLocked = errors.New("in use by another process")

// storeFormat is the state store's format (docs/architecture.md, "Format
// versions"): the layout of the buckets' keys. Subsystems that keep their
// own records version them under their own key (the call journal).
var storeFormat = format.New("state store", 1)

// formatKey holds the state store's format version.
var formatKey = []byte("format/store")

// Options returns badger options for a DB at dir, sized from cfg.
// badger's defaults (64 MiB memtables, 256 MiB block cache, 1 GiB value-log
// files) suit servers, not edge hosts; see "Choices" in docs/architecture.md.
// The options do not sync writes (badger's default): a DB that must keep
// what it acknowledged across a power loss turns SyncWrites on, as Open
// does; the telemetry store and a restore's loader leave it off.
func Options(dir string, cfg Config, log *slog.Logger) badger.Options {
	memtable := int64(cfg.MemtableSize)
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(memtable).
		WithNumMemtables(cfg.NumMemtables).
		WithBlockCacheSize(int64(cfg.BlockCacheSize)).
		WithIndexCacheSize(int64(cfg.BlockCacheSize) / 2).
		WithValueLogFileSize(int64(cfg.ValueLogFileSize)).
		WithNumCompactors(cfg.NumCompactors).
		WithBaseTableSize(memtable / 2).
		WithValueThreshold(min(memtable/8, 1<<20)).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8)
}

// DB is the state store.
type DB struct {
	db       *badger.DB
	log      *slog.Logger
	gcEvery  time.Duration
	stopGC   chan struct{}
	gcDone   sync.WaitGroup
	closeMux sync.Once
}

// Open opens (creating if needed) the badger DB at dir. A directory locked
// by another process is reported as ErrLocked, naming the directory.
//
// Every write is on disk when it returns (badger's SyncWrites): badger's
// writer goroutine syncs the WAL of the memtable each request went into,
// and the value log, before it answers the request. Syncing afterwards
// (badger's DB.Sync) would not do: it syncs only the active memtable's
// WAL, so a write whose memtable another writer filled and rotated in
// between would stay in the page cache until that memtable is flushed.
func Open(dir string, cfg Config, log *slog.Logger) (*DB, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create store dir: %w", err)
	}
	db, err := badger.Open(Options(dir, cfg, log).WithSyncWrites(true))
	if err != nil {
		if strings.Contains(err.Error(), "Another process is using this Badger database") {
			return nil, fmt.Errorf("open store %s: %w (is another outpost running with the same data_dir?)", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if err := storeFormat.OpenBadger(db, formatKey, nil, log); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s := &DB{db: db, log: log, gcEvery: cfg.GCInterval.Std(), stopGC: make(chan struct{})}
	s.gcDone.Add(1)
	go s.gcLoop()
	return s, nil
}

// Badger exposes the underlying DB for subsystems that need transactions
// across buckets. Keys must still start with a bucket prefix.
func (s *DB) Badger() *badger.DB { return s.db }

// Bucket returns the key space of one subsystem. Names are short and fixed
// ("calls", "tasks", "kv"); the prefix is name + "/".
func (s *DB) Bucket(name string) Bucket {
	return Bucket{db: s.db, prefix: []byte(name + "/")}
}

// Close stops value-log GC and closes the DB. It is safe to call twice.
func (s *DB) Close() error {
	var err error
	s.closeMux.Do(func() {
		close(s.stopGC)
		s.gcDone.Wait()
		err = s.db.Close()
	})
	return err
}

func (s *DB) gcLoop() {
	defer s.gcDone.Done()
	t := time.NewTicker(s.gcEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopGC:
			return
		case <-t.C:
			// Rewrite value-log files until one finds too little garbage.
			for s.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

// Bucket is a prefixed key space in the store.
type Bucket struct {
	db     *badger.DB
	prefix []byte
}

func (b Bucket) key(k []byte) []byte {
	out := make([]byte, 0, len(b.prefix)+len(k))
	return append(append(out, b.prefix...), k...)
}

// Get returns a copy of the value at k, or ErrNotFound.
func (b Bucket) Get(k []byte) ([]byte, error) {
	var v []byte
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(b.key(k))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, err
}

// Put stores v at k; it is on disk when Put returns (one sync per call:
// writers that can wait for each other batch through a Committer).
func (b Bucket) Put(k, v []byte) error {
	return b.db.Update(func(txn *badger.Txn) error { return txn.Set(b.key(k), v) })
}

// Write applies the writes fn adds to w in one badger write batch: one
// sync for them all, where each Put or Delete alone is one. If fn fails,
// nothing is written.
func (b Bucket) Write(fn func(w *Batch) error) error { return writeBatch(b.db, fn) }

// Delete removes k; a missing key is not an error.
func (b Bucket) Delete(k []byte) error {
	return b.db.Update(func(txn *badger.Txn) error { return txn.Delete(b.key(k)) })
}

// Scan calls fn for every key with the given prefix in key order, with the
// bucket prefix removed. k and v are valid only during the call.
func (b Bucket) Scan(ctx context.Context, prefix []byte, fn func(k, v []byte) error) error {
	return b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		p := b.key(prefix)
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			err := item.Value(func(v []byte) error {
				return fn(item.Key()[len(b.prefix):], v)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// badgerLogger sends badger's log lines to slog; its info chatter goes to debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Debugf(f string, a ...any) {
	b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
