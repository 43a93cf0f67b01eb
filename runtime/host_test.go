package runtime

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// memHost is a Host for tests: publishes are recorded, kv lives in maps,
// calls go to an Engine, telemetry (when set) is tele.
type memHost struct {
	mu   sync.Mutex
	pubs []string // task|topic|qos|payload
	kv   map[string]map[string][]byte
	e    *Engine
	tele Telemetry
	shad Shadows
	// cancels counts Pending.Cancel calls.
	cancels int
}

func newMemHost() *memHost { return &memHost{kv: map[string]map[string][]byte{}} }

func (h *memHost) Publish(_ context.Context, task, topic string, qos byte, payload []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch topic {
	case "broken":
		return errors.New("broker down")
	case "big":
		return fmt.Errorf("%w: over the broker's limit", ErrTooLarge)
	}
	h.pubs = append(h.pubs, fmt.Sprintf("%s|%s|%d|%s", task, topic, qos, payload))
	return nil
}

func (h *memHost) Call(ctx context.Context, _, task string, input []byte) ([]byte, error) {
	return h.e.Call(ctx, task, input)
}

// CallAsync runs the call on a goroutine of its own, until needBy but not
// under ctx's cancellation; Cancel cancels it and is counted in cancels.
func (h *memHost) CallAsync(ctx context.Context, _, task string, input []byte, needBy time.Time) (Pending, error) {
	if _, ok := h.e.Limits(task); !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownTask, task)
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if !needBy.IsZero() {
		cctx, cancel = context.WithDeadline(context.WithoutCancel(ctx), needBy)
	}
	p := &memPending{h: h, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.out, p.err = h.e.Call(cctx, task, input)
	}()
	return p, nil
}

type memPending struct {
	h      *memHost
	cancel context.CancelFunc
	done   chan struct{}
	out    []byte
	err    error
}

func (p *memPending) Await(ctx context.Context) ([]byte, error) {
	select {
	case <-p.done:
		return p.out, p.err
	default:
	}
	select {
	case <-p.done:
		return p.out, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *memPending) Cancel() {
	p.cancel()
	p.h.mu.Lock()
	p.h.cancels++
	p.h.mu.Unlock()
}

func (h *memHost) KV(task string) KV { return memKV{h, task} }

func (h *memHost) Telemetry() Telemetry { return h.tele }

func (h *memHost) Shadows() Shadows { return h.shad }

// fakeTelemetry answers with JSON built from its arguments; some targets
// make it fail: "off" (ErrUnavailable), "bad" (ErrInvalid), "broken" (any
// other error), "huge" (an answer over the limit).
type fakeTelemetry struct {
	mu      sync.Mutex
	latest  int
	queries []TelemetryQuery
}

func (f *fakeTelemetry) answer(target string, doc []byte) ([]byte, error) {
	switch target {
	case "off":
		return nil, fmt.Errorf("%w: telemetry is not enabled", ErrUnavailable)
	case "bad":
		return nil, fmt.Errorf("%w: path: bad pattern", ErrInvalid)
	case "broken":
		return nil, errors.New("store read failed")
	case "huge":
		return bytes.Repeat([]byte(" "), maxTelemetryAnswer+1), nil
	}
	return doc, nil
}

func (f *fakeTelemetry) Latest(_ context.Context, target, path string) ([]byte, error) {
	f.mu.Lock()
	f.latest++
	f.mu.Unlock()
	doc, _ := json.Marshal(map[string]any{"points": []map[string]string{{"target": target, "path": path}}})
	return f.answer(target, doc)
}

func (f *fakeTelemetry) Query(_ context.Context, q TelemetryQuery) ([]byte, error) {
	f.mu.Lock()
	f.queries = append(f.queries, q)
	f.mu.Unlock()
	doc, _ := json.Marshal(map[string]any{"series": []TelemetryQuery{q}})
	return f.answer(q.Target, doc)
}

type memKV struct {
	h    *memHost
	task string
}

func (m memKV) Get(_ context.Context, key []byte) ([]byte, error) {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	v, ok := m.h.kv[m.task][string(key)]
	if !ok {
		return nil, ErrNotFound
	}
	return v, nil
}

func (m memKV) Put(_ context.Context, key, value []byte, quota uint64) error {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	ns := m.h.kv[m.task]
	if ns == nil {
		ns = map[string][]byte{}
		m.h.kv[m.task] = ns
	}
	used := uint64(len(key) + len(value))
	for k, v := range ns {
		if k != string(key) {
			used += uint64(len(k) + len(v))
		}
	}
	if used > quota {
		return fmt.Errorf("%w: %d bytes of %d", ErrQuota, used, quota)
	}
	ns[string(key)] = value
	return nil
}

func (m memKV) Delete(_ context.Context, key []byte) error {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	delete(m.h.kv[m.task], string(key))
	return nil
}

func (m memKV) List(_ context.Context, prefix []byte, limit int) ([][]byte, error) {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	var keys [][]byte
	for k := range m.h.kv[m.task] {
		if strings.HasPrefix(k, string(prefix)) {
			keys = append(keys, []byte(k))
		}
	}
	sort.Slice(keys, func(i, j int) bool { return bytes.Compare(keys[i], keys[j]) < 0 })
	return keys[:min(len(keys), limit)], nil
}

// logRecorder is a slog.Handler keeping records.
type logRecorder struct {
	mu   *sync.Mutex
	recs *[]string
	attr string
}

func (r logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := fmt.Sprintf("%s %s %s", rec.Level, rec.Message, r.attr)
	rec.Attrs(func(a slog.Attr) bool { line += a.String() + " "; return true })
	*r.recs = append(*r.recs, line)
	return nil
}
func (r logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		r.attr += a.String() + " "
	}
	return r
}
func (r logRecorder) WithGroup(string) slog.Handler { return r }

