package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("OUTPOST_STORE_HOLD") != "" {
		holdForever(os.Getenv("OUTPOST_STORE_HOLD"))
		return
	}
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir, Defaults(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestBuckets(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	calls, kv := db.Bucket("calls"), db.Bucket("kv")
	if err := calls.Put([]byte("a1"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := calls.Put([]byte("a2"), []byte("y")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put([]byte("a1"), []byte("other")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get([]byte("a2")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("buckets share keys: %v", err)
	}
	var keys []string
	err := calls.Scan(context.Background(), []byte("a"), func(k, v []byte) error {
		keys = append(keys, string(k)+"="+string(v))
		return nil
	})
	if err != nil || strings.Join(keys, ",") != "a1=x,a2=y" {
		t.Fatalf("scan = %v, %v", keys, err)
	}
	if err := calls.Delete([]byte("a1")); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	db = open(t, dir)
	defer db.Close()
	if v, err := db.Bucket("calls").Get([]byte("a2")); err != nil || string(v) != "y" {
		t.Fatalf("after reopen: %q %v", v, err)
	}
	if _, err := db.Bucket("calls").Get([]byte("a1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key still there: %v", err)
	}
}

// A data dir held by another process is refused with a clear error.
func TestLockedByAnotherProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "OUTPOST_STORE_HOLD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "held\n" {
		t.Fatalf("holder did not open the store: %q %v", buf, err)
	}
	_, err = Open(dir, Defaults(), quiet)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("want ErrLocked naming %s, got %v", dir, err)
	}
}

func holdForever(dir string) {
	if _, err := Open(dir, Defaults(), quiet); err != nil {
		os.Stdout.WriteString("fail " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("held\n")
	select {}
}
