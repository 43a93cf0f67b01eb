package store

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"
)

// snapshotBatch bounds the keys and values of one frame of a snapshot:
// with the frame's encoding, about twice this is what a snapshot holds in
// memory (more only for a single larger value).
const snapshotBatch = 1 << 20

// Snapshot writes every live key of db, read at one timestamp, to w in
// badger's backup format (frames of a little-endian uint64 length and a
// pb.KVList, what badger.DB.Load reads back): the latest version of each
// key with its value, user meta and expiry. Unlike badger's DB.Backup,
// whose stream workers take 32 MiB buffers apiece and take new ones as
// they fill (870 MiB allocated to back up 60 MiB of journaled calls,
// BenchmarkBackup), it reads with one iterator and reuses one frame of
// about a MiB.
func Snapshot(db *badger.DB, w io.Writer) error {
	return db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		var (
			list pb.KVList
			kvs  []*pb.KV // reused from frame to frame
			out  []byte   // the encoded frame
		)
		// The frame's keys and values. Entries slice it; an append that
		// moves it leaves earlier entries on the old array, intact.
		arena := make([]byte, 0, snapshotBatch+64<<10)
		flush := func() error {
			if len(list.Kv) == 0 {
				return nil
			}
			var err error
			out = binary.LittleEndian.AppendUint64(out[:0], uint64(proto.Size(&list)))
			if out, err = (proto.MarshalOptions{}).MarshalAppend(out, &list); err != nil {
				return fmt.Errorf("encode a snapshot frame: %w", err)
			}
			if _, err := w.Write(out); err != nil {
				return err
			}
			list.Kv, arena = list.Kv[:0], arena[:0]
			return nil
		}
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if len(list.Kv) == len(kvs) {
				kvs = append(kvs, &pb.KV{UserMeta: make([]byte, 1)})
			}
			kv := kvs[len(list.Kv)]
			k := len(arena)
			arena = append(arena, item.Key()...)
			v := len(arena)
			if err := item.Value(func(val []byte) error { arena = append(arena, val...); return nil }); err != nil {
				return fmt.Errorf("read the value of %q: %w", item.Key(), err)
			}
			kv.Key, kv.Value = arena[k:v:v], arena[v:len(arena):len(arena)]
			kv.UserMeta[0], kv.Version, kv.ExpiresAt = item.UserMeta(), item.Version(), item.ExpiresAt()
			list.Kv = append(list.Kv, kv)
			if len(arena) >= snapshotBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	})
}

// Snapshot writes the state store's keys, read at one timestamp, to w in
// badger's backup format (see the function Snapshot).
func (s *DB) Snapshot(w io.Writer) error { return Snapshot(s.db, w) }
