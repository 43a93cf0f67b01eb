package coordinator

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
	outpostrt "github.com/outpost-edge/outpost/runtime"
	"github.com/outpost-edge/outpost/telemetry"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// hostopsWasm builds runtime/testdata/hostops.wat (see its header for the
// input layout).
func hostopsWasm(t *testing.T) string {
	t.Helper()
	return wasmtest.WAT(t, "../runtime/testdata/hostops.wat", "")
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
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
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

// runHeld calls op+100 of hostops on task: the function, then
// outpost.result into a 480-byte buffer; it returns the code or length and
// the held value.
func runHeld(t *testing.T, c *Coordinator, task string, op uint32, parts ...string) (int64, string) {
	t.Helper()
	r, err := c.Call(context.Background(), calls.New(task, opInput(op+100, parts, nil, 480), calls.Source{Kind: "test", Ref: "t"}))
	if err != nil || !r.OK() {
		t.Fatalf("call: %+v %v", r, err)
	}
	n := int64(binary.LittleEndian.Uint64(r.Output))
	return n, strings.TrimRight(string(r.Output[8:]), "\x00")
}

// TestHostTelemetry: a task reads what the daemon's telemetry service
// collected through outpost.telemetry_latest and telemetry_query.
func TestHostTelemetry(t *testing.T) {
	mod := hostopsWasm(t)
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
telemetry: {gnmi_server: {listen: "` + mqtttest.FreeAddr(t) + `"}}
tasks:
  - name: reader
    module: ` + mod + `
    permissions: {telemetry: true}
  - name: mute
    module: ` + mod + `
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	ts := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	const octets = "/interfaces/interface[name=eth0]/state/counters/in-octets"
	if err := c.tele.Publish([]telemetry.Update{
		{Target: "sw1", Path: octets, Time: ts.Add(-time.Second).UnixNano(), Value: model.Uint(41)},
		{Target: "sw1", Path: octets, Time: ts.UnixNano(), Value: model.Uint(42)},
		{Target: "sw2", Path: "/system/state/hostname", Time: ts.UnixNano(), Value: model.String("sw2")},
	}); err != nil {
		t.Fatal(err)
	}
	run := func(task string, op uint32, parts ...string) (int64, string) {
		t.Helper()
		return runHeld(t, c, task, op, parts...)
	}

	// point is model.Point as a guest decodes it.
	type point struct {
		Target, Path, Kind string
		Time               time.Time
		Value              json.RawMessage
	}
	n, held := run("reader", 12, "sw*", "/interfaces/...")
	var latest struct{ Points []point }
	if err := json.Unmarshal([]byte(held), &latest); err != nil || n != int64(len(held)) {
		t.Fatalf("telemetry_latest = %d %q: %v", n, held, err)
	}
	if len(latest.Points) != 1 || latest.Points[0].Target != "sw1" || latest.Points[0].Path != octets ||
		!latest.Points[0].Time.Equal(ts) || latest.Points[0].Kind != "uint" || string(latest.Points[0].Value) != "42" {
		t.Fatalf("latest points %+v, want sw1's in-octets 42 at %s", latest.Points, ts)
	}

	n, held = run("reader", 13, `{"target":"sw1","since":"1h","limit":10}`)
	var query struct {
		Since, Until time.Time
		Series       []struct {
			Target, Path string
			Points       []point
		}
	}
	if err := json.Unmarshal([]byte(held), &query); err != nil || n != int64(len(held)) {
		t.Fatalf("telemetry_query = %d %q: %v", n, held, err)
	}
	if len(query.Series) != 1 || len(query.Series[0].Points) != 2 || query.Until.Sub(query.Since) != time.Hour {
		t.Fatalf("query answer %+v, want sw1's two points over the last hour", query)
	}
	if n, held := run("reader", 13, `{"since":"yesterday"}`); n != -3 || !strings.Contains(held, "since: want a duration") {
		t.Fatalf("query with a bad since = %d %q", n, held)
	}
	if n, held := run("reader", 12, "", "/interfaces/interface[name=eth0"); n != -3 || !strings.Contains(held, "invalid request: path") {
		t.Fatalf("latest with a bad path = %d %q", n, held)
	}
	if n, _ := run("mute", 12, "", ""); n != -1 {
		t.Fatalf("latest without the permission = %d", n)
	}

	// With telemetry off the host answers unavailable.
	off := hostTelemetry{telemetry.New(telemetry.Config{}, t.TempDir(), nil, nil, telemetry.Sinks{})}
	if _, err := off.Latest(context.Background(), "", ""); !errors.Is(err, outpostrt.ErrUnavailable) {
		t.Fatalf("latest with telemetry off: %v", err)
	}
	if _, err := off.Query(context.Background(), outpostrt.TelemetryQuery{}); !errors.Is(err, outpostrt.ErrUnavailable) {
		t.Fatalf("query with telemetry off: %v", err)
	}
}

// TestHostTelemetryQueryDeadline: a telemetry_query over a long range of
// many series (hours of seeks) ends at the task's timeout: the call fails
// with timeout long before the query would finish, and the store answers
// again afterwards.
func TestHostTelemetryQueryDeadline(t *testing.T) {
	mod := hostopsWasm(t)
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
telemetry: {gnmi_server: {listen: "` + mqtttest.FreeAddr(t) + `"}}
tasks:
  - name: reader
    module: ` + mod + `
    limits: {timeout: 300ms}
    permissions: {telemetry: true}
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	// One point three years back makes every series' query walk about
	// 26,000 hours: 2,000 series take minutes unbounded.
	now := time.Now()
	us := []telemetry.Update{{Target: "old", Path: "/x", Time: now.Add(-3 * 365 * 24 * time.Hour).UnixNano(), Value: model.Uint(1)}}
	for i := range 2000 {
		us = append(us, telemetry.Update{Target: "sw1", Path: fmt.Sprintf("/interfaces/interface[name=eth%d]/in-octets", i), Time: now.UnixNano(), Value: model.Uint(uint64(i))})
	}
	if err := c.tele.Publish(us); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := c.Call(context.Background(), calls.New("reader", opInput(113, []string{`{"target":"sw1","since":"30000h"}`}, nil, 480), calls.Source{Kind: "test", Ref: "t"}))
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != calls.StatusTimeout || !strings.Contains(r.Error, "task timeout of 300ms") {
		t.Fatalf("long telemetry_query: %+v, want a timeout at the task's 300ms", r)
	}
	if took > 10*time.Second { // generous for a loaded machine; unbounded it runs for minutes
		t.Fatalf("long telemetry_query ended after %v, want about 300ms", took)
	}
	t.Logf("long telemetry_query ended after %v", took)

	// The service's own error names the cause.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.tele.Query(ctx, telemetry.QueryRequest{Target: "sw1", Since: now.Add(-30000 * time.Hour), Until: now})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("query past its deadline: %v, want one wrapping context.DeadlineExceeded", err)
	}
	// A short query still answers.
	res, err := c.tele.Query(context.Background(), telemetry.QueryRequest{Target: "sw1", Path: "/interfaces/interface[name=eth7]/in-octets", Since: now.Add(-time.Minute), Until: now.Add(time.Second)})
	if err != nil || len(res) != 1 || len(res[0].Points) != 1 {
		t.Fatalf("short query after the timeout: %+v %v", res, err)
	}
}

