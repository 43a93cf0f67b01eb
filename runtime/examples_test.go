package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/outpost-edge/outpost/configs"
)

// TestExamples builds examples/tasks with scripts/build-examples.sh (WAT with
// wat2wasm, Go with the Go toolchain, C with clang-14 and wasi-libc, Rust and
// AssemblyScript when their tools exist) and calls every example built
// through the Engine.
func TestExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Go and C wasm modules; skipped with -short")
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", filepath.Join("..", "scripts", "build-examples.sh"), "--strict", dir)
	built, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/build-examples.sh: %v\n%s", err, built)
	}
	mod := func(name string) string { return filepath.Join(dir, name+".wasm") }
	e := newEngine(t,
		Spec{Name: "echo", Module: mod("echo")},
		Spec{Name: "upper", Module: mod("upper")},
		Spec{Name: "go-echo", Module: mod("go-echo"), Concurrency: 2},
		Spec{Name: "jsontransform", Module: mod("go-jsontransform"), Concurrency: 2},
		Spec{Name: "wc", Module: mod("go-wc-command")},
	)
	ctx := context.Background()
	call := func(t *testing.T, task, in string) string {
		t.Helper()
		out, err := e.Call(ctx, task, []byte(in))
		if err != nil {
			t.Fatalf("call %s(%q): %v", task, in, err)
		}
		return string(out)
	}

	t.Run("abi", func(t *testing.T) {
		want := map[string]string{"echo": ABIReactor, "upper": ABIReactor, "go-echo": ABIReactor, "jsontransform": ABIReactor, "wc": ABICommand}
		for _, info := range e.Tasks() {
			if info.ABI != want[info.Name] {
				t.Errorf("%s: abi %s, want %s", info.Name, info.ABI, want[info.Name])
			}
		}
	})
	t.Run("echo", func(t *testing.T) {
		for _, task := range []string{"echo", "go-echo"} {
			for _, in := range []string{"hello", "", strings.Repeat("long input ", 10_000)} {
				if got := call(t, task, in); got != in {
					t.Errorf("%s: %d bytes in, %d out", task, len(in), len(got))
				}
			}
		}
	})
	t.Run("upper", func(t *testing.T) {
		if got := call(t, "upper", "hello, wörld 123 az{}"); got != "HELLO, WöRLD 123 AZ{}" {
			t.Errorf("upper = %q", got)
		}
	})
	t.Run("jsontransform", func(t *testing.T) {
		out := call(t, "jsontransform", `{"device":"d1","celsius":[20.5,21]}`)
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		want := map[string]any{"device": "d1", "fahrenheit": []any{68.9, 69.8}, "max_c": 21.0, "avg_c": 20.75}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
		for _, bad := range []string{`{"device":`, `{"device":"d1","celsius":[]}`, `[1,2]`} {
			_, err := e.Call(ctx, "jsontransform", []byte(bad))
			ce := callErr(t, err, KindFailed)
			if !strings.HasPrefix(ce.Msg, "bad input") {
				t.Errorf("%s: msg %q", bad, ce.Msg)
			}
		}
		// A fresh instance serves the next call.
		if out := call(t, "jsontransform", `{"device":"d2","celsius":[-40]}`); out != `{"device":"d2","fahrenheit":[-40],"max_c":-40,"avg_c":-40}` {
			t.Errorf("after failures: %s", out)
		}
	})
	t.Run("visits-sdk", func(t *testing.T) {
		host := newMemHost()
		he := newHostEngine(t, host, nil,
			manifestSpec(t, "visits", mod("go-visits"), "go/visits/manifest.yaml"),
			Spec{Name: "echo", Module: mod("echo")})
		for i := 1; i <= 3; i++ {
			out, err := he.Call(WithCallMeta(ctx, CallMeta{ID: fmt.Sprintf("c%d", i)}), "visits", []byte("ada"))
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf(`{"name":"ada","count":%d,"greeting":"hello ada","call":"c%d"}`, i, i)
			if string(out) != want {
				t.Fatalf("call %d = %s, want %s", i, out, want)
			}
		}
		if want := "[visits|visits/ada|0|1 visits|visits/ada|0|2 visits|visits/ada|0|3]"; fmt.Sprint(host.pubs) != want {
			t.Fatalf("published %v, want %s", host.pubs, want)
		}
		if _, err := he.Call(ctx, "visits", nil); err == nil || !strings.Contains(err.Error(), "input: a name, please") {
			t.Fatalf("empty input: %v", err)
		}
	})
	t.Run("fanout-sdk", func(t *testing.T) {
		he := newHostEngine(t, newMemHost(), nil,
			Spec{Name: "fanout", Module: mod("go-fanout"), Permissions: Permissions{Call: []string{"upper"}}},
			Spec{Name: "upper", Module: mod("upper"), Concurrency: 4})
		// A call that cannot suspend: the SDK awaits the handles itself.
		if out, err := he.Call(ctx, "fanout", []byte("hello big world")); err != nil || string(out) != "HELLO BIG WORLD" {
			t.Fatalf("awaited: %q, %v", out, err)
		}
		// A call that can: the run suspends on three calls of upper, and
		// outpost_resume joins their outputs.
		_, err := he.Call(context.WithValue(ctx, SuspendableKey{}, true), "fanout", []byte("hello big world"))
		var s *Suspended
		if !errors.As(err, &s) || len(s.Waits) != 3 || string(s.State) != `{"words":3}` {
			t.Fatalf("suspended: %v", err)
		}
		var res []ResumeResult
		for _, w := range s.Waits {
			out, err := w.Pending.Await(ctx)
			res = append(res, ResultOf(w.Handle, out, err))
		}
		if out, err := he.Resume(ctx, "fanout", EncodeResume(s.State, res)); err != nil || string(out) != "HELLO BIG WORLD" {
			t.Fatalf("resumed: %q, %v", out, err)
		}
		res[1] = ResultOf(res[1].Handle, nil, errors.New("failed: upper broke"))
		if _, err := he.Resume(ctx, "fanout", EncodeResume(s.State, res)); err == nil || !strings.Contains(err.Error(), "upper of word 2: failed: upper broke") {
			t.Fatalf("resumed with a failed call: %v", err)
		}
	})
	t.Run("greet", func(t *testing.T) {
		// The same task in Rust and AssemblyScript, each when the script
		// built it (it says what it skipped).
		greets := map[string]string{"rust-greet": "the Rust examples", "as-greet": "the AssemblyScript examples"}
		var specs []Spec
		for name, what := range greets {
			if !strings.Contains(string(built), "skipped "+what) {
				specs = append(specs, Spec{Name: name, Module: mod(name)})
			}
		}
		logs := newLogs()
		he := newHostEngine(t, newMemHost(), logs.logger(), specs...)
		for _, s := range specs {
			for _, name := range []string{"ada", strings.Repeat("n", 5000)} {
				out, err := he.Call(ctx, s.Name, []byte(name))
				if err != nil || string(out) != "hello, "+name {
					t.Fatalf("%s(%.20q) = %.30q, %v", s.Name, name, out, err)
				}
			}
			logs.want(t, "INFO greet: ada ", "task="+s.Name)
			_, err := he.Call(ctx, s.Name, nil)
			if ce := callErr(t, err, KindFailed); !strings.Contains(ce.Msg, "greet: want a name") {
				t.Fatalf("%s(empty): %q", s.Name, ce.Msg)
			}
		}
	})
	t.Run("counter-wat", func(t *testing.T) {
		host := newMemHost()
		logs := newLogs()
		he := newHostEngine(t, host, logs.logger(),
			manifestSpec(t, "counter", mod("counter"), "wat/counter.manifest.yaml"),
			Spec{Name: "kvonly", Module: mod("counter"), Permissions: Permissions{KVQuota: 64 << 10}},
			Spec{Name: "none", Module: mod("counter")})
		call := func(task, in string) string {
			t.Helper()
			out, err := he.Call(ctx, task, []byte(in))
			if err != nil {
				t.Fatalf("%s(%.20q): %v", task, in, err)
			}
			return string(out)
		}
		fails := func(task, in string, kind Kind, msg ...string) {
			t.Helper()
			_, err := he.Call(ctx, task, []byte(in))
			ce := callErr(t, err, kind)
			for _, m := range msg {
				if !strings.Contains(ce.Msg, m) {
					t.Errorf("%s(%.20q): message %q, want it to contain %q", task, in, ce.Msg, m)
				}
			}
		}

		for i, tc := range []struct{ in, want string }{
			{"door", "1"}, {"door", "2"}, {"window", "1"}, {"door", "3"}, {"a/b", "1"},
		} {
			if got := call("counter", tc.in); got != tc.want {
				t.Fatalf("call %d: counter(%q) = %q, want %q", i, tc.in, got, tc.want)
			}
		}
		setKV(host, "counter", "big", "9999999999999999998")
		if got := call("counter", "big"); got != "9999999999999999999" {
			t.Fatalf("counter(big) = %q", got)
		}
		wantKV := map[string]string{"door": "3", "window": "1", "a/b": "1", "big": "9999999999999999999"}
		if got := kvStrings(host, "counter"); !reflect.DeepEqual(got, wantKV) {
			t.Fatalf("kv = %v, want %v", got, wantKV)
		}
		wantPubs := []string{"counter|counter/door|0|1", "counter|counter/door|0|2", "counter|counter/window|0|1",
			"counter|counter/door|0|3", "counter|counter/a/b|0|1", "counter|counter/big|0|9999999999999999999"}
		if !reflect.DeepEqual(host.pubs, wantPubs) {
			t.Fatalf("published %q, want %q", host.pubs, wantPubs)
		}
		logs.want(t, "INFO counter: door = 3 ", "task=counter")

		// A key that makes an invalid topic: counted, the publish refused and
		// logged as a warning.
		if got := call("counter", "temp/+"); got != "1" {
			t.Fatalf("counter(temp/+) = %q", got)
		}
		logs.want(t, "WARN counter: publish counter/temp/+: ", "task=counter")
		if len(host.pubs) != len(wantPubs) {
			t.Fatalf("published %q", host.pubs[len(wantPubs):])
		}

		fails("counter", "", KindFailed, "counter: empty input, want a key")
		setKV(host, "counter", "bad", "12x")
		fails("counter", "bad", KindFailed, "counter: the stored count is not a number")
		setKV(host, "counter", "huge", "12345678901234567890") // 20 digits
		fails("counter", "huge", KindFailed, "counter: the stored count is not a number")
		// The manifest's max_input is 1 KiB, the longest kv key.
		fails("counter", strings.Repeat("k", 1025), KindTooLarge)

		// Without publish permission: counted, the denial logged. Without the
		// manifest's max_input, the task checks the key length itself.
		if got := call("kvonly", "door"); got != "1" {
			t.Fatalf("kvonly(door) = %q", got)
		}
		logs.want(t, "WARN counter: publish counter/door: ", "denied", "task=kvonly")
		if got := call("kvonly", strings.Repeat("k", 1024)); got != "1" {
			t.Fatalf("kvonly(1024 bytes) = %q", got)
		}
		fails("kvonly", strings.Repeat("k", 1025), KindFailed, "counter: key longer than 1024 bytes")
		if got := kvStrings(host, "kvonly"); len(got) != 2 || got["door"] != "1" {
			t.Fatalf("kvonly kv = %v", got)
		}
		// Without kv: fails with the host's message.
		fails("none", "door", KindFailed, "counter: kv_get: ", "denied")
		if got := kvStrings(host, "none"); len(got) != 0 || len(host.pubs) != len(wantPubs) {
			t.Fatalf("none stored %v, published %q", got, host.pubs)
		}
		// Failures replaced instances; the task still works.
		if got := call("counter", "door"); got != "4" {
			t.Fatalf("counter(door) after failures = %q", got)
		}
	})
	t.Run("minmax-c", func(t *testing.T) {
		host := newMemHost()
		logs := newLogs()
		he := newHostEngine(t, host, logs.logger(),
			manifestSpec(t, "minmax", mod("c-minmax"), "c/minmax/manifest.yaml"),
			Spec{Name: "kvonly", Module: mod("c-minmax"), Permissions: Permissions{KVQuota: 64 << 10}},
			Spec{Name: "none", Module: mod("c-minmax")})
		call := func(task, in string) string {
			t.Helper()
			out, err := he.Call(ctx, task, []byte(in))
			if err != nil {
				t.Fatalf("%s(%.40q): %v", task, in, err)
			}
			return string(out)
		}
		fails := func(task, in string, msg ...string) {
			t.Helper()
			_, err := he.Call(ctx, task, []byte(in))
			ce := callErr(t, err, KindFailed)
			for _, m := range msg {
				if !strings.Contains(ce.Msg, m) {
					t.Errorf("%s(%.40q): message %q, want it to contain %q", task, in, ce.Msg, m)
				}
			}
		}

		if got, want := call("minmax", "temp=21.5\nhum=40\n"), "temp=21.5 min=21.5 max=21.5\nhum=40 min=40 max=40\n"; got != want {
			t.Fatalf("call 1 = %q, want %q", got, want)
		}
		if got, want := call("minmax", "temp>30\r\ntemp=19.25\n\ntemp=31.5\nhum=0.1"),
			"temp>30\ntemp=19.25 min=19.25 max=21.5\ntemp=31.5 min=19.25 max=31.5 alert>30\nhum=0.1 min=0.1 max=40\n"; got != want {
			t.Fatalf("call 2 = %q, want %q", got, want)
		}
		// At the limit is no alert.
		if got, want := call("minmax", "temp=30"), "temp=30 min=19.25 max=31.5\n"; got != want {
			t.Fatalf("call 3 = %q, want %q", got, want)
		}
		wantKV := map[string]string{"stats/temp": "19.25 31.5", "stats/hum": "0.10000000000000001 40", "limit/temp": "30"}
		if got := kvStrings(host, "minmax"); !reflect.DeepEqual(got, wantKV) {
			t.Fatalf("kv = %v, want %v", got, wantKV)
		}
		wantPubs := []string{`minmax|alerts/temp|1|{"name":"temp","value":31.5,"limit":30}`}
		if !reflect.DeepEqual(host.pubs, wantPubs) {
			t.Fatalf("published %q, want %q", host.pubs, wantPubs)
		}
		var alert map[string]any
		if err := json.Unmarshal([]byte(strings.SplitN(host.pubs[0], "|", 4)[3]), &alert); err != nil {
			t.Fatalf("alert payload: %v", err)
		}
		logs.want(t, "WARN alert: temp=31.5 above 30 ", "task=minmax")
		logs.want(t, "INFO 3 readings, 1 limits ", "task=minmax")

		// Many directives: the output grows.
		var in, want strings.Builder
		for i := range 1000 {
			fmt.Fprintf(&in, "s%d=%d\n", i%10, i)
			fmt.Fprintf(&want, "s%d=%d min=%d max=%d\n", i%10, i, i%10, i)
		}
		if got := call("minmax", in.String()); got != want.String() {
			t.Fatalf("1000 readings: %d bytes out, want %d", len(got), want.Len())
		}

		// Bad input changes nothing.
		before := kvStrings(host, "minmax")
		for in, msg := range map[string]string{
			"":                             "no directives",
			"\n\r\n":                       "no directives",
			"temp 20":                      `line 1: want NAME=VALUE or NAME>LIMIT, got "temp 20"`,
			"ok=1\nte mp=1":                `line 2: bad name "te mp"`,
			"=1":                           `line 1: bad name ""`,
			strings.Repeat("n", 65) + "=1": "line 1: bad name",
			"ok=1\n\ntemp=abc":             `line 3: bad number "abc"`,
			"temp=":                        `line 1: bad number ""`,
			"temp=nan":                     `line 1: bad number "nan"`,
			"temp>1e999":                   `line 1: bad number "1e999"`,
			"temp=1=2":                     `line 1: bad number "1=2"`,
			strings.Repeat("a=1\n", 1025):  "more than 1024 directives",
		} {
			fails("minmax", in, msg)
		}
		if got := kvStrings(host, "minmax"); !reflect.DeepEqual(got, before) || len(host.pubs) != 1 {
			t.Fatalf("bad input changed kv %v (was %v) or published %q", got, before, host.pubs)
		}

		// Without publish permission the alert fails the call; the stats are
		// stored, and idempotent on a retry.
		for range 2 {
			fails("kvonly", "temp>10\ntemp=11", "publish alerts/temp: ", "denied")
		}
		if got, want := kvStrings(host, "kvonly"), map[string]string{"limit/temp": "10", "stats/temp": "11 11"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("kvonly kv = %v, want %v", got, want)
		}
		if got, want := call("kvonly", "temp=9"), "temp=9 min=9 max=11\n"; got != want {
			t.Fatalf("kvonly = %q, want %q", got, want)
		}
		// Without kv: fails with the host's message, stores nothing.
		fails("none", "temp=1", "kv_get stats/temp: ", "denied")
		fails("none", "temp>1", "kv_put limit/temp: ", "denied")
		if got := kvStrings(host, "none"); len(got) != 0 || len(host.pubs) != 1 {
			t.Fatalf("none stored %v, published %q", got, host.pubs)
		}
	})
	t.Run("wc", func(t *testing.T) {
		for in, want := range map[string]string{
			"hello world\nfoo\n": "2 3 16\n",
			"":                   "0 0 0\n",
			"  one  ":            "0 1 7\n",
		} {
			if got := call(t, "wc", in); got != want {
				t.Errorf("wc(%q) = %q, want %q", in, got, want)
			}
		}
	})
}

