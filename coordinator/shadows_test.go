package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/devices/shadow"
)

// Ops of the hostops fixture for the shadow functions.
const (
	opShadowGet    = 14
	opShadowUpdate = 15
	opShadowDelete = 16
)

// TestHostShadows: a wasm task granted permissions.shadows updates a
// device's desired state through outpost.shadow_update; the device,
// subscribed with mosquitto_sub, gets the delta on its update/delta topic,
// and the change is the shadow service's (versions, persistence). Version
// conflicts, missing shadows and tasks without the grant are refused with
// their codes and, for rejections, the AWS error document.
func TestHostShadows(t *testing.T) {
	mod := hostopsWasm(t)
	broker := mqtttest.FreeAddr(t)
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + broker + `"}}
tasks:
  - name: ctl
    module: ` + mod + `
    permissions: {shadows: ["lamp-*"]}
  - name: mute
    module: ` + mod + `
    permissions: {publish: ["#"]}
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	_, secret, err := deviceAdmin{c}.AddDevice("lamp-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	sub := mqtttest.Sub(t, "tcp://lamp-1:"+secret+"@"+broker, "$aws/things/lamp-1/shadow/update/delta", 1)

	decode := func(what string, n int64, held string) map[string]any {
		t.Helper()
		var m map[string]any
		// The buffer of a warm instance keeps what longer values left
		// after the first n bytes.
		if n <= 0 || n > int64(len(held)) || json.Unmarshal([]byte(held[:n]), &m) != nil {
			t.Fatalf("%s = %d %q, want the length of a JSON document", what, n, held)
		}
		return m
	}
	field := func(m map[string]any, path string) string {
		var v any = m
		for _, k := range strings.Split(path, ".") {
			v = v.(map[string]any)[k]
		}
		b, _ := json.Marshal(v)
		return string(b)
	}

	n, held := runHeld(t, c, "ctl", opShadowUpdate, "lamp-1", "", `{"state":{"desired":{"on":true,"level":7}},"clientToken":"t1"}`)
	acc := decode("shadow_update", n, held)
	if field(acc, "version") != "1" || field(acc, "clientToken") != `"t1"` || field(acc, "state.desired.level") != "7" {
		t.Fatalf("update/accepted %s", held)
	}
	lines := sub.Wait(1, 15*time.Second)
	var delta map[string]any
	if _, payload, _ := strings.Cut(lines[0], " "); json.Unmarshal([]byte(payload), &delta) != nil {
		t.Fatalf("delta %q", lines[0])
	}
	if field(delta, "state") != `{"level":7,"on":true}` || field(delta, "version") != "1" {
		t.Fatalf("delta %v", delta)
	}

	n, held = runHeld(t, c, "ctl", opShadowGet, "lamp-1", "")
	doc := decode("shadow_get", n, held)
	if field(doc, "state.delta") != `{"level":7,"on":true}` || field(doc, "version") != "1" {
		t.Fatalf("get/accepted %s", held)
	}
	if d, err := c.shadows.Get(shadow.Ref{Thing: "lamp-1"}); err != nil || d.Version != 1 {
		t.Fatalf("the shadow service holds %+v, %v", d, err)
	}

	for _, tc := range []struct {
		name, task string
		op         uint32
		parts      []string
		code       int64
		held       string
	}{
		{"version conflict", "ctl", opShadowUpdate, []string{"lamp-1", "", `{"state":{"reported":{"on":true}},"version":9,"clientToken":"t2"}`},
			-9, `"code":409,"message":"Version conflict"`},
		{"conflict echoes the token", "ctl", opShadowUpdate, []string{"lamp-1", "", `{"state":{"reported":{"on":true}},"version":9,"clientToken":"t2"}`},
			-9, `"clientToken":"t2"`},
		{"bad request", "ctl", opShadowUpdate, []string{"lamp-1", "", `{"desired":{}}`}, -3, `"code":400`},
		{"no shadow", "ctl", opShadowGet, []string{"lamp-2", "conf"}, -2, `"code":404,"message":"No shadow exists with name: 'lamp-2~conf'"`},
		{"bad shadow name", "ctl", opShadowGet, []string{"lamp-1", "a b"}, -3, `"code":400`},
		{"not granted", "mute", opShadowGet, []string{"lamp-1", ""}, -1, `shadow_get: shadows of "lamp-1" denied`},
		{"outside the pattern", "ctl", opShadowUpdate, []string{"pump-1", "", `{"state":{"desired":{"on":true}}}`}, -1, "denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, held := runHeld(t, c, tc.task, tc.op, tc.parts...)
			if n != tc.code || !strings.Contains(held, tc.held) {
				t.Fatalf("= %d %q, want %d with %q", n, held, tc.code, tc.held)
			}
		})
	}
	if d, err := c.shadows.Get(shadow.Ref{Thing: "pump-1"}); err == nil {
		t.Fatalf("a denied update made a shadow: %+v", d)
	}

	n, held = runHeld(t, c, "ctl", opShadowDelete, "lamp-1", "", `{"version":1}`)
	if del := decode("shadow_delete", n, held); field(del, "version") != "1" {
		t.Fatalf("delete/accepted %s", held)
	}
	if n, held := runHeld(t, c, "ctl", opShadowGet, "lamp-1", ""); n != -2 || !strings.Contains(held, `"code":404`) {
		t.Fatalf("get after delete = %d %q", n, held)
	}
}

// TestShadowsGoSDK runs the Go SDK example thermostat
// (examples/tasks/go/thermostat, built here) against the shadow service:
// it sets a device's desired setpoint with ShadowGet and ShadowUpdate, the
// device gets the delta, a second call with the same setpoint changes
// nothing, and a device outside its permissions.shadows is denied.
func TestShadowsGoSDK(t *testing.T) {
	mod := filepath.Join(t.TempDir(), "thermostat.wasm")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", mod, "../examples/tasks/go/thermostat")
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the thermostat example: %v\n%s", err, out)
	}
	broker := mqtttest.FreeAddr(t)
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + broker + `"}}
tasks:
  - name: thermostat
    module: ` + mod + `
    permissions: {shadows: ["room-?"]}
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	_, secret, err := deviceAdmin{c}.AddDevice("room-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	sub := mqtttest.Sub(t, "tcp://room-1:"+secret+"@"+broker, "$aws/things/room-1/shadow/update/delta", 1)
	call := func(in string) (string, error) {
		r, err := c.Call(context.Background(), calls.New("thermostat", []byte(in), calls.Source{Kind: "test", Ref: "t"}))
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK() {
			return "", errors.New(r.Error)
		}
		return string(r.Output), nil
	}
	if out, err := call(`{"device":"room-1","setpoint":21.5}`); err != nil || out != `{"device":"room-1","version":1,"changed":true}` {
		t.Fatalf("first setpoint = %s, %v", out, err)
	}
	if _, payload, _ := strings.Cut(sub.Wait(1, 15*time.Second)[0], " "); !strings.Contains(payload, `"state":{"setpoint":21.5}`) {
		t.Fatalf("delta %s", payload)
	}
	if out, err := call(`{"device":"room-1","setpoint":21.5}`); err != nil || out != `{"device":"room-1","version":1,"changed":false}` {
		t.Fatalf("same setpoint = %s, %v", out, err)
	}
	if out, err := call(`{"device":"room-1","setpoint":19}`); err != nil || out != `{"device":"room-1","version":2,"changed":true}` {
		t.Fatalf("new setpoint = %s, %v", out, err)
	}
	if out, err := call(`{"device":"hall-1","setpoint":19}`); err == nil || !strings.Contains(err.Error(), `read shadow: shadow_get: shadows of "hall-1" denied`) {
		t.Fatalf("a device outside the grant = %s, %v", out, err)
	}
}
