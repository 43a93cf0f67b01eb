package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// kvConfig runs the WAT counter example (kv_get, kv_put, publish, log per
// call) with 8 instances, on dataDir.
func kvConfig(t *testing.T, dataDir, quota string) *configs.Config {
	t.Helper()
	mod := wasmtest.WAT(t, "../examples/tasks/wat/counter.wat", "")
	yaml := "data_dir: " + dataDir + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
scheduler: {workers: 8}
tasks:
  - name: counter
    module: ` + mod + `
    limits: {concurrency: 8}
    permissions: {publish: ["counter/#"], kv_quota: ` + quota + `}
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestKVConcurrentPutsDistinctKeys: concurrent calls putting distinct keys
// of one namespace all succeed. The quota used to be kept in one key that
// every put read and wrote, and badger's "Transaction Conflict. Please
// retry" reached the guest.
func TestKVConcurrentPutsDistinctKeys(t *testing.T) {
	c := startCoordinator(t, kvConfig(t, t.TempDir(), "16MiB"))
	const n, workers = 4000, 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				r, err := c.Call(context.Background(), calls.New("counter", fmt.Appendf(nil, "k-%05d", i), calls.Source{Kind: "test"}))
				if err != nil || !r.OK() || string(r.Output) != "1" {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%d: %v %s %s", i, err, r.Status, r.Error))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed, first: %s", len(failures), n, failures[0])
	}
	keys, err := (host{c}).KV("counter").List(context.Background(), nil, n+1)
	if err != nil || len(keys) != n {
		t.Fatalf("%d keys stored, want %d (%v)", len(keys), n, err)
	}
}

// TestKVQuotaConcurrentAndAfterRestart: concurrent writers of the same
// keys never pass the quota, the size kept in memory equals the entries'
// sum, and a new daemon on the same data counts the same size (the size
// is not kept on disk, so no crash can leave it wrong).
func TestKVQuotaConcurrentAndAfterRestart(t *testing.T) {
	dir := t.TempDir()
	const quota = 2500 // 40 keys of 56 to 155 bytes hold about 4,200: writes are refused
	c := New(kvConfig(t, dir, fmt.Sprint(quota)), quiet, "test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, nil) }()
	<-c.Ready()
	kv := (host{c}).KV("counter")
	var wg sync.WaitGroup
	var quotaErrs atomic.Int64
	var otherErrs sync.Map
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 400 {
				key := fmt.Appendf(nil, "key-%02d", (w*7+i)%40) // 8 writers on 40 keys: same-key conflicts
				var err error
				if i%5 == 4 {
					err = kv.Delete(ctx, key)
				} else {
					err = kv.Put(ctx, key, []byte(strings.Repeat("v", 50+(i*13)%100)), quota)
				}
				switch {
				case errors.Is(err, outpostrt.ErrQuota):
					quotaErrs.Add(1)
				case err != nil:
					otherErrs.Store(i, err)
				}
			}
		}()
	}
	wg.Wait()
	otherErrs.Range(func(k, v any) bool { t.Errorf("write %v: %v", k, v); return true })
	if quotaErrs.Load() == 0 {
		t.Error("no write was refused: the test never reached the quota")
	}
	want := entriesSize(t, kv)
	if want > quota {
		t.Fatalf("namespace holds %d bytes, over the quota of %d", want, quota)
	}
	if got := c.kv.space("counter").size; got != want {
		t.Fatalf("size counted in memory %d, entries sum to %d", got, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	c2 := startCoordinator(t, kvConfig(t, dir, fmt.Sprint(quota)))
	kv2 := (host{c2}).KV("counter")
	room := quota - want
	if err := kv2.Put(context.Background(), []byte("x"), []byte(strings.Repeat("y", int(room))), quota); !errors.Is(err, outpostrt.ErrQuota) {
		t.Fatalf("a put one byte over the quota after a restart: %v", err)
	}
	if err := kv2.Put(context.Background(), []byte("x"), []byte(strings.Repeat("y", int(room)-1)), quota); err != nil {
		t.Fatalf("a put filling the quota exactly after a restart: %v", err)
	}
	if got := c2.kv.space("counter").size; got != quota {
		t.Fatalf("size after filling the quota = %d, want %d", got, quota)
	}
}

// entriesSize sums len(key)+len(value) over the namespace's entries.
func entriesSize(t *testing.T, kv outpostrt.KV) uint64 {
	t.Helper()
	keys, err := kv.List(context.Background(), nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, k := range keys {
		v, err := kv.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		n += uint64(len(k) + len(v))
	}
	return n
}
