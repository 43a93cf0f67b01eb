package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// procMem returns the resident set and its peak (VmRSS, VmHWM) of the
// daemon, in bytes.
func (d *daemon) procMem() (rss, peak int64) {
	d.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		d.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = n << 10
		case "VmHWM:":
			peak = n << 10
		}
	}
	return rss, peak
}

// settledRSS waits up to timeout for the daemon's RSS to fall to at most
// limit and returns the last reading.
func (d *daemon) settledRSS(limit int64, timeout time.Duration) int64 {
	deadline := time.Now().Add(timeout)
	for {
		rss, _ := d.procMem()
		if rss <= limit || time.Now().After(deadline) {
			return rss
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestMemoryAfterBursts runs the real binary through bursts that used to
// leave its RSS high, and checks each against loose bounds: a large task
// output, and call uploads of 1 GiB with and without a Content-Length.
func TestMemoryAfterBursts(t *testing.T) {
	skipShort(t, "bursts of 1 GiB uploads and large outputs; coordinator TestApplyMemoryLimit covers the memory limit")
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - {name: echo, module: builtin:echo}
  - {name: bigout, module: `+wasm(t, "bigout")+`, limits: {memory: 64MiB, max_output: 32MiB}}
`)
	base, _ := d.procMem()
	const mib = 1 << 20
	t.Logf("RSS at start: %d MiB", base/mib)

	t.Run("1 GiB call uploads", func(t *testing.T) {
		_, peak0 := d.procMem()
		for _, withLength := range []bool{true, false} {
			req, _ := http.NewRequest("POST", "http://"+d.addr+"/v1/tasks/echo/call", io.LimitReader(zeros{}, 1<<30))
			d.authorize(req)
			if withLength {
				req.ContentLength = 1 << 30
			} else {
				req.ContentLength = -1
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			resp, err := http.DefaultClient.Do(req.WithContext(ctx))
			if err == nil {
				var body bytes.Buffer
				_, _ = body.ReadFrom(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body.String(), "max_input") {
					t.Errorf("upload (Content-Length %v): %s %s, want 413 naming max_input", withLength, resp.Status, body.String())
				}
			} else if ctx.Err() != nil {
				t.Errorf("upload (Content-Length %v) not refused within 20s: %v", withLength, err)
			}
			cancel()
		}
		_, peak := d.procMem()
		t.Logf("peak RSS during the uploads: %d MiB (before: %d MiB)", peak/mib, peak0/mib)
		if peak > max(peak0, base+16*mib) {
			t.Errorf("peak RSS rose to %d MiB during the refused uploads, from %d MiB", peak/mib, peak0/mib)
		}
	})
	t.Run("large output", func(t *testing.T) {
		for range 3 {
			out, err := d.call("bigout", strings.Repeat("x", 30))
			if err != nil || len(out) != 30*mib {
				t.Fatalf("bigout: %d bytes, %v", len(out), err)
			}
		}
		rss := d.settledRSS(base+56*mib, 20*time.Second)
		t.Logf("RSS after three 30 MiB outputs: %d MiB", rss/mib)
		if rss > base+56*mib {
			t.Errorf("RSS %d MiB after the outputs, want at most %d MiB", rss/mib, (base+56*mib)/mib)
		}
	})

}

// TestMemoryOversizedPoll: a control plane answering a poll with a 100 MB
// body is refused after at most the link's body limit: the daemon's peak
// RSS stays far below the body's size, and calls go on after it.
func TestMemoryOversizedPoll(t *testing.T) {
	c := startCloudProc(t)
	d := cloudDaemon(t, c)
	base, _ := d.procMem()
	const size = 100 << 20
	var served atomic.Bool
	c.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/poll") || served.Swap(true) {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"calls":[{"seq":1,"id":"huge","task":"echo","lease_ms":1000,"input":"`)
		chunk := bytes.Repeat([]byte("A"), 64<<10)
		for i := 0; i < size; i += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return true // the daemon hung up
			}
		}
		_, _ = io.WriteString(w, `"}]}`)
		return true
	})
	d.waitLog(`bad poll response`, 30*time.Second)
	c.setFault(nil)
	c.enqueue(server.Call{ID: "after", Node: "edge-1", Task: "echo", Input: []byte("hi")})
	if got := c.waitDone("after", 30*time.Second); got.Result == nil || string(got.Result.Output) != "hi" {
		t.Fatalf("call after the oversized poll: %+v", got)
	}
	_, peak := d.procMem()
	t.Logf("RSS before %d MiB, peak %d MiB", base>>20, peak>>20)
	if peak > base+64<<20 { // read whole, the body alone would be 100 MB
		t.Errorf("peak RSS %d MiB after a 100 MB poll body, from %d MiB", peak>>20, base>>20)
	}
}
