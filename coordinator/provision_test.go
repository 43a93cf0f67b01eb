package coordinator

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// A cloud call that names a manifest object gets the whole task: the
// module, its library and its data file, each checked against its digest;
// a second task sharing the module and the library fetches only its own
// file, in one package (a cached object is not transferred again).
func TestCloudProvisionWholeTask(t *testing.T) {
	srv, err := server.Open(server.Options{Dir: t.TempDir(), Lease: 10 * time.Second, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var packages atomic.Int64
	h := srv.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/package") {
			packages.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { hs.CloseClientConnections(); hs.Close(); _ = srv.Close() })
	oc := &objectCloud{t: t, srv: srv, url: hs.URL}

	wat := func(name string) []byte {
		b, err := os.ReadFile(wasmtest.WAT(t, filepath.Join("..", "runtime", "testdata", name+".wat"), ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	module, math := oc.put(wat("linkfile")), oc.put(wat("lib_math"))
	hello, hola := oc.put([]byte("hello")), oc.put([]byte("hola"))
	manifest := func(file string) string {
		return oc.put([]byte("module: " + module + "\nlibraries: [{name: math, module: " + math + "}]\nfiles: [{path: /data/greeting.txt, source: " + file + "}]\n"))
	}
	rootA, rootB := manifest(hello), manifest(hola)

	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
node: {id: n1}
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
cloud: {url: "`+oc.url+`", poll_wait: 2s, backoff_base: 50ms, backoff_max: 500ms}
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)

	got := oc.run(server.Call{ID: "a1", Task: "greet-a", Digest: rootA})["a1"]
	if got.Status != calls.StatusOK || string(got.Output) != "hello5" {
		t.Fatalf("cold: %+v, want ok hello5", got)
	}
	if n := packages.Load(); n != 1 {
		t.Errorf("cold receiver: %d package requests, want the three objects in one", n)
	}
	for _, d := range []string{module, math, hello} {
		if n := srv.ObjectFetches(d); n != 1 {
			t.Errorf("object %.19s sent %d times, want 1", d, n)
		}
	}
	det, ok := c.Inspect("greet-a")
	if !ok || len(det.Versions) != 1 || det.Versions[0].From != "cloud" || len(det.Versions[0].Libraries) != 1 || len(det.Versions[0].Files) != 1 {
		t.Fatalf("deployed %+v", det)
	}

	// Partly warm: the module and the library are held.
	got = oc.run(server.Call{ID: "b1", Task: "greet-b", Digest: rootB})["b1"]
	if got.Status != calls.StatusOK || string(got.Output) != "hola5" {
		t.Fatalf("partly warm: %+v, want ok hola5", got)
	}
	if n := packages.Load(); n != 2 {
		t.Errorf("partly warm receiver: %d package requests in all, want 2", n)
	}
	for d, want := range map[string]int{module: 1, math: 1, hello: 1, hola: 1} {
		if n := srv.ObjectFetches(d); n != want {
			t.Errorf("object %.19s sent %d times, want %d", d, n, want)
		}
	}
	// Warm: the task is deployed from that root; a call of another root
	// under the same name is a conflict, not a redeploy.
	res := oc.run(server.Call{ID: "a2", Task: "greet-a", Digest: rootA}, server.Call{ID: "a3", Task: "greet-a", Digest: rootB})
	if r := res["a2"]; r.Status != calls.StatusOK || string(r.Output) != "hello5" {
		t.Errorf("warm: %+v", r)
	}
	if r := res["a3"]; r.Status != calls.StatusTaskConflict {
		t.Errorf("another root under the same name: %+v, want task_conflict", r)
	}
	if n := packages.Load(); n != 2 {
		t.Errorf("warm receiver: %d package requests in all, want still 2", n)
	}
}
