package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/internal/store"
	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// Errors of a task's kv namespace that reach the guest (as failed). The
// store's own error text stays in the daemon's log.
var errKVStore = errors.New("state store failure (see the daemon log)")

// kvSpaces keeps the size of each task's kv namespace in memory, so that
// the quota check of a write reads no shared key. A namespace's size is
// counted from its entries the first time it is used after the daemon
// starts, so it is right after any crash.
type kvSpaces struct {
	mu     sync.Mutex
	spaces map[string]*kvSpace
}

func (k *kvSpaces) space(task string) *kvSpace {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.spaces[task]
	if !ok {
		if k.spaces == nil {
			k.spaces = make(map[string]*kvSpace)
		}
		s = &kvSpace{}
		k.spaces[task] = s
	}
	return s
}

// kvSpace is the size of one namespace: the sum of len(key)+len(value) of
// its committed entries plus what writes not yet committed have reserved.
// A write reserves its growth before it commits and gives it back if the
// commit fails; a shrink is counted once committed. So size is never below
// the namespace's true size, and the quota is never passed.
type kvSpace struct {
	mu     sync.Mutex
	loaded bool
	size   uint64
	// keys serializes the read-modify-write of each key (by a stripe of
	// its hash): writers of one key in this process wait for each other
	// instead of failing each other's commits, which under load could
	// run out of retries.
	keys [16]sync.Mutex
}

var kvSeed = maphash.MakeSeed()

// keyLock is the lock of key's stripe.
func (s *kvSpace) keyLock(key []byte) *sync.Mutex {
	return &s.keys[maphash.Bytes(kvSeed, key)%uint64(len(s.keys))]
}

// storeKV is one task's kv namespace in the state store: bucket "kv", key
// "<task>/<key>". A put or delete is on disk when it returns: it goes
// through the coordinator's kv committer, so puts and deletes of all tasks
// that arrive together share one write batch and one sync (the store syncs
// every write).
type storeKV struct {
	db     *store.DB
	commit *store.Committer
	space  *kvSpace
	task   string
	log    *slog.Logger
}

// kvBucket is the state store's bucket of the task kv namespaces.
const kvBucket = "kv"

// key is k's key in the state store: "kv/<task>/<k>".
func (s storeKV) key(k []byte) []byte {
	return append([]byte(kvBucket+"/"+s.task+"/"), k...)
}

// storeErr logs a store error of op and returns what the guest is told.
func (s storeKV) storeErr(op string, err error) error {
	if err == nil || errors.Is(err, outpostrt.ErrNotFound) || errors.Is(err, outpostrt.ErrQuota) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	s.log.Error("kv store failure", "task", s.task, "op", op, "err", err)
	return errKVStore
}

func (s storeKV) Get(_ context.Context, key []byte) ([]byte, error) {
	var v []byte
	err := s.db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(s.key(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return outpostrt.ErrNotFound
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, s.storeErr("get", err)
}

// load counts the namespace's size from its entries, once per daemon run.
// Called with s.space.mu held.
func (s storeKV) load() error {
	if s.space.loaded {
		return nil
	}
	var size uint64
	ns := s.key(nil)
	err := s.db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: ns})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n, err := entrySize(it.Item(), len(ns))
			if err != nil {
				return err
			}
			size += n
		}
		return nil
	})
	if err != nil {
		return err
	}
	// A daemon before this one kept the size in a key of its own.
	if err := s.db.Badger().Update(func(txn *badger.Txn) error { return txn.Delete([]byte("kvsize/" + s.task)) }); err != nil {
		return err
	}
	s.space.size, s.space.loaded = size, true
	return nil
}

// entrySize is what an entry counts for: its key (without the namespace
// prefix of nsLen bytes) plus its value's exact length.
func entrySize(item *badger.Item, nsLen int) (uint64, error) {
	n := uint64(len(item.Key()) - nsLen)
	err := item.Value(func(v []byte) error { n += uint64(len(v)); return nil })
	return n, err
}

// reserve counts delta bytes (negative: a shrink, counted only after its
// commit) against quota and returns the growth reserved.
func (s storeKV) reserve(delta int64, quota uint64) (uint64, error) {
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	if err := s.load(); err != nil {
		return 0, err
	}
	size := s.space.size
	next := size - min(size, uint64(max(-delta, 0))) + uint64(max(delta, 0))
	if next > quota {
		return 0, fmt.Errorf("%w: %d bytes used of %d, this write adds %d", outpostrt.ErrQuota, size, quota, delta)
	}
	grow := uint64(max(delta, 0))
	s.space.size += grow
	return grow, nil
}

// release takes n bytes off the namespace's size.
func (s storeKV) release(n uint64) {
	s.space.mu.Lock()
	s.space.size -= min(n, s.space.size)
	s.space.mu.Unlock()
}

// write runs one read-modify-write of key: fn gets the entry's old size
// and returns the change of the namespace's size (the entry's new size
// minus its old one) and the write (nil: none). Writes of one key wait for
// each other (the key's stripe lock, held until the write is on disk), and
// only storeKV writes kv keys, so the size read is still the entry's when
// the write lands.
func (s storeKV) write(key []byte, fn func(old uint64) (int64, func(*store.Batch) error), quota uint64) error {
	l := s.space.keyLock(key)
	l.Lock()
	defer l.Unlock()
	old := uint64(0)
	err := s.db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(s.key(key))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			return nil
		case err != nil:
			return err
		}
		old, err = entrySize(item, len(s.key(nil)))
		return err
	})
	if err != nil {
		return err
	}
	delta, w := fn(old)
	if w == nil {
		return nil
	}
	grown, err := s.reserve(delta, quota)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	if err := s.commit.Submit(w, func(err error) { done <- err }); err != nil {
		s.release(grown)
		return err
	}
	if err := <-done; err != nil {
		s.release(grown)
		return err
	}
	if delta < 0 {
		s.release(uint64(-delta))
	}
	return nil
}

// bucketKey is key's place in the kv bucket: its store key without the
// bucket's prefix.
func (s storeKV) bucketKey(key []byte) []byte {
	return s.key(key)[len(kvBucket)+1:]
}

func (s storeKV) Put(_ context.Context, key, value []byte, quota uint64) error {
	kv := s.db.Bucket(kvBucket)
	err := s.write(key, func(old uint64) (int64, func(*store.Batch) error) {
		return int64(len(key)+len(value)) - int64(old), func(b *store.Batch) error { return b.Put(kv, s.bucketKey(key), value) }
	}, quota)
	return s.storeErr("put", err)
}

func (s storeKV) Delete(_ context.Context, key []byte) error {
	kv := s.db.Bucket(kvBucket)
	err := s.write(key, func(old uint64) (int64, func(*store.Batch) error) {
		if old == 0 {
			return 0, nil
		}
		return -int64(old), func(b *store.Batch) error { return b.Delete(kv, s.bucketKey(key)) }
	}, ^uint64(0))
	return s.storeErr("delete", err)
}

func (s storeKV) List(ctx context.Context, prefix []byte, limit int) ([][]byte, error) {
	var keys [][]byte
	ns := s.key(nil)
	err := s.db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		p := s.key(prefix)
		for it.Seek(p); it.ValidForPrefix(p) && len(keys) < limit; it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			keys = append(keys, bytes.Clone(it.Item().Key()[len(ns):]))
		}
		return nil
	})
	return keys, s.storeErr("list", err)
}