func newHostEngine(tb testing.TB, host *memHost, log *slog.Logger, specs ...Spec) *Engine {
	tb.Helper()
	if log == nil {
		log = testLogger(tb)
	}
	ctx := context.Background()
	e := New(Options{Logger: log, Host: host})
	host.e = e
	if err := e.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Close(context.Background()) })
	set, err := e.Load(ctx, specs)
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	e.Activate(set)
	return e
}

// Layout of the hostops fixture (testdata/hostops.wat).
const (
	opsData = 1056 // where the data part of the input lands
	opsBuf  = 520  // an output buffer whose contents come back in the output
	badPtr  = 0xFFFFFFF0
)

// Ops of the fixture, in its import order.
const (
	opLog = iota + 1
	opPublish
	opKVGet
	opKVPut
	opKVDelete
	opKVList
	opCall
	opResult
	opMeta
	opDeadline
	opNow
	opTelemetryLatest
	opTelemetryQuery
	opShadowGet
	opShadowUpdate
	opShadowDelete
)

// hostOp calls the fixture's op with args (at most 6); extra is how many
// bytes of the buffer at opsBuf to return. It returns the function's result
// and those bytes.
func hostOp(ctx context.Context, e *Engine, task string, op uint32, args []uint32, extra uint32, data []byte) (int64, []byte, error) {
	in := make([]byte, 32, 32+len(data))
	binary.LittleEndian.PutUint32(in, op)
	for i, a := range args {
		binary.LittleEndian.PutUint32(in[4+4*i:], a)
	}
	binary.LittleEndian.PutUint32(in[28:], extra)
	in = append(in, data...)
	out, err := e.Call(ctx, task, in)
	if err != nil {
		return 0, nil, err
	}
	return int64(binary.LittleEndian.Uint64(out)), out[8:], nil
}

// data lays out byte strings after each other in the data part and returns
// (ptr, len) pairs for them.
func data(parts ...string) ([]uint32, []byte) {
	var args []uint32
	var b []byte
	for _, p := range parts {
		args = append(args, opsData+uint32(len(b)), uint32(len(p)))
		b = append(b, p...)
	}
	return args, b
}

func mustOp(t *testing.T, e *Engine, task string, op uint32, args []uint32, extra uint32, d []byte) (int64, []byte) {
	t.Helper()
	r, buf, err := hostOp(context.Background(), e, task, op, args, extra, d)
	if err != nil {
		t.Fatalf("op %d: %v", op, err)
	}
	return r, buf
}

// held runs op again and returns the held value (outpost.result) right after it.
func held(t *testing.T, e *Engine, task string, op uint32, args []uint32, d []byte) string {
	t.Helper()
	_, buf := mustOp(t, e, task, op+100, args, 400, d)
	return strings.TrimRight(string(buf), "\x00")
}

func TestHostNamesMatchDefs(t *testing.T) {
	if len(hostNames) != len(hostDefs) {
		t.Fatalf("%d names for %d defs", len(hostNames), len(hostDefs))
	}
	for i, d := range hostDefs {
		if hostNames[i] != d.name {
			t.Fatalf("hostNames[%d] = %q, want %q", i, hostNames[i], d.name)
		}
	}
}

func TestHostLog(t *testing.T) {
	var mu sync.Mutex
	var recs []string
	log := slog.New(logRecorder{mu: &mu, recs: &recs})
	e := newHostEngine(t, newMemHost(), log, Spec{Name: "ops", Module: fixture(t, "hostops")})
	for _, tc := range []struct {
		level uint32
		want  string
	}{{0, "DEBUG"}, {1, "INFO"}, {2, "WARN"}, {3, "ERROR"}, {7, "ERROR"}, {0x80000000, "DEBUG"}} {
		args, d := data("hello from the guest")
		mustOp(t, e, "ops", opLog, append([]uint32{tc.level}, args...), 0, d)
		mu.Lock()
		last := recs[len(recs)-1]
		mu.Unlock()
		if !strings.HasPrefix(last, tc.want+" hello from the guest") || !strings.Contains(last, "task=ops") {
			t.Fatalf("level %d logged %q, want %s with the task name", tc.level, last, tc.want)
		}
	}
}

