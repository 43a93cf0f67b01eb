package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/format"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// echoVariants returns n distinct modules that all echo: the example echo
// module with a custom section naming its variant.
func echoVariants(t *testing.T, n int) [][]byte {
	t.Helper()
	dst := wasmtest.WAT(t, "../examples/tasks/wat/echo.wat", "")
	base, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	mods := make([][]byte, n)
	for i := range mods {
		mods[i] = wasmtest.Variant(base, fmt.Sprint("variant-", i))
	}
	return mods
}

func digestOf(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// blobFiles lists the blob directory.
func blobFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func hasBlobFile(dir, digest string) bool {
	_, err := os.Stat(filepath.Join(dir, digest+".wasm"))
	return err == nil
}

// deployModule stores mod as an upload and deploys it as name.
func deployModule(t *testing.T, c *Coordinator, name string, mod []byte) {
	t.Helper()
	d, n, err := c.StoreBlob(context.Background(), bytes.NewReader(mod))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Deploy(context.Background(), name, admin.Upload{Module: d, Size: n}); err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
}

// TestBlobGC: blobs nothing references are deleted at start (with the
// leftovers of interrupted uploads), after an update drops the oldest kept
// version, after a rollback and after a remove; blobs of kept versions,
// of other tasks and of config tasks stay; a blob stored for a deploy not
// yet recorded is never deleted.
func TestBlobGC(t *testing.T) {
	mods := echoVariants(t, maxVersions+4)
	dataDir := t.TempDir()
	blobs := filepath.Join(dataDir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o750); err != nil {
		t.Fatal(err)
	}
	// Before the start: an orphan blob, an interrupted upload, a blob a
	// config task uses, and a file that is not ours.
	orphan, cfgMod := mods[len(mods)-1], mods[len(mods)-2]
	for name, b := range map[string][]byte{
		digestOf(orphan) + ".wasm": orphan, ".upload-1234": []byte("half an upl"),
		digestOf(cfgMod) + ".wasm": cfgMod, "README": []byte("mine"),
	} {
		if err := os.WriteFile(filepath.Join(blobs, name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	yaml := "data_dir: " + dataDir + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
tasks: [{name: cfgtask, module: ` + filepath.Join(blobs, digestOf(cfgMod)+".wasm") + `}]
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	onlyConfigBlob := []string{"README", format.FileName, digestOf(cfgMod) + ".wasm"}
	sort.Strings(onlyConfigBlob)
	if got, want := blobFiles(t, blobs), onlyConfigBlob; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after the start sweep: %v, want %v", got, want)
	}
	if n := counterValue(t, c.reg, "outpost_registry_blobs_reclaimed_total"); n != 2 {
		t.Errorf("blobs reclaimed %v, want 2", n)
	}
	if n := counterValue(t, c.reg, "outpost_registry_blob_bytes_reclaimed_total"); n != float64(len(orphan)+len("half an upl")) {
		t.Errorf("bytes reclaimed %v, want %d", n, len(orphan)+len("half an upl"))
	}

	t.Run("update drops the oldest version", func(t *testing.T) {
		for i := range maxVersions {
			deployModule(t, c, "svc", mods[i])
		}
		deployModule(t, c, "other", mods[0]) // shared with svc's first version
		deployModule(t, c, "svc", mods[maxVersions])
		// svc keeps versions 2..6; mods[0] is still other's.
		for i := range maxVersions + 1 {
			if !hasBlobFile(blobs, digestOf(mods[i])) {
				t.Fatalf("blob of module %d deleted while referenced", i)
			}
		}
		deployModule(t, c, "svc", mods[maxVersions+1]) // versions 3..7: mods[1] falls out
		if hasBlobFile(blobs, digestOf(mods[1])) {
			t.Fatal("blob of the version that fell out of the history is still there")
		}
		if !hasBlobFile(blobs, digestOf(mods[0])) {
			t.Fatal("blob another task uses was deleted")
		}
	})
	t.Run("rollback drops the newest version", func(t *testing.T) {
		if _, err := c.Rollback(context.Background(), "svc"); err != nil {
			t.Fatal(err)
		}
		if hasBlobFile(blobs, digestOf(mods[maxVersions+1])) {
			t.Fatal("blob of the rolled back version is still there")
		}
		r, err := c.Call(context.Background(), calls.New("svc", []byte("hi"), calls.Source{Kind: "test"}))
		if err != nil || string(r.Output) != "hi" {
			t.Fatalf("call after rollback: %+v %v", r, err)
		}
	})
	t.Run("a stored blob not yet deployed is kept", func(t *testing.T) {
		// An upload stored, its deploy not recorded yet: a GC now (a remove
		// of another task) must not delete it.
		pending := mods[maxVersions+1]
		d, n, err := c.StoreBlob(context.Background(), bytes.NewReader(pending))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Remove(context.Background(), "other"); err != nil {
			t.Fatal(err)
		}
		if !hasBlobFile(blobs, d) {
			t.Fatal("GC deleted a blob a deploy in progress holds")
		}
		if _, err := c.Deploy(context.Background(), "late", admin.Upload{Module: d, Size: n}); err != nil {
			t.Fatalf("deploy after a GC: %v", err)
		}
		// An upload released without a deploy (the request failed) is
		// deleted by the next GC.
		lost := []byte("not a module")
		d2, _, err := c.StoreBlob(context.Background(), bytes.NewReader(lost))
		if err != nil {
			t.Fatal(err)
		}
		c.Release(admin.Upload{Module: d2})
		if err := c.Remove(context.Background(), "late"); err != nil {
			t.Fatal(err)
		}
		if hasBlobFile(blobs, d2) || hasBlobFile(blobs, d) {
			t.Fatal("a released upload or the removed task's blob is still there")
		}
	})
	t.Run("a refused deploy deletes its blobs at once", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			up   func(d string, n int64) admin.Upload
		}{
			{"not a module", func(d string, n int64) admin.Upload { return admin.Upload{Module: d, Size: n} }},
			{"bad manifest", func(d string, n int64) admin.Upload {
				return admin.Upload{Module: d, Size: n, Manifest: []byte("abi: [")}
			}},
		} {
			bad := []byte("refused: " + tc.name)
			d, n, err := c.StoreBlob(context.Background(), bytes.NewReader(bad))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Deploy(context.Background(), "refused", tc.up(d, n)); err == nil {
				t.Fatalf("%s: deployed", tc.name)
			}
			if hasBlobFile(blobs, d) {
				t.Fatalf("%s: the refused deploy's blob is still there", tc.name)
			}
		}
		if !hasBlobFile(blobs, digestOf(mods[maxVersions])) {
			t.Fatal("a refused deploy deleted a blob a deployed task uses")
		}
	})
	t.Run("remove deletes every version's blobs", func(t *testing.T) {
		if err := c.Remove(context.Background(), "svc"); err != nil {
			t.Fatal(err)
		}
		if got, want := blobFiles(t, blobs), onlyConfigBlob; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("after removing every deployed task: %v, want %v", got, want)
		}
	})
}
