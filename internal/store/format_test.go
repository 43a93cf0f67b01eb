package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/internal/format"
)

// TestStoreFormat: a new store records version 1; a test-only step 1 to 2
// runs at the next open and rewrites a bucket; a store from a newer binary
// is refused with both versions.
func TestStoreFormat(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	if v, err := db.Bucket("format").Get([]byte("store")); err != nil || string(v) != "1" {
		t.Fatalf("version %q, %v: want 1", v, err)
	}
	if err := db.Bucket("kv").Put([]byte("a"), []byte("old")); err != nil {
		t.Fatal(err)
	}
	db.Close()

	saved := storeFormat
	t.Cleanup(func() { storeFormat = saved })
	storeFormat = format.New("state store", 2)
	storeFormat.Register(format.Step{From: 1, What: "move kv to kv2", Txn: func(txn *badger.Txn) error {
		if err := txn.Delete([]byte("kv/a")); err != nil {
			return err
		}
		return txn.Set([]byte("kv2/a"), []byte("new"))
	}})
	db = open(t, dir)
	if v, err := db.Bucket("kv2").Get([]byte("a")); err != nil || string(v) != "new" {
		t.Fatalf("kv2/a %q, %v", v, err)
	}
	if _, err := db.Bucket("kv").Get([]byte("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("kv/a still there: %v", err)
	}
	db.Close()

	storeFormat = saved
	_, err := Open(dir, Defaults(), quiet)
	if !errors.Is(err, format.ErrNewer) || !strings.Contains(err.Error(), "state store has format version 2") || !strings.Contains(err.Error(), "up to version 1") {
		t.Fatalf("err %v", err)
	}
}