func TestHostPublish(t *testing.T) {
	host := newMemHost()
	e := newHostEngine(t, host, nil,
		Spec{Name: "ops", Module: fixture(t, "hostops"), Concurrency: 1,
			Permissions: Permissions{Publish: []string{"sensors/+/out", "alerts/#", "broken", "big"}}},
		Spec{Name: "mute", Module: fixture(t, "hostops"), Concurrency: 1})
	for _, tc := range []struct {
		name, task, topic string
		qos               uint32
		want              int64
		held              string
	}{
		{"allowed", "ops", "sensors/1/out", 1, codeOK, ""},
		{"allowed by #", "ops", "alerts/a/b", 0, codeOK, ""},
		{"denied topic", "ops", "sensors/1/in", 0, codeDenied, `publish to "sensors/1/in" denied`},
		{"no permissions", "mute", "sensors/1/out", 0, codeDenied, "denied"},
		{"wildcard topic", "ops", "sensors/+/out", 0, codeInvalid, "wildcard"},
		{"empty topic", "ops", "", 0, codeInvalid, "topic length 0"},
		{"bad qos", "ops", "alerts/x", 3, codeInvalid, "qos 3"},
		{"host failure", "ops", "broken", 0, codeFailed, "broker down"},
		{"over the broker's limit", "ops", "big", 1, codeTooLarge, "over the broker's limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, d := data(tc.topic, "payload")
			r, _ := mustOp(t, e, tc.task, opPublish, append(args, tc.qos), 0, d)
			if r != tc.want {
				t.Fatalf("publish returned %d, want %d", r, tc.want)
			}
			if got := held(t, e, tc.task, opPublish, append(args, tc.qos), d); !strings.Contains(got, tc.held) {
				t.Fatalf("held value %q, want it to contain %q", got, tc.held)
			}
		})
	}
	// Each successful case published twice (held runs the op again).
	want := []string{"ops|sensors/1/out|1|payload", "ops|sensors/1/out|1|payload", "ops|alerts/a/b|0|payload", "ops|alerts/a/b|0|payload"}
	if fmt.Sprint(host.pubs) != fmt.Sprint(want) {
		t.Fatalf("published %q, want %q", host.pubs, want)
	}
}

func TestHostKV(t *testing.T) {
	host := newMemHost()
	e := newHostEngine(t, host, nil,
		Spec{Name: "ops", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{KVQuota: 64}},
		Spec{Name: "other", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{KVQuota: 64}},
		Spec{Name: "nokv", Module: fixture(t, "hostops"), Concurrency: 1})
	put := func(task, k, v string) int64 {
		args, d := data(k, v)
		r, _ := mustOp(t, e, task, opKVPut, args, 0, d)
		return r
	}
	get := func(task, k string, bufCap uint32) (int64, string) {
		args, d := data(k)
		r, buf := mustOp(t, e, task, opKVGet, append(args, opsBuf, bufCap), bufCap, d)
		return r, string(buf[:min(max(int(r), 0), len(buf))])
	}
	if r := put("ops", "greeting", "hello"); r != codeOK {
		t.Fatalf("put = %d", r)
	}
	if r, v := get("ops", "greeting", 100); r != 5 || v != "hello" {
		t.Fatalf("get = %d %q", r, v)
	}
	// A buffer too small: the full length comes back, outpost.result has the value.
	if r, v := get("ops", "greeting", 2); r != 5 || v != "he" {
		t.Fatalf("short get = %d %q", r, v)
	}
	args, d := data("greeting")
	if got := held(t, e, "ops", opKVGet, append(args, opsBuf, 2), d); got != "hello" {
		t.Fatalf("held after a short get = %q", got)
	}
	if r, _ := get("ops", "missing", 10); r != codeNotFound {
		t.Fatalf("get of a missing key = %d", r)
	}
	if r, _ := get("other", "greeting", 10); r != codeNotFound {
		t.Fatalf("another task sees the key: %d", r)
	}
	put("ops", "greetings", "x")
	put("ops", "z", "y")
	args, d = data("greet")
	r, buf := mustOp(t, e, "ops", opKVList, append(args, opsBuf, 100), 100, d)
	want := "\x08\x00\x00\x00greeting\x09\x00\x00\x00greetings"
	if r != int64(len(want)) || string(buf[:r]) != want {
		t.Fatalf("list = %d %q, want %q", r, buf[:max(r, 0)], want)
	}
	// Quota: 64 bytes for keys and values.
	if r := put("ops", "big", strings.Repeat("v", 60)); r != codeQuota {
		t.Fatalf("put over quota = %d", r)
	}
	args, d = data("big", strings.Repeat("v", 60))
	if got := held(t, e, "ops", opKVPut, args, d); !strings.Contains(got, "quota") {
		t.Fatalf("held after quota = %q", got)
	}
	args, d = data("greeting")
	if r, _ := mustOp(t, e, "ops", opKVDelete, args, 0, d); r != codeOK {
		t.Fatalf("delete = %d", r)
	}
	if r, _ := get("ops", "greeting", 10); r != codeNotFound {
		t.Fatalf("get after delete = %d", r)
	}
	if r, _ := mustOp(t, e, "ops", opKVDelete, args, 0, d); r != codeOK {
		t.Fatalf("delete of a missing key = %d", r)
	}
	// Denied without a quota; bad keys refused.
	if r := put("nokv", "k", "v"); r != codeDenied {
		t.Fatalf("put without quota = %d", r)
	}
	if r := put("ops", "", "v"); r != codeInvalid {
		t.Fatalf("put of an empty key = %d", r)
	}
	if r := put("ops", strings.Repeat("k", maxKVKey+1), "v"); r != codeInvalid {
		t.Fatalf("put of a long key = %d", r)
	}
}

