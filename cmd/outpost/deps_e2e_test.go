package main

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/outpost-edge/outpost/internal/format"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// fixtureWasm compiles runtime/testdata/NAME.wat into dir/NAME.wasm.
func fixtureWasm(t *testing.T, dir, name string) string {
	t.Helper()
	return wasmtest.WAT(t, filepath.Join("..", "..", "runtime", "testdata", name+".wat"), dir)
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// blobCount counts the stored blobs of d (not upload temp files, nor the
// store's format file).
func (d *daemon) blobCount() int {
	d.t.Helper()
	ents, err := os.ReadDir(filepath.Join(d.dir, "data", "blobs", "sha256"))
	if err != nil {
		d.t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") && e.Name() != format.FileName {
			n++
		}
	}
	return n
}

// Deployed tasks with libraries and data files uploaded with them, a
// library shared by two tasks and stored once, refusals naming the chain,
// and libraries fetched from pinned URLs: all through the real binary.
func TestTaskDeployDependencies(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"linkfile", "linkgeo", "linkcyc", "lib_math", "lib_math2", "lib_geo", "lib_cyc_a", "lib_cyc_b"} {
		fixtureWasm(t, dir, n)
	}
	writeFile(t, filepath.Join(dir, "greeting.txt"), "hi ")
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
`)
	deploy := func(name, module, manifest string) (string, int) {
		t.Helper()
		m := writeFile(t, filepath.Join(dir, name+".yaml"), manifest)
		args := []string{"task", "deploy", name}
		if module != "" {
			args = append(args, filepath.Join(dir, module+".wasm"))
		}
		_, errOut, code := d.cli(append(args, "--manifest", m)...)
		return errOut, code
	}
	mustCall := func(task, want string) {
		t.Helper()
		if got, err := d.call(task, ""); err != nil || got != want {
			t.Fatalf("call %s: %q %v, want %q", task, got, err, want)
		}
	}

	// A task using a library and a data file, uploaded with the task
	// (references relative to the manifest).
	errOut, code := deploy("greet", "linkfile", `
libraries: [{name: math, module: lib_math.wasm}]
files: [{path: /data/greeting.txt, source: greeting.txt}]
`)
	if code != 0 || !strings.Contains(errOut, "and 2 objects (454 B)") || !strings.Contains(errOut, "deployed greet version 1") {
		t.Fatalf("deploy greet: %d\n%s", code, errOut)
	}
	mustCall("greet", "hi 5")
	if n := d.blobCount(); n != 3 {
		t.Fatalf("%d blobs after the first deploy, want 3 (module, library, file)", n)
	}

	// A second task sharing math (through geo): math is stored once. The
	// module comes from the manifest here.
	errOut, code = deploy("geo", "", `
module: linkgeo.wasm
libraries: [{name: geo, module: lib_geo.wasm}, {name: math, module: lib_math.wasm}]
`)
	if code != 0 {
		t.Fatalf("deploy geo: %d\n%s", code, errOut)
	}
	mustCall("geo", "6")
	if n := d.blobCount(); n != 5 {
		t.Fatalf("%d blobs after the second deploy, want 5 (math stored once)", n)
	}
	out, _, _ := d.cli("task", "inspect", "greet")
	if !strings.Contains(out, "library math: sha256:") || !strings.Contains(out, "file /data/greeting.txt: sha256:") {
		t.Fatalf("inspect greet: %s", out)
	}
	out, _, _ = d.cli("task", "inspect", "geo", "--json")
	if !strings.Contains(out, `"libraries"`) || !strings.Contains(out, `"name": "math"`) {
		t.Fatalf("inspect geo: %s", out)
	}

	// Refusals with the runtime's chain: a cycle, a missing library, a
	// version conflict. The running tasks are untouched.
	for _, c := range []struct{ name, module, manifest, want string }{
		{"cyc", "linkcyc", "libraries: [{name: a, module: lib_cyc_a.wasm}, {name: b, module: lib_cyc_b.wasm}]\n",
			"import cycle: cyc -> a -> b -> a"},
		{"missing", "linkgeo", "libraries: [{name: geo, module: lib_geo.wasm}]\n",
			`imports module "math" which no library provides (missing -> geo -> math)`},
		{"conflict", "linkgeo", "libraries: [{name: geo, module: lib_geo.wasm}, {name: math, module: lib_math.wasm}, {name: math, module: lib_cyc_a.wasm}]\n",
			`version conflict: library "math"`},
		{"nofile", "linkfile", "libraries: [{name: math, module: nowhere.wasm}]\n", "nowhere.wasm"},
	} {
		t.Run(c.name, func(t *testing.T) {
			errOut, code := deploy(c.name, c.module, c.manifest)
			if code != 1 || !strings.Contains(errOut, c.want) {
				t.Fatalf("deploy %s: %d, want the error %q:\n%s", c.name, code, c.want, errOut)
			}
		})
	}
	mustCall("greet", "hi 5")

	// Pinned URLs, fetched by the daemon once.
	math2, err := os.ReadFile(filepath.Join(dir, "lib_math2.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/lib/math2.wasm" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(math2)
	}))
	defer srv.Close()
	sum := sha256.Sum256(math2)
	pinned := srv.URL + "/lib/math2.wasm#sha256=" + hex.EncodeToString(sum[:])
	for _, name := range []string{"greet2", "greet3"} {
		errOut, code = deploy(name, "linkfile", "libraries: [{name: math, module: \""+pinned+"\"}]\nfiles: [{path: /data/greeting.txt, source: greeting.txt}]\n")
		if code != 0 {
			t.Fatalf("deploy %s with a pinned library: %d\n%s", name, code, errOut)
		}
		mustCall(name, "hi /") // '0' + (2 - 3)
	}
	if hits.Load() != 1 {
		t.Fatalf("the pinned library was fetched %d times, want 1", hits.Load())
	}
	blobs := d.blobCount()

	// A wrong digest is refused naming the URL; nothing is stored.
	wrong := srv.URL + "/lib/math2.wasm#sha256=" + strings.Repeat("ab", 32)
	errOut, code = deploy("wrong", "linkfile", "libraries: [{name: math, module: \""+wrong+"\"}]\n")
	if code != 1 || !strings.Contains(errOut, wrong) || !strings.Contains(errOut, "digest mismatch") {
		t.Fatalf("deploy with a wrong digest: %d\n%s", code, errOut)
	}
	// Not pinned, and plain http to a host that is not loopback.
	errOut, code = deploy("unpinned", "linkfile", "libraries: [{name: math, module: \""+srv.URL+"/lib/math2.wasm\"}]\n")
	if code != 1 || !strings.Contains(errOut, "not pinned") {
		t.Fatalf("deploy with an unpinned URL: %d\n%s", code, errOut)
	}
	errOut, code = deploy("remote", "linkfile", "libraries: [{name: math, module: \"http://example.com/m.wasm#sha256="+strings.Repeat("ab", 32)+"\"}]\n")
	if code != 1 || !strings.Contains(errOut, "loopback") {
		t.Fatalf("deploy with http to a remote host: %d\n%s", code, errOut)
	}
	if n := d.blobCount(); n != blobs {
		t.Fatalf("%d blobs after refused fetches, want %d", n, blobs)
	}
	if hits.Load() != 2 { // the first fetch and the wrong digest; the others are refused before fetching
		t.Fatalf("%d requests to the server, want 2", hits.Load())
	}
}
