package remote_test

import (
	"bytes"
	"net/http"
	goruntime "runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// TestLinkOversizedPoll: a misbehaving control plane answering polls with
// 100 MB bodies (with a Content-Length, then chunked) is refused without
// the node reading more than remote.MaxResponseBody of either (the heap
// grows by far less than one body), counted as bad_response, and the link
// goes on with the calls of the next polls.
func TestLinkOversizedPoll(t *testing.T) {
	const size = 100 << 20
	head := []byte(`{"calls":[{"seq":1,"id":"huge","task":"echo","lease_ms":1000,"input":"`)
	tail := []byte(`"}]}`)
	chunk := bytes.Repeat([]byte("A"), 64<<10)
	var n, sent atomic.Int64
	cl := startCloud(t, server.Options{})
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if kind(r) != "poll" || n.Add(1) > 2 {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		if n.Load() == 1 {
			w.Header().Set("Content-Length", strconv.Itoa(len(head)+size+len(tail)))
		}
		if _, err := w.Write(head); err != nil {
			return true
		}
		for i := 0; i < size; i += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return true // the node hung up
			}
			sent.Add(int64(len(chunk)))
		}
		_, _ = w.Write(tail)
		return true
	})
	var before goruntime.MemStats
	goruntime.ReadMemStats(&before)
	e := startEdge(t, cl, t.TempDir(), nil)
	list := ids("after-huge", 3)
	cl.enqueue(echoCalls("edge-1", list, "at_most_once")...)
	cl.waitFinal(list, 20*time.Second)
	var after goruntime.MemStats
	goruntime.ReadMemStats(&after)
	if got := sample(t, e.reg, "outpost_cloud_polls_total", "result", "bad_response"); got < 2 {
		t.Errorf("bad_response polls %v, want 2", got)
	}
	// Both bodies read whole would allocate well over 200 MB; the first is
	// refused by its Content-Length, the second read up to the limit.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size {
		t.Errorf("allocated %d MB during two 100 MB poll bodies, want less than one (the limit is %d MB)", alloc>>20, remote.MaxResponseBody>>20)
	}
	e.checkOnce(cl, list)
}