func TestHostCall(t *testing.T) {
	host := newMemHost()
	e := newHostEngine(t, host, nil,
		Spec{Name: "ops", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{Call: []string{"echo", "fail", "nope"}}},
		Spec{Name: "any", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{Call: []string{"*"}}},
		Spec{Name: "echo", Module: "builtin:echo"},
		Spec{Name: "fail", Module: fixture(t, "fail")})
	call := func(caller, task, input string) (int64, string) {
		args, d := data(task, input)
		r, buf := mustOp(t, e, caller, opCall, append(args, opsBuf, 100), 100, d)
		return r, string(buf[:min(max(int(r), 0), len(buf))])
	}
	if r, out := call("ops", "echo", "ping"); r != 4 || out != "ping" {
		t.Fatalf("call echo = %d %q", r, out)
	}
	if r, out := call("any", "echo", "pong"); r != 4 || out != "pong" {
		t.Fatalf("call echo with * = %d %q", r, out)
	}
	if r, _ := call("ops", "any", "x"); r != codeDenied {
		t.Fatalf("call of a task not granted = %d", r)
	}
	args, d := data("any", "x")
	if got := held(t, e, "ops", opCall, append(args, opsBuf, 0), d); !strings.Contains(got, `call of task "any" denied`) {
		t.Fatalf("held = %q", got)
	}
	if r, _ := call("ops", "nope", "x"); r != codeNotFound {
		t.Fatalf("call of an unknown task = %d", r)
	}
	if r, _ := call("ops", "fail", "it broke"); r != codeFailed {
		t.Fatalf("call of a failing task = %d", r)
	}
	args, d = data("fail", "it broke")
	if got := held(t, e, "ops", opCall, append(args, opsBuf, 0), d); !strings.Contains(got, "it broke") {
		t.Fatalf("held after a failed call = %q", got)
	}
}

func TestHostMetaAndTime(t *testing.T) {
	e := newHostEngine(t, newMemHost(), nil, Spec{Name: "ops", Module: fixture(t, "hostops"), Timeout: time.Hour})
	ctx := WithCallMeta(context.Background(), CallMeta{ID: "c1", Source: "mqtt:a/b", IdempotencyKey: "k1"})
	for field, want := range []string{"c1", "mqtt:a/b", "k1", "ops"} {
		r, buf, err := hostOp(ctx, e, "ops", opMeta, []uint32{uint32(field), opsBuf, 50}, 50, nil)
		if err != nil || r != int64(len(want)) || string(buf[:r]) != want {
			t.Fatalf("meta(%d) = %d %q %v, want %q", field, r, buf, err, want)
		}
	}
	if r, _ := mustOp(t, e, "ops", opMeta, []uint32{9, opsBuf, 50}, 0, nil); r != codeInvalid {
		t.Fatalf("meta(9) = %d", r)
	}
	// Without metadata the fields are empty.
	if r, _ := mustOp(t, e, "ops", opMeta, []uint32{0, opsBuf, 50}, 0, nil); r != 0 {
		t.Fatalf("meta(id) without metadata = %d", r)
	}
	dl := time.Now().Add(time.Minute)
	dctx, cancel := context.WithDeadline(ctx, dl)
	defer cancel()
	r, _, err := hostOp(dctx, e, "ops", opDeadline, nil, 0, nil)
	if err != nil || r != dl.UnixNano() {
		t.Fatalf("deadline = %d %v, want %d", r, err, dl.UnixNano())
	}
	// Without a caller deadline, the task timeout is the deadline.
	r, _ = mustOp(t, e, "ops", opDeadline, nil, 0, nil)
	if d := time.Until(time.Unix(0, r)); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("deadline without a caller deadline is %s away, want about the 1h timeout", d)
	}
	r, _ = mustOp(t, e, "ops", opNow, nil, 0, nil)
	if d := time.Since(time.Unix(0, r)); d < 0 || d > time.Minute {
		t.Fatalf("now is %s off", d)
	}
}

