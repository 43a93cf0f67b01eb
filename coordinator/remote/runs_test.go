package remote_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// A cloud run through the link: the module is uploaded when the control
// plane lacks it, a refusal (503) and a cut connection are retried with
// the same run id, the pool is advertised on the poll; after the control
// plane restarts mid-run (its runs stop unrecorded) an idempotent run runs
// again and an at-most-once one ends interrupted.
func TestCloudRun(t *testing.T) {
	cl := startCloud(t, server.Options{RunWorkers: 2})
	e := startEdge(t, cl, t.TempDir(), nil)
	path := wasmtest.WAT(t, "../../cmd/outpost/testdata/spin.wat", "")
	module, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(module)
	open := func() (io.ReadCloser, int64, error) {
		f, err := os.Open(path)
		return f, int64(len(module)), err
	}
	req := func(input, effect string) remote.RunRequest {
		return remote.RunRequest{Task: "spin", Digest: remote.DigestPrefix + hex.EncodeToString(sum[:]), Input: []byte(input), Effect: effect, TimeoutMS: 30_000}
	}

	var faults atomic.Int32
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/runs/") {
			return false
		}
		switch faults.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "0")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		case 2:
			hangUp(w)
			return true
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := e.c.Run(ctx, "c1.1", req("0 first", "at_most_once"), open)
	if err != nil || resp.Status != "ok" || string(resp.Output) != "0 first" {
		t.Fatalf("Run = %+v, %v; want ok", resp, err)
	}
	if faults.Load() < 4 { // 503, cut, 404 missing, after the upload
		t.Errorf("%d submissions, want the refused and cut ones retried", faults.Load())
	}
	cl.setFault(nil)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		runs, up := e.c.CloudRuns()
		if up && runs.Workers == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CloudRuns = %+v, %v; want 2 workers, link up (state %s)", runs, up, e.c.State())
		}
	}

	// The control plane restarts while two runs run.
	type outcome struct {
		resp remote.RunResponse
		err  error
	}
	results := map[string]chan outcome{"idempotent": make(chan outcome, 1), "at_most_once": make(chan outcome, 1)}
	for effect, ch := range results {
		go func() {
			r, err := e.c.Run(ctx, "c-"+effect+".1", req("4 "+effect, effect), open)
			ch <- outcome{r, err}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		started, _ := filepath.Glob(filepath.Join(cl.dir, "runs", "*.started"))
		if len(started) == 3 { // c1.1 and both
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runs started: %v", started)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cl.restartLosingSessions()
	for effect, want := range map[string]string{"idempotent": "ok", "at_most_once": "interrupted"} {
		o := <-results[effect]
		if o.err != nil || o.resp.Status != want {
			t.Errorf("%s run after the restart: %+v, %v; want %s", effect, o.resp, o.err, want)
		}
	}
}
