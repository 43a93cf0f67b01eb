package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/store"
)

// resultUploads counts the cloud results a node uploads, by call id, as
// they pass the fault proxy.
type resultUploads struct {
	mu sync.Mutex
	n  map[string]int
}

var resultPath = regexp.MustCompile(`/calls/([^/]+)/attempts/\d+/result$`)

func (u *resultUploads) watch(t *testing.T, c *cloudProc) {
	u.n = map[string]int{}
	c.setFault(func(_ http.ResponseWriter, r *http.Request) bool {
		var ids []string
		if m := resultPath.FindStringSubmatch(r.URL.Path); m != nil && r.Method == http.MethodPut {
			ids = append(ids, m[1])
		}
		if strings.HasSuffix(r.URL.Path, "results:batch") {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			if r.Header.Get("Content-Encoding") == "gzip" { // a batch over 1 KiB
				zr, err := gzip.NewReader(bytes.NewReader(b))
				if err != nil {
					t.Errorf("a gzip results batch: %v", err)
				}
				b, _ = io.ReadAll(zr)
			}
			var req remote.BatchRequest
			if err := json.Unmarshal(b, &req); err != nil {
				t.Errorf("a results batch the watcher cannot read: %v", err)
			}
			for _, res := range req.Results {
				ids = append(ids, res.CallID)
			}
		}
		u.mu.Lock()
		for _, id := range ids {
			u.n[id]++
		}
		u.mu.Unlock()
		return false
	})
}

func (u *resultUploads) count(id string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n[id]
}

// dumpStore reads every key of a stopped node's state store.
func dumpStore(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	db, err := store.Open(filepath.Join(dataDir, "state"), store.Defaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	err = db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key())] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// journal reads the call records of a stopped node's state store.
func journal(t *testing.T, dump map[string]string) map[string]calls.Record {
	t.Helper()
	out := map[string]calls.Record{}
	for k, v := range dump {
		if id, ok := strings.CutPrefix(k, "calls/r/"); ok {
			var r calls.Record
			if err := json.Unmarshal([]byte(v), &r); err != nil {
				t.Fatal(err)
			}
			out[id] = r
		}
	}
	return out
}

func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = string(b)
		}
	}
	return out
}