// TestHostBadPointers passes an out-of-range pointer in every pointer
// argument of every host function: the guest traps with a message naming
// the function and the argument, and the task keeps working.
func TestHostBadPointers(t *testing.T) {
	host := newMemHost()
	e := newHostEngine(t, host, nil, Spec{Name: "ops", Module: fixture(t, "hostops"), Concurrency: 1,
		Permissions: Permissions{Publish: []string{"#"}, Call: []string{"*"}, KVQuota: 1 << 20}},
		Spec{Name: "echo", Module: "builtin:echo"})
	ok := func(n uint32) (uint32, uint32) { return opsData, n }
	for _, tc := range []struct {
		name string
		op   uint32
		args []uint32
		want string
	}{
		{"log message", opLog, []uint32{1, badPtr, 100}, "outpost.log: message at 0xfffffff0"},
		{"publish topic", opPublish, []uint32{badPtr, 4, opsData, 1, 0}, "outpost.publish: topic"},
		{"publish payload", opPublish, []uint32{opsData, 1, opsData, 1 << 20, 0}, "outpost.publish: payload"},
		{"kv_get key", opKVGet, []uint32{badPtr, 1, opsBuf, 1}, "outpost.kv_get: key"},
		{"kv_get buffer", opKVGet, []uint32{opsData, 1, 65530, 100}, "outpost.kv_get: buffer"},
		{"kv_put value", opKVPut, []uint32{opsData, 1, 65000, 1000}, "outpost.kv_put: value"},
		{"kv_delete key", opKVDelete, []uint32{65536, 1}, "outpost.kv_delete: key"},
		{"kv_list buffer", opKVList, []uint32{opsData, 0, badPtr, 1}, "outpost.kv_list: buffer"},
		{"call name", opCall, []uint32{badPtr, 4, opsData, 0, opsBuf, 0}, "outpost.call: task name"},
		{"call input", opCall, []uint32{opsData, 4, badPtr, 4, opsBuf, 0}, "outpost.call: input"},
		{"call buffer", opCall, []uint32{opsData, 4, opsData, 0, badPtr, 10}, "outpost.call: buffer"},
		{"result buffer", opResult, []uint32{badPtr, 1}, "outpost.result: buffer"},
		{"meta buffer", opMeta, []uint32{0, 70000, 0}, "outpost.meta: buffer"},
		{"telemetry_latest target", opTelemetryLatest, []uint32{badPtr, 1, opsData, 1}, "outpost.telemetry_latest: target"},
		{"telemetry_latest path", opTelemetryLatest, []uint32{opsData, 1, 65536, 1}, "outpost.telemetry_latest: path"},
		{"telemetry_query request", opTelemetryQuery, []uint32{65000, 1000}, "outpost.telemetry_query: request"},
		{"shadow_get thing", opShadowGet, []uint32{badPtr, 2, opsData, 0}, "outpost.shadow_get: thing"},
		{"shadow_get name", opShadowGet, []uint32{opsData, 2, 65536, 1}, "outpost.shadow_get: name"},
		{"shadow_update request", opShadowUpdate, []uint32{opsData, 2, opsData, 0, 65000, 1000}, "outpost.shadow_update: request"},
		{"shadow_delete request", opShadowDelete, []uint32{opsData, 2, opsData, 0, badPtr, 1}, "outpost.shadow_delete: request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := hostOp(context.Background(), e, "ops", tc.op, tc.args, 0, []byte("echo"))
			var ce *CallError
			if !errors.As(err, &ce) || ce.Kind != KindTrap || !strings.Contains(ce.Msg, tc.want) || !strings.Contains(ce.Msg, "outside linear memory") {
				t.Fatalf("err = %v, want a trap with %q", err, tc.want)
			}
			// The instance was replaced; the task works.
			p, n := ok(4)
			r, _ := mustOp(t, e, "ops", opCall, []uint32{p, n, p, n, opsBuf, 10}, 0, []byte("echo"))
			if r != 4 {
				t.Fatalf("call after the trap = %d", r)
			}
		})
	}
	if len(host.pubs) != 0 {
		t.Fatalf("a trapping publish reached the host: %q", host.pubs)
	}
}

