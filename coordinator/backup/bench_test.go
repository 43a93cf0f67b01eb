package backup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/internal/store"
)

// benchCalls is the number of journaled calls in the benchmark's store.
const benchCalls = 100_000

// bigNode fills a data dir as a node that has run benchCalls cloud calls
// leaves it: each call's journal record with its result (128 bytes of
// output), twenty 64 KiB module blobs and the admin token; the store is
// closed.
func bigNode(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	db, err := store.Open(filepath.Join(dir, StateDir), store.Defaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	wb := db.Badger().NewWriteBatch()
	now := time.Now().UTC()
	out := bytes.Repeat([]byte("o"), 128)
	for i := range benchCalls {
		r := calls.Record{ID: fmt.Sprintf("call-%07d", i), Task: "echo", Source: calls.Source{Kind: "cloud", Ref: fmt.Sprint(i)},
			Effect: calls.Idempotent, Attempt: 1, Runs: 1, State: calls.Reported, Result: &calls.Result{Status: calls.StatusOK, Output: out},
			Received: now, Started: now, Finished: now, Reported: now, ReceivedClock: time.Duration(i), ReportedClock: time.Duration(i)}
		v, err := json.Marshal(r)
		if err != nil {
			b.Fatal(err)
		}
		if err := wb.Set([]byte("calls/r/"+r.ID), v); err != nil {
			b.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, BlobDir), 0o750); err != nil {
		b.Fatal(err)
	}
	mod := bytes.Repeat([]byte{0, 'a', 's', 'm'}, 16<<10)
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, BlobDir, fmt.Sprintf("%064d.wasm", i)), mod, 0o640); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte("secret"), 0o600); err != nil {
		b.Fatal(err)
	}
	return dir
}

// syncedFile creates path for a backup; done syncs and closes it and
// returns its size.
func syncedFile(b *testing.B, path string) (*os.File, func() int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	return f, func() int64 {
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		st, err := f.Stat()
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		return st.Size()
	}
}

// BenchmarkBackup: an online backup (Write, as GET /v1/backup does it,
// with the store open) of a data dir holding 100k journaled calls, beside
// its baseline, GNU tar of the same data dir with the node stopped (the
// copy an operator would make without outpost backup). Both write a file
// on the same disk and sync it; backup-MiB is the size written, and the
// online side reports the memory it allocates (B/op).
//
//	go test -run XXX -bench Backup -benchtime 3x ./coordinator/backup
func BenchmarkBackup(b *testing.B) {
	dir := bigNode(b)
	b.Run("tar-stopped", func(b *testing.B) {
		var size int64
		for i := range b.N {
			path := filepath.Join(b.TempDir(), fmt.Sprintf("%d.tar", i))
			f, done := syncedFile(b, path)
			var errOut bytes.Buffer
			tar := exec.Command("tar", "-c", "-C", dir, ".")
			tar.Stdout, tar.Stderr = f, &errOut
			if err := tar.Run(); err != nil {
				b.Fatalf("tar: %v %s", err, errOut.String())
			}
			size = done()
		}
		b.ReportMetric(float64(size)/(1<<20), "backup-MiB")
	})
	b.Run("online", func(b *testing.B) {
		db, err := store.Open(filepath.Join(dir, StateDir), store.Defaults(), slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		var size int64
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			f, done := syncedFile(b, filepath.Join(b.TempDir(), fmt.Sprintf("%d.backup", i)))
			err := Write(f, Source{
				Manifest: Manifest{Node: "bench", Version: "bench"},
				State:    db.Snapshot,
				DataDir:  dir,
			}, func(Phase) {})
			if err != nil {
				b.Fatal(err)
			}
			size = done()
		}
		b.ReportMetric(float64(size)/(1<<20), "backup-MiB")
	})
}
