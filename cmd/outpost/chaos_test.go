package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

func envInt(k string, d int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return d
}

// TestCloudChaos enqueues calls while the daemon is killed with SIGKILL at
// random moments and the link is cut, then checks that every call has
// exactly one recorded result, no at-most-once call ran twice and no
// idempotent call ran more often than it was interrupted. By default a
// small run (300 calls, 3 kills, 1s cuts); scripts/chaos.sh runs the big
// one through the same test with OUTPOST_CHAOS_* variables.
func TestCloudChaos(t *testing.T) {
	var (
		n     = envInt("OUTPOST_CHAOS_CALLS", 300)
		kills = envInt("OUTPOST_CHAOS_KILLS", 3)
		cuts  = envInt("OUTPOST_CHAOS_CUTS", 2)
		cutMS = envInt("OUTPOST_CHAOS_CUT_MS", 1000)
		gapMS = envInt("OUTPOST_CHAOS_GAP_MS", 400)
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("chaos: %d calls, %d kills, %d cuts of %dms, seed %d", n, kills, cuts, cutMS, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := startCloudProc(t)
	var cut atomic.Bool
	c.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if cut.Load() {
			hangUp(w)
			return true
		}
		return false
	})
	d := cloudDaemon(t, c)
	all := make([]string, n)
	effect := map[string]string{}
	go func() {
		for i := 0; i < n; i += 100 {
			var batch []server.Call
			for k := i; k < min(i+100, n); k++ {
				id := fmt.Sprintf("chaos-%05d", k)
				e := "idempotent"
				if k%2 == 1 {
					e = "at_most_once"
				}
				task, in := "echo", []byte("in "+id)
				if k%50 == 0 {
					task, in = "spin", []byte("1 "+id) // half a second: often running at a kill
				}
				batch = append(batch, server.Call{ID: id, Node: "edge-1", Task: task, Input: in, Effect: e})
			}
			c.enqueue(batch...)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for k := range n {
		id := fmt.Sprintf("chaos-%05d", k)
		all[k] = id
		effect[id] = map[bool]string{true: "at_most_once", false: "idempotent"}[k%2 == 1]
	}
	// The faults, in random order.
	events := make([]string, 0, kills+cuts)
	for range kills {
		events = append(events, "kill")
	}
	for range cuts {
		events = append(events, "cut")
	}
	rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	for _, ev := range events {
		time.Sleep(time.Duration(rng.IntN(gapMS)+50) * time.Millisecond)
		switch ev {
		case "kill":
			d.kill9()
			d.start()
		case "cut":
			cut.Store(true)
			time.Sleep(time.Duration(cutMS) * time.Millisecond)
			cut.Store(false)
		}
	}
	deadline := time.Now().Add(time.Duration(max(60, n/50)) * time.Second)
	var resp struct{ Calls []server.Call }
	for {
		c.api("POST", "/api/v1/calls:status", server.StatusRequest{IDs: all}, &resp)
		final := 0
		for _, sc := range resp.Calls {
			if sc.Final() {
				final++
			}
		}
		if final == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d calls have a result", final, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	statuses := map[string]int{}
	for _, sc := range resp.Calls {
		if sc.State != "done" || sc.Result == nil || sc.Conflicts != 0 {
			t.Errorf("%s: state %s, conflicts %d, result %+v", sc.ID, sc.State, sc.Conflicts, sc.Result)
			continue
		}
		statuses[sc.Result.Status]++
		if sc.Result.Status == "ok" && !strings.HasSuffix(string(sc.Result.Output), sc.ID) {
			t.Errorf("%s: output %q", sc.ID, sc.Result.Output)
		}
	}
	// The journal's count of runs per call.
	var jr struct{ Calls []calls.Record }
	r := d.get("/v1/calls")
	if err := json.NewDecoder(r.Body).Decode(&jr); err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	reruns := 0
	for _, rec := range jr.Calls {
		switch effect[rec.ID] {
		case "at_most_once":
			if rec.Runs > 1 {
				t.Errorf("at-most-once call %s ran %d times", rec.ID, rec.Runs)
			}
		case "idempotent":
			// Each re-run follows a recovery from an interruption, which is
			// what raises the attempt.
			if rec.Runs > rec.Attempt {
				t.Errorf("idempotent call %s ran %d times in %d attempts", rec.ID, rec.Runs, rec.Attempt)
			}
			reruns += rec.Attempt - 1
		}
	}
	if len(jr.Calls) < n {
		t.Errorf("journal holds %d of %d calls", len(jr.Calls), n)
	}
	t.Logf("results by status %v; idempotent re-runs after interruptions: %d", statuses, reruns)
}

// hangUp closes the client's connection without an answer: a cut link.
func hangUp(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
		}
	}
}