func TestHostUnavailable(t *testing.T) {
	e := newEngine(t, Spec{Name: "ops", Module: fixture(t, "hostops"), Concurrency: 1,
		Permissions: Permissions{Publish: []string{"#"}, Call: []string{"*"}, KVQuota: 100}})
	args, d := data("a/b", "x")
	if r, _ := mustOp(t, e, "ops", opPublish, append(args, 0), 0, d); r != codeUnavailable {
		t.Fatalf("publish without a host = %d", r)
	}
	args, d = data("k")
	if r, _ := mustOp(t, e, "ops", opKVGet, append(args, opsBuf, 0), 0, d); r != codeUnavailable {
		t.Fatalf("kv_get without a host = %d", r)
	}
}

func TestHostTelemetry(t *testing.T) {
	host := newMemHost()
	tele := &fakeTelemetry{}
	host.tele = tele
	e := newHostEngine(t, host, nil,
		Spec{Name: "ops", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{Telemetry: true}},
		Spec{Name: "mute", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{KVQuota: 64}})
	t.Run("latest", func(t *testing.T) {
		for _, tc := range []struct {
			name, task, target, path string
			want                     int64
			held                     string
		}{
			{"ok", "ops", "sw*", "/interfaces/...", 0, `{"points":[{"path":"/interfaces/...","target":"sw*"}]}`},
			{"ok, all", "ops", "", "", 0, `{"points":[{"path":"","target":""}]}`},
			{"denied", "mute", "sw*", "", codeDenied, "telemetry_latest: telemetry denied: permissions.telemetry is false"},
			{"invalid pattern", "ops", "bad", "/[", codeInvalid, "telemetry_latest: invalid request: path: bad pattern"},
			{"long target", "ops", strings.Repeat("t", maxTelemetrySelector+1), "", codeInvalid, "target of 1025 bytes exceeds 1024"},
			{"long path", "ops", "", strings.Repeat("p", maxTelemetrySelector+1), codeInvalid, "path of 1025 bytes exceeds 1024"},
			{"unavailable", "ops", "off", "", codeUnavailable, "telemetry_latest: unavailable: telemetry is not enabled"},
			{"failed", "ops", "broken", "", codeFailed, "telemetry_latest: store read failed"},
			{"too large", "ops", "huge", "", codeTooLarge, "narrow the target"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				args, d := data(tc.target, tc.path)
				r, _ := mustOp(t, e, tc.task, opTelemetryLatest, args, 0, d)
				if tc.want == 0 {
					tc.want = int64(len(tc.held)) // a length: the answer is held
				}
				if r != tc.want {
					t.Fatalf("telemetry_latest returned %d, want %d", r, tc.want)
				}
				if got := held(t, e, tc.task, opTelemetryLatest, args, d); !strings.Contains(got, tc.held) {
					t.Fatalf("held value %q, want it to contain %q", got, tc.held)
				}
			})
		}
	})
	t.Run("query", func(t *testing.T) {
		for _, tc := range []struct {
			name, task, req string
			want            int64
			held            string
		}{
			{"ok", "ops", `{"target":"sw1","path":"/system/...","since":"2h","until":"2026-01-02T03:04:05Z","bucket":"1m","limit":10}`, 0,
				`{"series":[{"target":"sw1","path":"/system/...","since":"2h","until":"2026-01-02T03:04:05Z","bucket":"1m","limit":10}]}`},
			{"empty request", "ops", "", 0, `{"series":[{"target":"","path":"","since":"","until":"","bucket":"","limit":0}]}`},
			{"denied", "mute", `{}`, codeDenied, "telemetry_query: telemetry denied"},
			{"unknown field", "ops", `{"targets":"sw1"}`, codeInvalid, `telemetry_query: request: json: unknown field "targets"`},
			{"not JSON", "ops", `since=1h`, codeInvalid, "telemetry_query: request: invalid character"},
			{"trailing data", "ops", `{} {}`, codeInvalid, "data after the JSON object"},
			{"limit not a number", "ops", `{"limit":"10"}`, codeInvalid, "telemetry_query: request: json: cannot unmarshal"},
			{"invalid per the host", "ops", `{"target":"bad"}`, codeInvalid, "invalid request"},
			{"unavailable", "ops", `{"target":"off"}`, codeUnavailable, "telemetry_query: unavailable"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				args, d := data(tc.req)
				r, _ := mustOp(t, e, tc.task, opTelemetryQuery, args, 0, d)
				if tc.want == 0 {
					tc.want = int64(len(tc.held))
				}
				if r != tc.want {
					t.Fatalf("telemetry_query returned %d, want %d", r, tc.want)
				}
				if got := held(t, e, tc.task, opTelemetryQuery, args, d); !strings.Contains(got, tc.held) {
					t.Fatalf("held value %q, want it to contain %q", got, tc.held)
				}
			})
		}
	})
	// Denied and invalid calls never reached the host: ok, ok, invalid
	// pattern, unavailable, failed, too large, each twice.
	tele.mu.Lock()
	latest, queries := tele.latest, len(tele.queries)
	tele.mu.Unlock()
	if latest != 12 || queries != 8 {
		t.Fatalf("the host served %d latest and %d queries, want 12 and 8", latest, queries)
	}
	hc := e.metrics.hostCalls
	for _, m := range []struct {
		fn, code string
		want     float64
	}{{"telemetry_latest", "ok", 4}, {"telemetry_latest", "denied", 2}, {"telemetry_query", "invalid", 10}, {"telemetry_query", "unavailable", 2}} {
		if got := testutil.ToFloat64(hc.WithLabelValues(m.fn, m.code)); got != m.want {
			t.Errorf("host_calls_total{function=%q,code=%q} = %v, want %v", m.fn, m.code, got, m.want)
		}
	}
}