// TestHostCallChain: a chain of tasks, each calling the next (through
// outpost.call, and through call_async and await), deeper than
// scheduler.workers completes, and so do several chains at once: a waiting
// call gives its worker slot back.
func TestHostCallChain(t *testing.T) {
	dst := wasmtest.WAT(t, "../runtime/testdata/chain.wat", "")
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
scheduler: {workers: 2}
tasks:
  - name: chain
    module: ` + dst + `
    limits: {concurrency: 40, timeout: 20s}
    permissions: {call: [chain]}
`
	cfg, err := configs.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	for _, mode := range []byte{'s', 'a'} {
		t.Run(string(mode), func(t *testing.T) {
			const depth, chains = 8, 3
			errs := make(chan error, chains)
			for range chains {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					r, err := c.Call(ctx, calls.New("chain", []byte{depth, mode}, calls.Source{Kind: "test"}))
					switch {
					case err != nil:
						errs <- err
					case !r.OK() || string(r.Output) != "leaf":
						errs <- errors.New(string(r.Status) + ": " + r.Error + " " + string(r.Output))
					default:
						errs <- nil
					}
				}()
			}
			for range chains {
				if err := <-errs; err != nil {
					t.Fatalf("chain of %d over 2 workers: %v", depth, err)
				}
			}
			// A worker gives its slot back just after the call's Done has
			// answered the caller: wait for it rather than race it.
			deadline := time.Now().Add(5 * time.Second)
			st := c.sched.Stats()
			for (st.Running != 0 || st.Parked != 0) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
				st = c.sched.Stats()
			}
			if st.Running != 0 || st.Parked != 0 {
				t.Fatalf("after the chains: %+v", st)
			}
		})
	}
}