// TestBackupRestore: a backup taken while deploys and calls run restores
// into a node that starts with its tasks and versions, finishes the cloud
// call that was running at the backup and reports it once, and reports
// again none of the calls its journal had reported. A backup taken when
// the node is idle restores record for record: every key of the state
// store, the blobs and the identity files.
func TestBackupRestore(t *testing.T) {
	c := startCloudProc(t)
	d := cloudDaemon(t, c)
	echo, upper, counter := exampleWasm(t, "echo"), exampleWasm(t, "upper"), exampleWasm(t, "counter")
	manifest, err := filepath.Abs(filepath.Join("..", "..", "examples", "tasks", "wat", "counter.manifest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"svc", echo}, {"svc", upper}, {"counter", counter, "--manifest", manifest}} {
		if _, errOut, code := d.cli(append([]string{"task", "deploy"}, args...)...); code != 0 {
			t.Fatalf("deploy %v: %s", args, errOut)
		}
	}
	// Cloud calls finished and reported before the backups.
	for i := range 5 {
		c.enqueue(server.Call{ID: fmt.Sprintf("early-%d", i), Node: "edge-1", Task: "echo", Input: []byte("x")})
	}
	for i := range 5 {
		c.waitDone(fmt.Sprintf("early-%d", i), 20*time.Second)
		waitUntil(t, 20*time.Second, "early call reported", func() bool {
			r := d.record(fmt.Sprintf("early-%d", i))
			return r != nil && r.State == calls.Reported
		})
	}

	// Load: synchronous calls counting in kv, deploys, cloud calls; one
	// cloud call spins 4 s and is running when the backup is taken.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Int64
	loop := func(f func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(i); err != nil {
					failed.Add(1)
					t.Errorf("during the backup: %v", err)
				}
			}
		}()
	}
	loop(func(i int) error { _, err := d.call("counter", fmt.Sprintf("k%d", i%50)); return err })
	loop(func(i int) error {
		mod := []string{echo, upper}[i%2]
		if _, errOut, code := d.cli("task", "deploy", "svc", mod); code != 0 {
			return fmt.Errorf("deploy: %s", errOut)
		}
		return nil
	})
	var loadIDs []string
	var idsMu sync.Mutex
	loop(func(i int) error {
		id := fmt.Sprintf("load-%d", i)
		c.enqueue(server.Call{ID: id, Node: "edge-1", Task: "echo", Input: []byte("y")})
		idsMu.Lock()
		loadIDs = append(loadIDs, id)
		idsMu.Unlock()
		time.Sleep(20 * time.Millisecond)
		return nil
	})
	c.enqueue(server.Call{ID: "slow", Node: "edge-1", Task: "spin", Input: []byte("8")})
	d.waitState("slow", calls.Started, 20*time.Second)

	b1 := filepath.Join(t.TempDir(), "load.backup")
	out, errOut, code := d.cli("backup", b1)
	if code != 0 {
		t.Fatalf("backup: %d %s %s", code, out, errOut)
	}
	for _, phase := range []string{"backup: manifest: 1 items", "backup: state store:", "backup: blobs:", "backup: files:"} {
		if !strings.Contains(errOut, phase) {
			t.Errorf("backup progress lacks %q:\n%s", phase, errOut)
		}
	}
	t.Logf("backup under load:\n%s", errOut)
	time.Sleep(300 * time.Millisecond) // the load goes on after the backup
	close(stop)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d operations failed during the backup", failed.Load())
	}
	c.waitDone("slow", 30*time.Second)
	for _, id := range loadIDs {
		c.waitDone(id, 30*time.Second)
	}
	waitUntil(t, 30*time.Second, "every call reported", func() bool {
		for _, id := range append(loadIDs, "slow") {
			if r := d.record(id); r == nil || r.State != calls.Reported {
				return false
			}
		}
		return true
	})

	// Idle: a backup restores record for record.
	b2 := filepath.Join(t.TempDir(), "idle.backup")
	if _, errOut, code := d.cli("backup", b2); code != 0 {
		t.Fatalf("backup: %s", errOut)
	}
	if code := d.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	r2 := filepath.Join(t.TempDir(), "data")
	if _, errOut, code := runCmd(t, exec.Command(binPath, "restore", b2, "--data-dir", r2)); code != 0 || !strings.Contains(errOut, "restore: state store:") {
		t.Fatalf("restore: %d %s", code, errOut)
	}
	orig, restored := dumpStore(t, filepath.Join(d.dir, "data")), dumpStore(t, r2)
	delete(orig, "calls/clock") // the journal clock, saved at the stop after the backup
	delete(restored, "calls/clock")
	t.Logf("%d keys compared; %d cloud calls under load", len(orig), len(loadIDs))
	if len(orig) < 20 {
		t.Fatalf("only %d keys in the original store", len(orig))
	}
	for k, v := range orig {
		if restored[k] != v {
			t.Errorf("key %q: restored %q, original %q", k, restored[k], v)
		}
	}
	for k := range restored {
		if _, ok := orig[k]; !ok {
			t.Errorf("key %q restored, not in the original", k)
		}
	}
	for _, sub := range []string{"blobs/sha256", "."} {
		o, r := readDir(t, filepath.Join(d.dir, "data", sub)), readDir(t, filepath.Join(r2, sub))
		if fmt.Sprint(o) != fmt.Sprint(r) {
			t.Errorf("%s: restored files %v, original %v", sub, keys(r), keys(o))
		}
	}
	if _, errOut, code := runCmd(t, exec.Command(binPath, "restore", b2, "--data-dir", r2)); code != 1 || !strings.Contains(errOut, "not empty") {
		t.Errorf("restore into a non-empty dir: %d %s", code, errOut)
	}

	// The backup taken under load: a node started on it runs the deployed
	// tasks, finishes the slow call and reports it once, and reports none
	// of the calls its journal had reported.
	dir := t.TempDir()
	if _, errOut, code := runCmd(t, exec.Command(binPath, "restore", b1, "--data-dir", filepath.Join(dir, "data"))); code != 0 {
		t.Fatalf("restore: %s", errOut)
	}
	before := journal(t, dumpStore(t, filepath.Join(dir, "data")))
	reported := 0
	for _, r := range before {
		if r.State == calls.Reported {
			reported++
		}
	}
	t.Logf("the backup under load holds %d journaled calls, %d of them reported", len(before), reported)
	if r, ok := before["slow"]; !ok || r.State != calls.Started {
		t.Fatalf("slow in the backup: %+v", r)
	}
	var up resultUploads
	var cfg []byte
	up.watch(t, c)
	cfg, err = os.ReadFile(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgText := regexp.MustCompile(`(?m)^data_dir: .*\n`).ReplaceAllString(string(cfg), "")
	cfgText = strings.NewReplacer(d.addr, "{{admin}}", strings.TrimPrefix(d.mqtt, "tcp://"), "{{broker}}").Replace(cfgText)
	n := startDaemonIn(t, dir, cfgText)
	n.waitState("slow", calls.Reported, 30*time.Second)
	if got, err := n.call("svc", "hello"); err != nil || (got != "hello" && got != "HELLO") {
		t.Fatalf("svc on the restored node: %q %v", got, err)
	}
	if got, err := n.call("counter", "k0"); err != nil || got == "1" {
		t.Fatalf("counter on the restored node: %q %v (its kv should have come back)", got, err)
	}
	out, _, _ = n.cli("task", "inspect", "svc")
	if !strings.Contains(out, "versions (the last one runs)") {
		t.Fatalf("inspect svc: %s", out)
	}
	waitUntil(t, 10*time.Second, "slow uploaded", func() bool { return up.count("slow") > 0 })
	time.Sleep(time.Second) // time for a wrong second upload
	if got := up.count("slow"); got != 1 {
		t.Errorf("slow uploaded %d times by the restored node, want 1", got)
	}
	for id, r := range before {
		if r.State == calls.Reported && up.count(id) > 0 {
			t.Errorf("%s was reported before the backup and uploaded again %d times", id, up.count(id))
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