// TestHostTelemetryUnavailable: a Host without telemetry, or no Host at
// all, answers unavailable to a task that is allowed telemetry.
func TestHostTelemetryUnavailable(t *testing.T) {
	spec := Spec{Name: "ops", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{Telemetry: true}}
	for name, e := range map[string]*Engine{
		"host without telemetry": newHostEngine(t, newMemHost(), nil, spec),
		"no host":                newEngine(t, spec),
	} {
		t.Run(name, func(t *testing.T) {
			args, d := data("", "")
			if r, _ := mustOp(t, e, "ops", opTelemetryLatest, args, 0, d); r != codeUnavailable {
				t.Fatalf("telemetry_latest = %d, want unavailable", r)
			}
			if got := held(t, e, "ops", opTelemetryLatest, args, d); got != "telemetry_latest: no telemetry in this engine" {
				t.Fatalf("held = %q", got)
			}
			args, d = data(`{"since":"1h"}`)
			if r, _ := mustOp(t, e, "ops", opTelemetryQuery, args, 0, d); r != codeUnavailable {
				t.Fatalf("telemetry_query = %d, want unavailable", r)
			}
		})
	}
}

// fakeShadows answers from its arguments: thing "off" is unavailable,
// "broken" fails, "gone" is a 404, "old" a 409 with its error document.
type fakeShadows struct {
	mu    sync.Mutex
	calls []string // op thing/name request
}

func (f *fakeShadows) answer(op, thing, name string, req []byte) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s %s/%s %s", op, thing, name, req))
	f.mu.Unlock()
	switch thing {
	case "off":
		return nil, fmt.Errorf("%w: shadow service not running", ErrUnavailable)
	case "broken":
		return nil, errors.New("sync failed")
	case "gone":
		return nil, &ShadowError{Code: 404, Document: []byte(`{"code":404,"message":"No shadow exists with name: 'gone'"}`)}
	case "old":
		return nil, &ShadowError{Code: 409, Document: []byte(`{"code":409,"message":"Version conflict","clientToken":"t1"}`)}
	}
	return []byte(fmt.Sprintf(`{"%s":"%s/%s","request":%q}`, op, thing, name, req)), nil
}

func (f *fakeShadows) Get(_ context.Context, thing, name string) ([]byte, error) {
	return f.answer("get", thing, name, nil)
}

func (f *fakeShadows) Update(_ context.Context, thing, name string, req []byte) ([]byte, error) {
	return f.answer("update", thing, name, req)
}

func (f *fakeShadows) Delete(_ context.Context, thing, name string, req []byte) ([]byte, error) {
	return f.answer("delete", thing, name, req)
}

