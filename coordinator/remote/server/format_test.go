package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/internal/format"
)

// TestFormat: the state and the object directory record format version 1;
// a newer version of either is refused, naming both versions.
func TestFormat(t *testing.T) {
	reopen := func(dir string) error {
		s, err := Open(Options{Dir: dir})
		if err == nil {
			s.Close()
		}
		return err
	}
	t.Run("state", func(t *testing.T) {
		dir := t.TempDir()
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.st.(*badgerStore).db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("format/server"), []byte("2")) }); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if err := reopen(dir); !errors.Is(err, format.ErrNewer) || !strings.Contains(err.Error(), "outpost-cloud state has format version 2") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("objects", func(t *testing.T) {
		dir := t.TempDir()
		if err := reopen(dir); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "objects", format.FileName)
		if b, err := os.ReadFile(f); err != nil || string(b) != "1\n" {
			t.Fatalf("FORMAT %q, %v", b, err)
		}
		if err := os.WriteFile(f, []byte("3\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := reopen(dir); !errors.Is(err, format.ErrNewer) || !strings.Contains(err.Error(), "outpost-cloud objects has format version 3") {
			t.Fatalf("err %v", err)
		}
	})
}
