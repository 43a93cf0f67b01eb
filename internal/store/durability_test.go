package store

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// dirtyLogs returns the memtable WALs (*.mem) and value logs (*.vlog) of
// the DB at dir that this process has mapped (badger writes them through
// mmap), each with the kB of its pages not yet written back to disk
// (/proc/self/smaps: Shared_Dirty + Private_Dirty). A page written and
// then synced (msync, fsync) is clean again: a log with 0 dirty kB holds
// nothing a power loss would take.
func dirtyLogs(t *testing.T, dir string) map[string]int {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	logs := map[string]int{}
	current := ""
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 5 && !strings.HasSuffix(f[0], ":"): // a mapping's header: addresses perms offset dev inode [path]
			current = ""
			if len(f) < 6 {
				continue // anonymous memory
			}
			if p := f[5]; filepath.Dir(p) == dir && (strings.HasSuffix(p, ".mem") || strings.HasSuffix(p, ".vlog")) {
				current = filepath.Base(p)
				logs[current] += 0
			}
		case current != "" && len(f) == 3 && (f[0] == "Shared_Dirty:" || f[0] == "Private_Dirty:"):
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("smaps %s: %v", sc.Text(), err)
			}
			logs[current] += kb
		}
	}
	return logs
}

// walCount is how many memtable WALs are mapped: the active memtable and
// the rotated ones badger has not flushed to a table yet.
func walCount(logs map[string]int) int {
	n := 0
	for name := range logs {
		if strings.HasSuffix(name, ".mem") {
			n++
		}
	}
	return n
}

// rotationConfig makes memtables rotate every few writes of rotationValue
// and, with no compactors, keeps rotated memtables unflushed once level 0
// is full (NumLevelZeroTablesStall): the window in which a write sits in a
// WAL that is no longer the active one.
func rotationConfig() Config {
	cfg := Defaults()
	cfg.MemtableSize = 1 << 20
	cfg.NumMemtables = 4
	cfg.NumCompactors = 0
	return cfg
}

// rotationValue goes in the WAL, not the value log (under ValueThreshold,
// memtable/8).
var rotationValue = bytes.Repeat([]byte("v"), 64<<10)

// Every write through the store is on disk when it returns, including when
// other writes rotate its memtable before anyone could sync it: at each
// acknowledgement no mapped WAL or value log of the store has a dirty
// page, and the writes go on until acknowledgements were seen while
// rotated WALs were still waiting for their flush. The writes alternate
// between Bucket.Put and a Committer batch of two, the two ways subsystems
// write.
//
// TestSyncAfterRotationLosesWrites shows that the same probe sees the gap
// of syncing afterwards (DB.Sync), so a clean log here is not an artefact
// of the probe.
func TestAcknowledgedWritesAreOnDisk(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/smaps")
	}
	dir := t.TempDir()
	db, err := Open(dir, rotationConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := NewCommitter(db)
	c.Start()
	defer c.Close()
	bk := db.Bucket("t")
	seen := map[string]bool{}
	rotatedAtAck := 0
	for i := 0; rotatedAtAck < 3; i++ {
		if i == 400 {
			t.Fatalf("%d writes, %d WALs seen, %d acknowledgements with a rotated WAL unflushed: memtables did not rotate as configured", i, len(seen), rotatedAtAck)
		}
		k := fmt.Appendf(nil, "k%04d", i)
		if i%2 == 0 {
			if err := bk.Put(k, rotationValue); err != nil {
				t.Fatal(err)
			}
		} else {
			done := make(chan error, 1)
			if err := c.Submit(func(b *Batch) error {
				if err := b.Put(bk, k, rotationValue); err != nil {
					return err
				}
				return b.Put(bk, append(k, 'b'), rotationValue)
			}, func(err error) { done <- err }); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		logs := dirtyLogs(t, dir)
		for name, kb := range logs {
			seen[name] = true
			if kb > 0 {
				t.Fatalf("write %d acknowledged with %d kB of %s not on disk (logs %v)", i, kb, name, logs)
			}
		}
		if walCount(logs) > 1 {
			rotatedAtAck++
		}
	}
	t.Logf("%d WALs and value logs seen, none dirty at an acknowledgement", len(seen))
}

// The gap that SyncWrites closes, seen by the probe of
// TestAcknowledgedWritesAreOnDisk: with badger's writes unsynced and one
// DB.Sync after a batch of writes (group commit as the store did it), a
// write whose memtable was rotated before the sync stays in the page
// cache after the sync: DB.Sync syncs the active memtable's WAL only.
func TestSyncAfterRotationLosesWrites(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/smaps")
	}
	dir := t.TempDir()
	db, err := badger.Open(Options(dir, rotationConfig(), slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; ; i++ {
		if i == 400 {
			t.Fatal("400 writes and no rotated WAL left unsynced by DB.Sync: the probe sees nothing")
		}
		// One batch of writes, then one sync, as a group commit did.
		wals := walCount(dirtyLogs(t, dir))
		for j := 0; walCount(dirtyLogs(t, dir)) == wals; j++ {
			if j == 100 {
				t.Fatal("100 writes without a memtable rotation")
			}
			err := db.Update(func(txn *badger.Txn) error { return txn.Set(fmt.Appendf(nil, "k%04d-%d", i, j), rotationValue) })
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Sync(); err != nil {
			t.Fatal(err)
		}
		logs := dirtyLogs(t, dir)
		for name, kb := range logs {
			if kb > 0 && strings.HasSuffix(name, ".mem") {
				t.Logf("after %d batches and DB.Sync, %d kB of %s not on disk (logs %v)", i+1, kb, name, logs)
				return
			}
		}
	}
}
