package coordinator

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// objectCloud is a real control plane in process with the example modules
// stored as objects.
type objectCloud struct {
	t    *testing.T
	srv  *server.Server
	url  string
	hold atomic.Pointer[chan struct{}] // set: polls wait until it closes
}

func startObjectCloud(t *testing.T) *objectCloud {
	t.Helper()
	srv, err := server.Open(server.Options{Dir: t.TempDir(), Lease: 10 * time.Second, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	oc := &objectCloud{t: t, srv: srv}
	h := srv.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ch := oc.hold.Load(); ch != nil && strings.HasSuffix(r.URL.Path, "/poll") {
			select {
			case <-*ch:
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { hs.CloseClientConnections(); hs.Close(); _ = srv.Close() })
	oc.url = hs.URL
	return oc
}

// holdPolls makes new polls wait and returns once no poll is parked on
// the server.
func (oc *objectCloud) holdPolls() {
	oc.t.Helper()
	ch := make(chan struct{})
	oc.hold.Store(&ch)
	deadline := time.Now().Add(30 * time.Second)
	for oc.polling() {
		if time.Now().After(deadline) {
			oc.t.Fatal("a poll is still parked on the server after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (oc *objectCloud) releasePolls() {
	if ch := oc.hold.Swap(nil); ch != nil {
		close(*ch)
	}
}

func (oc *objectCloud) polling() bool {
	resp, err := http.Get(oc.url + "/api/v1/nodes")
	if err != nil {
		oc.t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Nodes []server.NodeInfo }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		oc.t.Fatal(err)
	}
	for _, n := range list.Nodes {
		if n.Polling {
			return true
		}
	}
	return false
}

// put stores bytes as an object and returns its digest.
func (oc *objectCloud) put(b []byte) string {
	oc.t.Helper()
	info, err := oc.srv.PutObject(strings.NewReader(string(b)))
	if err != nil {
		oc.t.Fatal(err)
	}
	return info.Digest
}

// run enqueues calls for node n1 and returns their results once final.
func (oc *objectCloud) run(cs ...server.Call) map[string]calls.Result {
	oc.t.Helper()
	ids := make([]string, len(cs))
	for i := range cs {
		cs[i].Node, cs[i].Effect = "n1", "idempotent"
		ids[i] = cs[i].ID
	}
	items, err := oc.srv.Enqueue(cs)
	if err != nil {
		oc.t.Fatal(err)
	}
	for _, it := range items {
		if !it.Created {
			oc.t.Fatalf("enqueue refused: %+v", it)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := oc.srv.WaitFinal(ctx, ids...); err != nil {
		oc.t.Fatal(err)
	}
	out := map[string]calls.Result{}
	for _, id := range ids {
		c, _ := oc.srv.Get(id)
		if c.Result == nil {
			oc.t.Fatalf("call %s final without a result: %+v", id, c)
		}
		out[id] = calls.Result{Status: calls.Status(c.Result.Status), Output: c.Result.Output, Error: c.Result.Error}
	}
	return out
}

func exampleModule(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../examples/tasks/build/" + name + ".wasm")
	if err != nil {
		t.Fatalf("%v (run scripts/build-examples.sh)", err)
	}
	return b
}

// A daemon with its cloud link to a real control plane in process: calls
// naming their task's code object by digest deploy it once and run; the
// failure cases finish the call with a status that says why.
func TestCloudCodeObjects(t *testing.T) {
	oc := startObjectCloud(t)
	upper, echo := exampleModule(t, "upper"), exampleModule(t, "echo")
	dUpper, dEcho := oc.put(upper), oc.put(echo)

	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
node: {id: n1}
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
cloud: {url: "`+oc.url+`", poll_wait: 2s, backoff_base: 50ms, backoff_max: 500ms}
tasks: [{name: echo, module: builtin:echo}]
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	fetches := func(result string) float64 {
		m, err := c.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m {
			if f.GetName() != "outpost_cloud_object_fetches_total" {
				continue
			}
			for _, s := range f.Metric {
				if s.Label[0].GetValue() == result {
					return s.GetCounter().GetValue()
				}
			}
		}
		return 0
	}

	t.Run("fetch deploy run", func(t *testing.T) {
		got := oc.run(server.Call{ID: "first", Task: "up", Digest: dUpper, Input: []byte("abc")})["first"]
		if got.Status != calls.StatusOK || string(got.Output) != "ABC" {
			t.Fatalf("result %+v, want ok ABC", got)
		}
		if n := oc.srv.ObjectFetches(dUpper); n != 1 {
			t.Fatalf("server served %d fetches, want 1", n)
		}
		det, ok := c.Inspect("up")
		if !ok || len(det.Versions) != 1 || det.Versions[0].From != "cloud" || "sha256:"+det.Versions[0].Digest != dUpper {
			t.Fatalf("deployed task %+v, want one version from cloud with %s", det, dUpper)
		}
		if v := det.Versions[0]; v.KVQuota != 0 || len(v.Publish) != 0 || len(v.Call) != 0 || v.Concurrency != tasks.Defaults.Limits.Concurrency {
			t.Fatalf("a cloud-deployed task got permissions or limits other than the defaults: %+v", v)
		}
	})

	t.Run("cached deployment and one fetch per digest", func(t *testing.T) {
		// More calls of the deployed task, and calls of two new names with the
		// same digest at once: no second fetch.
		res := oc.run(
			server.Call{ID: "again1", Task: "up", Digest: dUpper, Input: []byte("x")},
			server.Call{ID: "again2", Task: "up", Digest: dUpper, Input: []byte("y")},
			server.Call{ID: "other1", Task: "up-b", Digest: dUpper, Input: []byte("z")},
			server.Call{ID: "other2", Task: "up-c", Digest: dUpper, Input: []byte("w")},
		)
		for id, want := range map[string]string{"again1": "X", "again2": "Y", "other1": "Z", "other2": "W"} {
			if r := res[id]; r.Status != calls.StatusOK || string(r.Output) != want {
				t.Errorf("%s: %+v, want ok %s", id, r, want)
			}
		}
		if n := oc.srv.ObjectFetches(dUpper); n != 1 {
			t.Fatalf("server served %d fetches, want 1", n)
		}
		// Three new names of one object that is not stored yet, at once.
		res = oc.run(
			server.Call{ID: "e1", Task: "echo-1", Digest: dEcho, Input: []byte("1")},
			server.Call{ID: "e2", Task: "echo-2", Digest: dEcho, Input: []byte("2")},
			server.Call{ID: "e3", Task: "echo-3", Digest: dEcho, Input: []byte("3")},
		)
		for id, want := range map[string]string{"e1": "1", "e2": "2", "e3": "3"} {
			if r := res[id]; r.Status != calls.StatusOK || string(r.Output) != want {
				t.Errorf("%s: %+v, want ok %s", id, r, want)
			}
		}
		if n := oc.srv.ObjectFetches(dEcho); n != 1 {
			t.Fatalf("server served %d fetches of one object for three concurrent calls, want 1", n)
		}
		if n := fetches("ok"); n != 2 {
			t.Fatalf("outpost_cloud_object_fetches_total{result=ok} %v, want 2", n)
		}
	})

	t.Run("unknown object", func(t *testing.T) {
		// Enqueue checks that the object exists: it is removed after the
		// enqueue and before the node polls.
		oc.holdPolls()
		d := oc.put([]byte("gone before the node fetches it"))
		items, err := oc.srv.Enqueue([]server.Call{{ID: "gone", Node: "n1", Task: "gone", Digest: d}})
		if err != nil || !items[0].Created {
			t.Fatalf("enqueue: %+v %v", items, err)
		}
		if err := os.Remove(oc.srv.ObjectPath(d)); err != nil {
			t.Fatal(err)
		}
		oc.releasePolls()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := oc.srv.WaitFinal(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		got, _ := oc.srv.Get("gone")
		t.Logf("error: %s", got.Result.Error)
		if got.Result.Status != string(calls.StatusFetchFailed) || !strings.Contains(got.Result.Error, "not found") || !strings.Contains(got.Result.Error, d) {
			t.Fatalf("result %+v, want fetch_failed naming %s, not found", got.Result, d)
		}
		if _, ok := c.Inspect("gone"); ok {
			t.Fatal("a task was deployed from a missing object")
		}
	})

	t.Run("tampered object", func(t *testing.T) {
		d := oc.put([]byte("the bytes the operator put"))
		if err := os.WriteFile(oc.srv.ObjectPath(d), upper, 0o600); err != nil {
			t.Fatal(err)
		}
		got := oc.run(server.Call{ID: "tampered", Task: "tampered", Digest: d, Input: []byte("a")})["tampered"]
		t.Logf("error: %s", got.Error)
		if got.Status != calls.StatusFetchFailed || !strings.Contains(got.Error, "hash mismatch") || !strings.Contains(got.Error, d) {
			t.Fatalf("result %+v, want fetch_failed: hash mismatch naming %s", got, d)
		}
		if _, ok := c.Inspect("tampered"); ok {
			t.Fatal("a task was deployed from tampered bytes")
		}
		if n := fetches("mismatch"); n != 1 {
			t.Fatalf("outpost_cloud_object_fetches_total{result=mismatch} %v, want 1", n)
		}
		// Nothing of it was kept: a later call fetches again.
		if hasBlobFile(filepath.Dir(c.blobPath("x")), strings.TrimPrefix(d, "sha256:")) {
			t.Fatal("tampered bytes stored under the digest")
		}
	})

	t.Run("digest mismatch with a loaded task", func(t *testing.T) {
		res := oc.run(
			server.Call{ID: "conflict-deployed", Task: "up", Digest: dEcho, Input: []byte("a")},
			server.Call{ID: "conflict-config", Task: "echo", Digest: dUpper, Input: []byte("a")},
		)
		for id, have := range map[string]string{"conflict-deployed": dUpper} {
			r := res[id]
			t.Logf("error: %s", r.Error)
			if r.Status != calls.StatusTaskConflict || !strings.Contains(r.Error, have) || !strings.Contains(r.Error, dEcho) {
				t.Errorf("%s: %+v, want task_conflict naming %s and %s", id, r, have, dEcho)
			}
		}
		if r := res["conflict-config"]; r.Status != calls.StatusTaskConflict || !strings.Contains(r.Error, dUpper) {
			t.Errorf("config task: %+v, want task_conflict naming %s", r, dUpper)
		}
		// The local task is unchanged and still runs.
		if got := oc.run(server.Call{ID: "still-upper", Task: "up", Input: []byte("q")})["still-upper"]; string(got.Output) != "Q" {
			t.Fatalf("task up after the conflict: %+v", got)
		}
		if det, _ := c.Inspect("up"); len(det.Versions) != 1 {
			t.Fatalf("task up has %d versions after a conflict, want 1", len(det.Versions))
		}
	})

	t.Run("size cap", func(t *testing.T) {
		// The daemon's executor with a 16-byte cap, through the same link.
		x := &objectExecutor{executor: executor{c.engine}, c: c, max: 16, flights: map[string]*flight{},
			fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "f"}, []string{"result"})}
		d := oc.put([]byte("seventeen bytes!!"))
		res, ok := x.resolve(context.Background(), "big", d)
		if ok || res.Status != calls.StatusFetchFailed || !strings.Contains(res.Error, "over the cap of 16") {
			t.Fatalf("result %+v, want fetch_failed over the cap", res)
		}
		if hasBlobFile(filepath.Dir(c.blobPath("x")), strings.TrimPrefix(d, "sha256:")) {
			t.Fatal("an object over the cap was stored")
		}
	})

	t.Run("unknown task without a digest", func(t *testing.T) {
		got := oc.run(server.Call{ID: "nodigest", Task: "nosuch", Input: []byte("a")})["nodigest"]
		if got.Status != calls.StatusUnknown {
			t.Fatalf("result %+v, want unknown_task", got)
		}
	})
}
