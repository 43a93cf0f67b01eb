package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// peerNode starts a coordinator with the task loop (30 s timeout).
func peerNode(t *testing.T) *Coordinator {
	t.Helper()
	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
tasks:
  - {name: loop, module: `+wasmtest.WAT(t, "../runtime/testdata/loop.wat", "")+`, limits: {timeout: 30s}}
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return startCoordinator(t, cfg)
}

// The peer side of a call: the task version is named by its module's
// digest; a task here with another module is a conflict; a task not here
// is deployed from the call's manifest once its objects, checked against
// their digests, are stored.
func TestPeerCallTaskVersion(t *testing.T) {
	c := peerNode(t)
	ctx := context.Background()
	mod, err := os.ReadFile(wasmtest.WAT(t, "../examples/tasks/wat/echo.wat", ""))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(mod)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	manifest := []byte("abi: reactor\nmodule: " + digest + "\n")
	call := func(task, digest string, manifest []byte) (calls.Result, []string, error) {
		return c.PeerCall(ctx, admin.PeerCall{ID: "c1", Caller: "a", Task: task, Digest: digest, Manifest: manifest, Input: []byte("hi")})
	}

	if _, _, err := call("echo", "md5:x", manifest); !errors.Is(err, admin.ErrInvalid) {
		t.Errorf("bad digest: %v, want invalid", err)
	}
	if res, _, err := call("loop", digest, manifest); err != nil || res.Status != calls.StatusTaskConflict {
		t.Errorf("a task here with another module: %+v %v, want task_conflict", res, err)
	}
	if _, missing, err := call("echo", digest, manifest); err != nil || len(missing) != 1 || missing[0] != digest {
		t.Fatalf("task not here: missing %v, %v; want the module", missing, err)
	}
	if err := c.StorePeerObject(ctx, digest, bytes.NewReader([]byte("not the module"))); !errors.Is(err, admin.ErrInvalid) {
		t.Errorf("object that does not match its digest: %v, want invalid", err)
	}
	if err := c.StorePeerObject(ctx, digest, bytes.NewReader(mod)); err != nil {
		t.Fatal(err)
	}
	other := []byte("abi: reactor\nmodule: sha256:" + hex.EncodeToString(make([]byte, 32)) + "\n")
	if _, _, err := call("echo", digest, other); !errors.Is(err, admin.ErrInvalid) {
		t.Errorf("a manifest of another module: %v, want invalid", err)
	}
	res, missing, err := call("echo", digest, manifest)
	if err != nil || len(missing) > 0 || !res.OK() || string(res.Output) != "hi" {
		t.Fatalf("call with the module stored: %+v %v %v", res, missing, err)
	}
	if d := c.deployments()["echo"]; d == nil || d.current().From != fromPeer {
		t.Errorf("echo deployed from %+v, want from peer", d)
	}
}

// A peer's call is canceled here when its request ends (the calling node
// gone, its call canceled): it does not run on to its own timeout.
func TestPeerCallCanceledWithRequest(t *testing.T) {
	c := peerNode(t)
	have, _ := c.moduleOf("loop")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	res, _, err := c.PeerCall(ctx, admin.PeerCall{ID: "c1", Caller: "a", Task: "loop", Digest: "sha256:" + have})
	if err != nil || res.Status != calls.StatusCanceled || time.Since(start) > 10*time.Second {
		t.Errorf("PeerCall: %+v %v after %s, want canceled at once", res, err, time.Since(start))
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.sched.Stats().Running > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the call still runs %s after its request ended", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
