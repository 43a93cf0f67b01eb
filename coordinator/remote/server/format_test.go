package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/internal/buildinfo"
	"github.com/outpost-edge/outpost/internal/format"
	"github.com/outpost-edge/outpost/internal/pgtest"
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

// TestSchemaVersion: a PostgreSQL store gets the schema at the current
// version, a second open migrates nothing, and a database whose version is
// newer than the binary knows is refused, naming both versions.
func TestSchemaVersion(t *testing.T) {
	e := &engine{t: t, name: "postgres", dir: t.TempDir(), store: pgtest.Shared(t).NewDatabase()}
	e.open(Options{}).Close()
	e.open(Options{}).Close()
	version := func() int {
		conn, err := pgx.Connect(t.Context(), e.store)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(t.Context())
		var v int
		if err := conn.QueryRow(t.Context(), `SELECT version FROM schema_version`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := version(); v != len(migrations) {
		t.Fatalf("schema version %d, want %d", v, len(migrations))
	}
	sqlExec(t, e.store, `UPDATE schema_version SET version = 99`)
	_, err := Open(Options{Dir: e.dir, Store: e.store})
	if !errors.Is(err, format.ErrNewer) || !strings.Contains(err.Error(), fmt.Sprintf("schema has version 99, this binary (outpost %s) knows up to version %d", buildinfo.Version(), len(migrations))) {
		t.Fatalf("err %v", err)
	}
}
