package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// cacheEntry is what a snapshot keeps of a compile cache file.
type cacheEntry struct {
	size  int64
	mtime time.Time
}

// snapshotDir lists the files under dir with their size and mtime.
func snapshotDir(t *testing.T, dir string) map[string]cacheEntry {
	t.Helper()
	snap := map[string]cacheEntry{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		snap[rel] = cacheEntry{size: info.Size(), mtime: info.ModTime()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestRestartNeedsNoRecompile: 20 distinct deployed tasks (20 modules: 4
// Go modules of about 1.8 MB, whose compilation takes about a second each
// here, and 16 small WAT ones; all echo) are compiled once, at deploy; a
// restart on the same data dir loads them all from the compile cache: no
// cache file is added or rewritten, and all 20 answer.
func TestRestartNeedsNoRecompile(t *testing.T) {
	var bases [2][]byte
	for i, name := range []string{"go-echo.wasm", "echo.wasm"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "tasks", "build", name))
		if err != nil {
			t.Fatalf("%v (run scripts/build-examples.sh)", err)
		}
		bases[i] = b
	}
	const n = 20
	begin := time.Now()
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
`)
	firstStart := time.Since(begin)

	begin = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range n {
		base := bases[1]
		if i%5 == 0 {
			base = bases[0]
		}
		mod := wasmtest.Variant(base, fmt.Sprint("task-", i))
		name := fmt.Sprintf("t%02d", i)
		if _, err := d.admin.Deploy(ctx, name, &admin.UploadPart{R: bytes.NewReader(mod), Size: int64(len(mod))}, nil, nil, nil); err != nil {
			t.Fatalf("deploy %s: %v", name, err)
		}
	}
	deployAll := time.Since(begin)
	for i := range n {
		if got, err := d.call(fmt.Sprintf("t%02d", i), "hi"); err != nil || got != "hi" {
			t.Fatalf("before the restart, t%02d: %q %v", i, got, err)
		}
	}
	if code := d.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	cache := filepath.Join(d.dir, "data", "cache", "wasm")
	before := snapshotDir(t, cache)
	if len(before) < n {
		t.Fatalf("%d files in the compile cache after %d deploys, want at least %d", len(before), n, n)
	}

	begin = time.Now()
	d.start()
	restart := time.Since(begin)
	for i := range n {
		if got, err := d.call(fmt.Sprintf("t%02d", i), "hi"); err != nil || got != "hi" {
			t.Fatalf("after the restart, t%02d: %q %v", i, got, err)
		}
	}
	after := snapshotDir(t, cache)
	for name, e := range after {
		if b, ok := before[name]; !ok {
			t.Errorf("compile cache: %s added by the restart", name)
		} else if b != e {
			t.Errorf("compile cache: %s rewritten by the restart (%d bytes at %v, was %d at %v)", name, e.size, e.mtime, b.size, b.mtime)
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			t.Errorf("compile cache: %s removed by the restart", name)
		}
	}
	t.Logf("start to healthy: first start (no deployed task) %v; deploy of %d tasks (compiled) %v; restart with %d tasks (%d cache files) %v",
		firstStart.Round(time.Millisecond), n, deployAll.Round(time.Millisecond), n, len(before), restart.Round(time.Millisecond))
}
