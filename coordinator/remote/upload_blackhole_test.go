package remote_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// heldUpload is one result request the blackhole swallowed.
type heldUpload struct{ arrived, ended time.Time }

// The result endpoints accept the connection and never answer while polls
// keep working (a fault proxy in front of the real server forwards polls
// and swallows result requests). Polling and execution go on; results
// stay in the outbox (journal FINISHED) and, past the outbox cap, the node
// advertises zero capacity, so no more calls are taken than the cap plus
// max_inflight; each upload ends at the read timeout and the uploader backs
// off with full jitter. When the blackhole lifts every result is recorded
// exactly once.
func TestLinkUploadBlackhole(t *testing.T) {
	const (
		timeout  = 600 * time.Millisecond
		base     = 50 * time.Millisecond
		ceil     = 400 * time.Millisecond
		capBytes = 45 // five results of 9 bytes ("in bh-000")
		inflight = 4
		held     = 4 // upload attempts to watch end in the hole
	)
	cl := startCloud(t, server.Options{})
	var (
		hole    atomic.Bool
		mu      sync.Mutex
		uploads []heldUpload
	)
	hole.Store(true)
	cl.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if k := kind(r); (k != "result" && k != "batch") || !hole.Load() {
			return false
		}
		arrived := time.Now()
		// Read the request (so the server notices when the node hangs up),
		// never answer it: the node gives up.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
		mu.Lock()
		uploads = append(uploads, heldUpload{arrived, time.Now()})
		mu.Unlock()
		return true
	})
	heldSoFar := func() []heldUpload {
		mu.Lock()
		defer mu.Unlock()
		return append([]heldUpload(nil), uploads...)
	}
	var logs logBuf
	e := startEdgeLog(t, cl, t.TempDir(), func(c *remote.Config) {
		c.PollWait, c.ReadTimeout = 200*time.Millisecond, timeout
		c.BackoffBase, c.BackoffMax = base, ceil
		c.OutboxMaxBytes, c.MaxInflight = capBytes, inflight
	}, logs.logger())
	list := ids("bh", 20)
	cl.enqueue(echoCalls("edge-1", list, "idempotent")...)

	// Uploads go into the hole, one after another, each cut at the read
	// timeout.
	if !waitFor(30*time.Second, func() bool { return len(heldSoFar()) >= held }) {
		t.Fatalf("only %d uploads ended in the blackhole:\n%s", len(heldSoFar()), logs.String())
	}
	polls := cl.count("poll")
	ran := 0
	for _, id := range list {
		ran += e.ex.count(id)
	}
	// Polling goes on while uploads hang.
	if !waitFor(10*time.Second, func() bool { return cl.count("poll") >= polls+3 }) {
		t.Errorf("polls stopped while uploads hung: %d then %d", polls, cl.count("poll"))
	}
	hs := heldSoFar()
	for i, u := range hs {
		if d := u.ended.Sub(u.arrived); d < timeout*9/10 || d > timeout+3*time.Second {
			t.Errorf("upload %d hung %v: want it cut at the %v read timeout", i, d, timeout)
		}
		if i > 0 && u.arrived.Before(hs[i-1].ended.Add(-50*time.Millisecond)) {
			t.Errorf("upload %d started before upload %d ended: uploads overlap", i, i-1)
		}
	}
	draws := retryDraws(t, logs.String(), "cloud result upload failed")
	if len(draws) < held-1 {
		t.Fatalf("%d upload failures logged for %d held uploads:\n%s", len(draws), len(hs), logs.String())
	}
	for i, d := range draws {
		if lim := min(ceil, base<<i); d < 0 || d > lim {
			t.Errorf("upload backoff draw %d is %v, outside [0, %v]", i, d, lim)
		}
	}
	if l := strings.ToLower(logs.String()); !strings.Contains(l, "deadline exceeded") && !strings.Contains(l, "timeout") {
		t.Errorf("the upload failures do not say they timed out:\n%s", logs.String())
	}

	// Everything that ran is FINISHED in the journal, none reported, and
	// the node stopped taking calls near the cap.
	recs, count, bytes := e.j.Outbox("cloud", len(list))
	if count == 0 || count != len(recs) || bytes < capBytes {
		t.Errorf("outbox %d results (%d listed), %d bytes: want it filled past the %d-byte cap", count, len(recs), bytes, capBytes)
	}
	for _, r := range recs {
		if r.State != calls.Finished {
			t.Errorf("%s in the outbox is %s, want finished", r.ID, r.State)
		}
	}
	if most := (capBytes+8)/9 + inflight; ran > most || count > most {
		t.Errorf("%d calls ran, %d in the outbox: over the cap (%d results) plus max_inflight (%d)", ran, count, (capBytes+8)/9, inflight)
	}
	if g := gauge(t, e.reg, "outpost_cloud_outbox_full"); g != 1 {
		t.Errorf("outpost_cloud_outbox_full = %v while the outbox is over its cap", g)
	}
	pending := 0
	for _, id := range list {
		c, _ := cl.srv.Get(id)
		if c.Result != nil {
			t.Errorf("%s has a result on the server although every upload was swallowed", id)
		}
		if c.State == "pending" {
			pending++
		}
	}
	if pending < len(list)-ran-inflight {
		t.Errorf("only %d calls still pending on the server, %d ran: the node took calls it had no room for", pending, ran)
	}
	if s := e.c.State(); s != remote.StateUp {
		t.Errorf("link state %q while polls work and only uploads hang", s)
	}

	hole.Store(false)
	cl.waitFinal(list, 30*time.Second)
	e.checkOnce(cl, list)
	for _, id := range list {
		if c, _ := cl.srv.Get(id); c.Replays != 0 || c.Conflicts != 0 {
			t.Errorf("%s: %d replays, %d conflicts: want one recorded result", id, c.Replays, c.Conflicts)
		}
	}
}

// gauge reads a gauge without labels from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
