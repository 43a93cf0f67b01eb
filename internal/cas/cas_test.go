package cas

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func TestStageSyncRename(t *testing.T) {
	dir := t.TempDir()
	st, err := Stage(dir, ".tmp-", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Discard()
	sum := sha256.Sum256([]byte("hello"))
	if st.Digest != hex.EncodeToString(sum[:]) || st.Size != 5 {
		t.Fatalf("staged %s %d, want the sha256 of hello and 5", st.Digest, st.Size)
	}
	dst := filepath.Join(dir, st.Digest)
	if err := st.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := st.Rename(dst); err != nil {
		t.Fatal(err)
	}
	st.Discard()
	if b, err := os.ReadFile(dst); err != nil || string(b) != "hello" {
		t.Fatalf("committed file %q (%v)", b, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d files in the store, want only the committed one", len(ents))
	}
}

// A source that fails leaves nothing behind and is not the store's fault;
// a store that cannot be written is.
func TestStageErrors(t *testing.T) {
	dir := t.TempDir()
	boom := errors.New("boom")
	_, err := Stage(dir, ".tmp-", iotest.ErrReader(boom))
	if !errors.Is(err, boom) {
		t.Fatalf("read error %v, want boom", err)
	}
	if _, ok := errors.AsType[*WriteError](err); ok {
		t.Fatal("a read error reported as a write error")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%d files left after a failed stage", len(ents))
	}
	_, err = Stage(filepath.Join(dir, "missing"), ".tmp-", strings.NewReader("x"))
	if _, ok := errors.AsType[*WriteError](err); !ok {
		t.Fatalf("error %v, want a WriteError", err)
	}
}

func TestDiscardUncommitted(t *testing.T) {
	dir := t.TempDir()
	st, err := Stage(dir, ".tmp-", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	st.Discard()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%d files left after Discard", len(ents))
	}
}
