package runtime

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/runtime/builtin"
)

// A replaced version of a task gives its compiled code back: reloading a
// task with new bytes many times does not grow the process's executable
// memory (wazero keeps compiled code in the shared compilation cache's
// engine until the compiled module itself is closed, then unmaps it from a
// finalizer).
func TestReplacedCodeIsUnmapped(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	echo, _ := builtin.Lookup("echo")
	dir := t.TempDir()
	load := func(i int) {
		t.Helper()
		// A custom section named by i makes new bytes (a new digest) for
		// the same code.
		bin := append(append([]byte(nil), echo...), 0, 4, 2, byte('a'+i/26), byte('a'+i%26), 0)
		path := filepath.Join(dir, fmt.Sprintf("v%d.wasm", i))
		if err := os.WriteFile(path, bin, 0o600); err != nil {
			t.Fatal(err)
		}
		set, err := e.Load(ctx, []Spec{{Name: "t", Module: path}})
		if err != nil {
			t.Fatalf("load version %d: %v", i, err)
		}
		e.Activate(set)
		if out, err := e.Call(ctx, "t", []byte("hi")); err != nil || string(out) != "hi" {
			t.Fatalf("call version %d: %q %v", i, out, err)
		}
	}
	const versions = 40
	load(0)
	before := execMappedBytes(t)
	for i := 1; i <= versions; i++ {
		load(i)
	}
	// wazero unmaps released code from a finalizer: collect until it has,
	// or until the deadline.
	limit := before + versions/2*uint64(os.Getpagesize()) // a leaked version keeps at least a page
	deadline := time.Now().Add(10 * time.Second)
	for {
		goruntime.GC()
		after := execMappedBytes(t)
		if after < limit {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("executable anonymous memory grew by %d bytes over %d replaced versions (from %d to %d)", after-before, versions, before, after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// execMappedBytes sums the process's anonymous executable mappings (where
// wazero puts compiled code).
func execMappedBytes(t *testing.T) uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var total uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode [path]
		fields := strings.Fields(sc.Text())
		if len(fields) != 5 || !strings.Contains(fields[1], "x") {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("parse /proc/self/maps line %q", sc.Text())
		}
		total += end - start
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}