// manifestSpec reads an example's manifest, the YAML file that `outpost task
// deploy NAME MODULE --manifest FILE` takes, with the daemon's own strict
// decoder (configs.ParseManifest), into a Spec. manifest is relative to
// examples/tasks.
func manifestSpec(t *testing.T, name, module, manifest string) Spec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "tasks", manifest))
	if err != nil {
		t.Fatal(err)
	}
	m, err := configs.ParseManifest(b, manifest)
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Name: name, Module: module, ABI: m.ABI, FreshInstance: m.FreshInstance,
		MemoryLimit: uint64(m.Limits.Memory), Timeout: m.Limits.Timeout.Std(), Concurrency: m.Limits.Concurrency,
		MaxInput: uint64(m.Limits.MaxInput), MaxOutput: uint64(m.Limits.MaxOutput),
		Permissions: Permissions{Publish: m.Permissions.Publish, Call: m.Permissions.Call, KVQuota: uint64(m.Permissions.KVQuota)},
	}
}

// kvStrings returns a copy of a task's kv namespace in a memHost.
func kvStrings(h *memHost, task string) map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := map[string]string{}
	for k, v := range h.kv[task] {
		m[k] = string(v)
	}
	return m
}

// setKV stores a value in a task's kv namespace in a memHost.
func setKV(h *memHost, task, key, value string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.kv[task] == nil {
		h.kv[task] = map[string][]byte{}
	}
	h.kv[task][key] = []byte(value)
}

// testLogs records log lines ("LEVEL message attrs", see logRecorder).
type testLogs struct {
	mu   sync.Mutex
	recs []string
}

func newLogs() *testLogs { return &testLogs{} }

func (l *testLogs) logger() *slog.Logger { return slog.New(logRecorder{mu: &l.mu, recs: &l.recs}) }

// want fails the test unless a line starts with prefix and contains each of
// parts.
func (l *testLogs) want(t *testing.T, prefix string, parts ...string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, r := range l.recs {
		if !strings.HasPrefix(r, prefix) {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(r, p) {
				continue next
			}
		}
		return
	}
	t.Fatalf("no log line %q containing %q in:\n%s", prefix, parts, strings.Join(l.recs, "\n"))
}