// TestHostShadows: the shadow functions check names, sizes and
// permissions.shadows before the Host sees the request, hold the accepted
// document, and hold the AWS error document of a rejection with its code.
func TestHostShadows(t *testing.T) {
	host := newMemHost()
	shad := &fakeShadows{}
	host.shad = shad
	e := newHostEngine(t, host, nil,
		Spec{Name: "ops", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{Shadows: []string{"sensor-*", "gone", "old", "off", "broken"}}},
		Spec{Name: "mute", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{Telemetry: true}})
	for _, tc := range []struct {
		name, task   string
		op           uint32
		thing, sname string
		req          string
		want         int64
		held         string
	}{
		{"get", "ops", opShadowGet, "sensor-1", "", "", 0, `{"get":"sensor-1/","request":""}`},
		{"get named", "ops", opShadowGet, "sensor-1", "conf", "", 0, `{"get":"sensor-1/conf","request":""}`},
		{"update", "ops", opShadowUpdate, "sensor-2", "", `{"state":{"desired":{"on":true}}}`, 0,
			`{"update":"sensor-2/","request":"{\"state\":{\"desired\":{\"on\":true}}}"}`},
		{"delete", "ops", opShadowDelete, "sensor-2", "", "", 0, `{"delete":"sensor-2/","request":""}`},
		{"denied: pattern", "ops", opShadowGet, "pump-1", "", "", codeDenied, `shadow_get: shadows of "pump-1" denied: no permissions.shadows pattern matches`},
		{"denied: no grant", "mute", opShadowUpdate, "sensor-1", "", `{}`, codeDenied, `shadow_update: shadows of "sensor-1" denied`},
		{"empty thing", "ops", opShadowGet, "", "", "", codeInvalid, "shadow_get: thing name of 0 bytes (1 to 256)"},
		{"long thing", "ops", opShadowGet, strings.Repeat("t", maxShadowName+1), "", "", codeInvalid, "thing name of 257 bytes"},
		{"long name", "ops", opShadowDelete, "sensor-1", strings.Repeat("n", maxShadowName+1), "", codeInvalid, "shadow name of 257 bytes exceeds 256"},
		{"not found", "ops", opShadowGet, "gone", "", "", codeNotFound, `{"code":404,"message":"No shadow exists with name: 'gone'"}`},
		{"conflict", "ops", opShadowUpdate, "old", "", `{"version":1}`, codeConflict, `{"code":409,"message":"Version conflict","clientToken":"t1"}`},
		{"unavailable", "ops", opShadowGet, "off", "", "", codeUnavailable, "shadow_get: unavailable: shadow service not running"},
		{"failed", "ops", opShadowUpdate, "broken", "", `{}`, codeFailed, "shadow_update: sync failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := []string{tc.thing, tc.sname}
			if tc.op != opShadowGet {
				parts = append(parts, tc.req)
			}
			args, d := data(parts...)
			r, _ := mustOp(t, e, tc.task, tc.op, args, 0, d)
			if tc.want == 0 {
				tc.want = int64(len(tc.held))
			}
			if r != tc.want {
				t.Fatalf("returned %d, want %d", r, tc.want)
			}
			if got := held(t, e, tc.task, tc.op, args, d); !strings.Contains(got, tc.held) {
				t.Fatalf("held value %q, want it to contain %q", got, tc.held)
			}
		})
	}
	// Refused calls never reached the Host: get, get named, update,
	// delete, not found, conflict, unavailable, failed, each twice.
	shad.mu.Lock()
	n := len(shad.calls)
	shad.mu.Unlock()
	if n != 16 {
		t.Fatalf("the host served %d shadow requests, want 16: %q", n, shad.calls)
	}
	hc := e.metrics.hostCalls
	for _, m := range []struct {
		fn, code string
		want     float64
	}{{"shadow_get", "ok", 4}, {"shadow_get", "denied", 2}, {"shadow_update", "conflict", 2}, {"shadow_delete", "invalid", 2}} {
		if got := testutil.ToFloat64(hc.WithLabelValues(m.fn, m.code)); got != m.want {
			t.Errorf("host_calls_total{function=%q,code=%q} = %v, want %v", m.fn, m.code, got, m.want)
		}
	}
	t.Run("no shadow service", func(t *testing.T) {
		e := newHostEngine(t, newMemHost(), nil, Spec{Name: "ops", Module: fixture(t, "hostops"), Concurrency: 1, Permissions: Permissions{Shadows: []string{"*"}}})
		args, d := data("d1", "")
		if r, _ := mustOp(t, e, "ops", opShadowGet, args, 0, d); r != codeUnavailable {
			t.Fatalf("shadow_get = %d, want unavailable", r)
		}
		if got := held(t, e, "ops", opShadowGet, args, d); got != "shadow_get: no shadow service in this engine" {
			t.Fatalf("held = %q", got)
		}
	})
}

func TestPermissionsRefusedAtLoad(t *testing.T) {
	e := newEngine(t)
	_, err := e.Load(context.Background(), []Spec{{Name: "x", Module: "builtin:echo",
		Permissions: Permissions{Publish: []string{"a/#/b"}}}})
	if err == nil || !strings.Contains(err.Error(), `task "x": permissions.publish`) {
		t.Fatalf("err = %v", err)
	}
	for _, pat := range []string{"", "a/b", "[x"} {
		_, err = e.Load(context.Background(), []Spec{{Name: "x", Module: "builtin:echo",
			Permissions: Permissions{Shadows: []string{pat}}}})
		if err == nil || !strings.Contains(err.Error(), `task "x": permissions.shadows`) {
			t.Fatalf("shadows %q: err = %v", pat, err)
		}
	}
}

// BenchmarkHostCall is a warm call of the hostops fixture that makes one
// host function call (outpost.now), beside the same call making none
// (outpost.result with a zero buffer is the cheapest; op 0 would trap), so
// the difference is the host function round trip plus the lookup.
func BenchmarkHostCall(b *testing.B) {
	e := newHostEngine(b, newMemHost(), nil, Spec{Name: "ops", Module: fixture(b, "hostops"), Concurrency: 1})
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		op   uint32
	}{{"now", opNow}, {"deadline", opDeadline}, {"echo-baseline", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.op == 0 {
				e := newEngine(b, Spec{Name: "echo", Module: "builtin:echo"})
				in := make([]byte, 32)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := e.Call(ctx, "echo", in); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := hostOp(ctx, e, "ops", bc.op, nil, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
