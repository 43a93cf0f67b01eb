package coordinator

import (
	"context"
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/config"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// hostopsWasm builds runtime/testdata/hostops.wat (see its header for the
// input layout).
func hostopsWasm(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "hostops.wasm")
	if out, err := exec.Command("wat2wasm", "../runtime/testdata/hostops.wat", "-o", dst).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, out)
	}
	return dst
}

// opInput lays out one hostops call: op, args and extra, then the data
// parts; string parts become (ptr, len) pairs at the front of args.
func opInput(op uint32, parts []string, args []uint32, extra uint32) []byte {
	var ptrs []uint32
	var d []byte
	for _, p := range parts {
		ptrs = append(ptrs, 1056+uint32(len(d)), uint32(len(p)))
		d = append(d, p...)
	}
	args = append(ptrs, args...)
	in := make([]byte, 32)
	binary.LittleEndian.PutUint32(in, op)
	for i, a := range args {
		binary.LittleEndian.PutUint32(in[4+4*i:], a)
	}
	binary.LittleEndian.PutUint32(in[28:], extra)
	return append(in, d...)
}

func TestHostServices(t *testing.T) {
	mod := hostopsWasm(t)
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
tasks:
  - {name: echo, module: builtin:echo}
  - name: ops
    module: ` + mod + `
    limits: {concurrency: 1}
    permissions: {publish: ["out/#"], call: [echo], kv_quota: 100}
`
	cfg, err := config.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	ctx := context.Background()
	run := func(in []byte) (int64, string, *calls.Call) {
		t.Helper()
		call := calls.New("ops", in, calls.Source{Kind: "test", Ref: "t"})
		r, err := c.Call(ctx, call)
		if err != nil || !r.OK() {
			t.Fatalf("call: %+v %v", r, err)
		}
		n := int64(binary.LittleEndian.Uint64(r.Output))
		return n, string(r.Output[8:]), call
	}

	// publish through the daemon's MQTT client
	sub := mqtttest.Sub(t, "tcp://"+c.mqttAddr(), "out/#", 1)
	if n, _, _ := run(opInput(2, []string{"out/a", "hello"}, []uint32{1}, 0)); n != 0 {
		t.Fatalf("publish = %d", n)
	}
	if got := sub.Wait(1, 5*time.Second); got[0] != "out/a hello" {
		t.Fatalf("received %q", got)
	}
	if n, _, _ := run(opInput(2, []string{"in/a", "x"}, []uint32{0}, 0)); n != -1 {
		t.Fatalf("denied publish = %d", n)
	}

	// call another task through the scheduler
	if n, out, _ := run(opInput(7, []string{"echo", "ping"}, []uint32{520, 16}, 16)); n != 4 || out[:4] != "ping" {
		t.Fatalf("call = %d %q", n, out)
	}

	// meta: the call id the scheduler gave
	n, out, call := run(opInput(9, nil, []uint32{0, 520, 40}, 40))
	if n != int64(len(call.ID)) || out[:n] != call.ID {
		t.Fatalf("meta id = %d %q, want %q", n, out, call.ID)
	}
	if n, out, _ := run(opInput(9, nil, []uint32{1, 520, 40}, 40)); out[:n] != "test:t" {
		t.Fatalf("meta source = %q", out[:max(n, 0)])
	}

	// kv in the state store, with the quota
	if n, _, _ := run(opInput(4, []string{"k1", "v1"}, nil, 0)); n != 0 {
		t.Fatalf("kv_put = %d", n)
	}
	if n, out, _ := run(opInput(3, []string{"k1"}, []uint32{520, 8}, 8)); n != 2 || out[:2] != "v1" {
		t.Fatalf("kv_get = %d %q", n, out)
	}
	if n, _, _ := run(opInput(4, []string{"k2", strings.Repeat("x", 97)}, nil, 0)); n != -5 {
		t.Fatalf("kv_put over quota = %d", n)
	}
	// overwriting counts the entry once
	for range 10 {
		if n, _, _ := run(opInput(4, []string{"k1", strings.Repeat("y", 90)}, nil, 0)); n != 0 {
			t.Fatalf("kv_put overwrite = %d", n)
		}
	}
	if n, _, _ := run(opInput(5, []string{"k1"}, nil, 0)); n != 0 {
		t.Fatalf("kv_delete = %d", n)
	}
	if n, _, _ := run(opInput(4, []string{"k2", strings.Repeat("x", 97)}, nil, 0)); n != 0 {
		t.Fatalf("kv_put after delete freed the quota = %d", n)
	}
	kv := (host{c}).KV("ops")
	keys, err := kv.List(ctx, nil, 10)
	if err != nil || len(keys) != 1 || string(keys[0]) != "k2" {
		t.Fatalf("list = %q %v", keys, err)
	}
	if _, err := (host{c}).KV("echo").Get(ctx, []byte("k2")); !errors.Is(err, outpostrt.ErrNotFound) {
		t.Fatalf("another task's namespace: %v", err)
	}
}
