package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// balancer spreads requests over control-plane replicas round robin, as a
// load balancer in front of them would; a replica that refuses
// connections is dropped from the rotation. A request that fails on its
// way is answered 502 (the node retries it).
type balancer struct {
	url     string
	proxies []*httputil.ReverseProxy
	dead    []atomic.Bool
	served  []atomic.Int64 // requests sent to each replica
	next    atomic.Uint64
}

func newBalancer(t *testing.T, backends ...string) *balancer {
	t.Helper()
	b := &balancer{dead: make([]atomic.Bool, len(backends)), served: make([]atomic.Int64, len(backends))}
	for i, be := range backends {
		u, _ := url.Parse(be)
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, syscall.ECONNREFUSED) {
				b.dead[i].Store(true)
			}
			w.WriteHeader(http.StatusBadGateway)
		}
		b.proxies = append(b.proxies, rp)
	}
	hs := &http.Server{Handler: b}
	ln := listenLoopback(t)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	b.url = "http://" + ln.Addr().String()
	return b
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for range len(b.proxies) {
		i := int(b.next.Add(1) % uint64(len(b.proxies)))
		if !b.dead[i].Load() {
			b.served[i].Add(1)
			b.proxies[i].ServeHTTP(w, r)
			return
		}
	}
	w.WriteHeader(http.StatusBadGateway)
}

// Two and three outpost-cloud replicas on one PostgreSQL database behind a
// round-robin balancer, and a real outpost node. Mid-load one replica is
// killed with -9 (polls parked on it, results in flight to it): every
// call, half at-most-once, is recorded once with its own output, none
// conflicts, and the node ran each exactly once (journal runs 1).
func TestCloudReplicasKill9(t *testing.T) {
	skipShort(t, "PostgreSQL and up to three outpost-cloud processes; remote/server TestReplicasExactlyOnce covers replicas")
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprint(n, "_replicas"), func(t *testing.T) { testCloudReplicasKill9(t, n) })
	}
}

func testCloudReplicasKill9(t *testing.T, replicas int) {
	pg := pgtest.Start(t)
	storeFile := filepath.Join(t.TempDir(), "store.url")
	if err := os.WriteFile(storeFile, []byte(pg.NewDatabase()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var reps []*cloudProc
	var urls []string
	for range replicas {
		reps = append(reps, startCloudProcArgs(t, "--store-file", storeFile, "--data", filepath.Join(t.TempDir(), "cloud"), "--replica-timeout", "2s"))
		urls = append(urls, reps[len(reps)-1].url)
	}
	lb := newBalancer(t, urls...)
	d := cloudDaemonAt(t, lb.url)
	const total = 300
	var all []server.Call
	for i := range total {
		effect, in := "idempotent", fmt.Sprintf("0 call %d", i)
		if i%2 == 1 {
			effect = "at_most_once"
		}
		if i%25 == 0 {
			in = fmt.Sprintf("1 slow call %d", i) // runs 500 ms: some run while the replica dies
		}
		all = append(all, server.Call{ID: fmt.Sprint("r", i), Node: "edge-1", Task: "spin", Input: []byte(in), Effect: effect})
	}
	reps[0].enqueue(all[:total/2]...)
	deadline := time.Now().Add(60 * time.Second)
	for done := 0; done < total/6; {
		var resp struct{ Calls []server.Call }
		reps[0].api("GET", "/api/v1/calls?state=done", nil, &resp)
		done = len(resp.Calls)
		if time.Now().After(deadline) {
			t.Fatalf("only %d calls done", done)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if lb.served[1].Load() == 0 {
		t.Fatal("replica 1 served no request before it was killed")
	}
	_ = reps[1].cmd.Process.Signal(syscall.SIGKILL)
	<-reps[1].exited
	before := lb.served[0].Load()
	reps[0].enqueue(all[total/2:]...)
	for _, c := range all {
		got := reps[0].waitDone(c.ID, 60*time.Second)
		if got.State != "done" || got.Result.Status != "ok" || string(got.Result.Output) != string(c.Input) || got.Conflicts != 0 {
			t.Fatalf("call %s: %+v result %+v", c.ID, got, got.Result)
		}
	}
	for _, c := range all {
		if r := d.waitState(c.ID, calls.Reported, 20*time.Second); r.Runs != 1 {
			t.Fatalf("call %s (%s) ran %d times", c.ID, c.Effect, r.Runs)
		}
	}
	if lb.served[0].Load() == before {
		t.Error("the surviving replica served nothing after the kill")
	}
}
