package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/store"
)

// node is a stopped node's data dir with a state store of n keys, a blob
// and an identity file.
func node(t *testing.T, n int) (string, *store.DB) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, StateDir), store.Defaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	val := bytes.Repeat([]byte("v"), 1000)
	for i := range n {
		if err := db.Bucket("kv").Put([]byte{byte(i >> 8), byte(i)}, val); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{BlobDir, SnapshotDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{BlobDir + "/ab.wasm": "module", BlobDir + "/.upload-1": "partial", SnapshotDir + "/cd": "state", "admin.token": "secret"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, db
}

func write(t *testing.T, dir string, db *store.DB) []byte {
	t.Helper()
	var buf bytes.Buffer
	err := Write(&buf, Source{
		Manifest: Manifest{Node: "n1", Version: "test"},
		State:    db.Snapshot,
		DataDir:  dir,
	}, func(Phase) {})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	// 6000 values of 1000 bytes: the state stream spans two chunks.
	dir, db := node(t, 6000)
	b := write(t, dir, db)
	var phases []string
	var saved bytes.Buffer
	m, err := Copy(&saved, bytes.NewReader(b), func(p Phase) { phases = append(phases, fmt.Sprintf("%s: %d items", p.Name, p.Items)) })
	if err != nil || m.Node != "n1" || !bytes.Equal(saved.Bytes(), b) {
		t.Fatalf("copy: %v %+v, %d of %d bytes", err, m, saved.Len(), len(b))
	}
	if len(phases) != 5 || !strings.HasPrefix(phases[1], "state store: 2 items") || !strings.HasPrefix(phases[2], "blobs: 1 items") || !strings.HasPrefix(phases[3], "snapshots: 1 items") {
		t.Fatalf("phases %q", phases)
	}
	to := filepath.Join(t.TempDir(), "data")
	if _, err := Restore(bytes.NewReader(b), to, store.Defaults(), slog.New(slog.DiscardHandler), func(Phase) {}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(to, BlobDir, "ab.wasm")); string(got) != "module" {
		t.Fatalf("blob %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(to, SnapshotDir, "cd")); string(got) != "state" {
		t.Fatalf("snapshot of a suspended call %q", got)
	}
	if _, err := os.Stat(filepath.Join(to, BlobDir, ".upload-1")); err == nil {
		t.Fatal("an upload in progress was backed up")
	}
	if got, _ := os.ReadFile(filepath.Join(to, "admin.token")); string(got) != "secret" {
		t.Fatalf("token %q", got)
	}
	rdb, err := store.Open(filepath.Join(to, StateDir), store.Defaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if v, err := rdb.Bucket("kv").Get([]byte{0x17, 0x6f}); err != nil || len(v) != 1000 {
		t.Fatalf("key 5999: %d bytes, %v", len(v), err)
	}
}

func TestIncomplete(t *testing.T) {
	dir, db := node(t, 3000)
	b := write(t, dir, db)
	for _, cut := range []int{len(b) / 2, len(b) - 2048} {
		if _, err := Copy(io.Discard, bytes.NewReader(b[:cut]), func(Phase) {}); !errors.Is(err, ErrIncomplete) {
			t.Errorf("copy cut at %d of %d: %v", cut, len(b), err)
		}
		to := filepath.Join(t.TempDir(), "data")
		if _, err := Restore(bytes.NewReader(b[:cut]), to, store.Defaults(), slog.New(slog.DiscardHandler), func(Phase) {}); !errors.Is(err, ErrIncomplete) {
			t.Errorf("restore cut at %d of %d: %v", cut, len(b), err)
		}
		if ents, _ := os.ReadDir(to); len(ents) != 0 {
			t.Errorf("a failed restore left %d entries", len(ents))
		}
	}
}

func TestRestoreRefusesNonEmpty(t *testing.T) {
	dir, db := node(t, 1)
	b := write(t, dir, db)
	if _, err := Restore(bytes.NewReader(b), dir, store.Defaults(), slog.New(slog.DiscardHandler), func(Phase) {}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("err %v", err)
	}
	if _, err := Restore(strings.NewReader("not a tar at all, just some text long enough for a header......"), t.TempDir(), store.Defaults(), slog.New(slog.DiscardHandler), func(Phase) {}); err == nil {
		t.Fatal("garbage restored")
	}
}
