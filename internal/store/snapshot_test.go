package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// dump reads every live key of db with its value, user meta and expiry.
func dump(t *testing.T, db *badger.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key())] = fmt.Sprintf("%x meta=%d expires=%d", v, it.Item().UserMeta(), it.Item().ExpiresAt())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// frameWriter records the size of each frame of a snapshot, and runs
// first once before the first frame is written.
type frameWriter struct {
	buf    bytes.Buffer
	frames []int
	first  func()
}

func (f *frameWriter) Write(p []byte) (int, error) {
	if f.first != nil {
		f.first()
		f.first = nil
	}
	f.frames = append(f.frames, len(p))
	return f.buf.Write(p)
}

// A snapshot loads back (badger's DB.Load) into the same live keys, values
// (small ones in the LSM tree, large ones in the value log), user meta and
// expiries; deleted and overwritten versions are left out, and a write
// made while the snapshot is written is not in it. Frames stay near
// snapshotBatch.
func TestSnapshotLoadsBack(t *testing.T) {
	src := open(t, t.TempDir())
	defer src.Close()
	bdb := src.Badger()
	big := bytes.Repeat([]byte("B"), 2<<20) // past the value threshold: in the value log
	wb := bdb.NewWriteBatch()
	for i := range 5000 {
		if err := wb.Set(fmt.Appendf(nil, "kv/%05d", i), bytes.Repeat([]byte{byte(i)}, 500)); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	err := bdb.Update(func(txn *badger.Txn) error {
		for _, e := range []*badger.Entry{
			badger.NewEntry([]byte("big"), big),
			badger.NewEntry([]byte("meta"), []byte("m")).WithMeta(7),
			badger.NewEntry([]byte("ttl"), []byte("t")).WithTTL(time.Hour),
			badger.NewEntry([]byte("gone"), []byte("g")),
			badger.NewEntry([]byte("over"), []byte("old")),
		} {
			if err := txn.SetEntry(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(txn *badger.Txn) error {
		if err := txn.Delete([]byte("gone")); err != nil {
			return err
		}
		return txn.Set([]byte("over"), []byte("new"))
	}); err != nil {
		t.Fatal(err)
	}
	want := dump(t, bdb)
	w := &frameWriter{first: func() {
		if err := bdb.Update(func(txn *badger.Txn) error { return txn.Set([]byte("later"), []byte("l")) }); err != nil {
			t.Error(err)
		}
	}}
	if err := src.Snapshot(w); err != nil {
		t.Fatal(err)
	}
	if _, ok := dump(t, bdb)["later"]; !ok {
		t.Fatal("the write during the snapshot did not land")
	}

	dst := open(t, t.TempDir())
	defer dst.Close()
	if err := dst.Badger().Load(bytes.NewReader(w.buf.Bytes()), 16); err != nil {
		t.Fatal(err)
	}
	got := dump(t, dst.Badger())
	delete(got, string(formatKey)) // the fresh store's own stamp, the same version
	delete(want, string(formatKey))
	if len(got) != len(want) {
		t.Errorf("%d keys loaded back, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("key %q: %.80s, want %.80s", k, got[k], v)
		}
	}
	for _, k := range []string{"gone", "later"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s is in the snapshot", k)
		}
	}
	if strings.HasSuffix(got["ttl"], "expires=0") {
		t.Errorf("ttl lost its expiry: %s", got["ttl"])
	}
	if !strings.HasSuffix(got["meta"], "meta=7 expires=0") {
		t.Errorf("meta: %s", got["meta"])
	}
	if len(w.frames) < 3 {
		t.Errorf("%d frames for 4.5 MiB", len(w.frames))
	}
	for i, n := range w.frames {
		// One frame may carry the 2 MiB value beside a batch's worth.
		if n > snapshotBatch+len(big)+64<<10 {
			t.Errorf("frame %d: %d bytes", i, n)
		}
	}
	// The frames are well formed: lengths that add up.
	b := w.buf.Bytes()
	for len(b) > 0 {
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n {
			t.Fatalf("a frame of %d bytes with %d left", n, len(b))
		}
		b = b[n:]
	}
}

// A snapshot allocates in proportion to a frame, not to the store: 10 MiB
// of records take well under 64 MiB (badger's DB.Backup allocates over
// 500 MiB for the same store, its stream buffers).
func TestSnapshotMemory(t *testing.T) {
	db := open(t, t.TempDir())
	defer db.Close()
	wb := db.Badger().NewWriteBatch()
	for i := range 20000 {
		if err := wb.Set(fmt.Appendf(nil, "calls/r/%07d", i), bytes.Repeat([]byte("x"), 500)); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := db.Snapshot(io.Discard); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
		t.Errorf("a snapshot of 10 MiB allocated %d MiB", got>>20)
	}
}
