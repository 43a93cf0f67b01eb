package runtime

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestEchoRoundTrip(t *testing.T) {
	e := newEngine(t, Spec{Name: "echo", Module: "builtin:echo"})
	ctx := context.Background()
	for _, in := range [][]byte{
		[]byte("hello"),
		{},
		bytes.Repeat([]byte{0xab}, 200_000), // grows the guest's memory
	} {
		out, err := e.Call(ctx, "echo", in)
		if err != nil {
			t.Fatalf("call with %d bytes: %v", len(in), err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("echo of %d bytes returned %d bytes", len(in), len(out))
		}
	}
}

func TestUnknownTask(t *testing.T) {
	e := newEngine(t, Spec{Name: "echo", Module: "builtin:echo"})
	_, err := e.Call(context.Background(), "nope", nil)
	if !errors.Is(err, ErrUnknownTask) || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("err = %v, want ErrUnknownTask naming the task", err)
	}
}

func counterValue(t *testing.T, out []byte) uint32 {
	t.Helper()
	if len(out) != 4 {
		t.Fatalf("counter output %x, want 4 bytes", out)
	}
	return binary.LittleEndian.Uint32(out)
}

func TestPoolReuseKeepsState(t *testing.T) {
	e := newEngine(t, Spec{Name: "counter", Module: fixture(t, "counter"), Concurrency: 1})
	// _initialize set 100; one instance serves every call in turn.
	for want := uint32(101); want <= 105; want++ {
		out, err := e.Call(context.Background(), "counter", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := counterValue(t, out); got != want {
			t.Fatalf("counter = %d, want %d (state must persist in a pooled instance)", got, want)
		}
	}
}

func TestConcurrencyLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := New(Options{Logger: testLogger(t), Registerer: reg})
	ctx := context.Background()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	set, err := e.Load(ctx, []Spec{{Name: "sleep", Module: fixture(t, "sleep"), Concurrency: 2}})
	if err != nil {
		t.Fatal(err)
	}
	e.Activate(set)

	const calls = 8
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := range calls {
		wg.Go(func() {
			in := fmt.Appendf(nil, "call %d", i)
			out, err := e.Call(ctx, "sleep", in)
			if err == nil && !bytes.Equal(out, in) {
				err = fmt.Errorf("output %q, want %q", out, in)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	// 8 calls of 30 ms, 2 at a time: at least 4 rounds.
	if elapsed < 4*30*time.Millisecond {
		t.Errorf("8 calls took %s with concurrency 2, want >= 120ms", elapsed)
	}
	created := testutil.ToFloat64(e.metrics.instancesCreated.WithLabelValues("sleep"))
	if created > 2 {
		t.Errorf("%v instances created, want at most 2 (the concurrency)", created)
	}
	if got := testutil.ToFloat64(e.metrics.calls.WithLabelValues("sleep")); got != calls {
		t.Errorf("calls_total = %v, want %d", got, calls)
	}
}

func callErr(t *testing.T, err error, kind Kind) *CallError {
	t.Helper()
	var ce *CallError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v (%T), want a *CallError of kind %s", err, err, kind)
	}
	if ce.Kind != kind {
		t.Fatalf("kind = %s (%v), want %s", ce.Kind, ce, kind)
	}
	return ce
}

func TestTimeoutThenOtherCallsWork(t *testing.T) {
	e := newEngine(t,
		Spec{Name: "loop", Module: fixture(t, "loop"), Timeout: 100 * time.Millisecond},
		Spec{Name: "echo", Module: "builtin:echo"},
		Spec{Name: "counter", Module: fixture(t, "counter")},
	)
	ctx := context.Background()
	start := time.Now()
	_, err := e.Call(ctx, "loop", []byte("x"))
	callErr(t, err, KindTimeout)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("loop stopped after %s, want about 100ms", d)
	}
	// A caller deadline shorter than the task timeout wins.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = e.Call(cctx, "loop", nil)
	ce := callErr(t, err, KindTimeout)
	if !errors.Is(ce, context.DeadlineExceeded) && !strings.Contains(ce.Msg, "deadline") {
		t.Errorf("caller deadline: %v", ce)
	}
	// A caller deadline longer than the task timeout does not.
	lctx, lcancel := context.WithTimeout(ctx, time.Minute)
	defer lcancel()
	start = time.Now()
	_, err = e.Call(lctx, "loop", nil)
	if ce := callErr(t, err, KindTimeout); !strings.Contains(ce.Msg, "within the task timeout of 100ms") {
		t.Errorf("task timeout under a longer caller deadline: %v", ce)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("loop stopped after %s under a 1 minute caller deadline, want about 100ms", d)
	}
	if out, err := e.Call(ctx, "echo", []byte("still alive")); err != nil || string(out) != "still alive" {
		t.Fatalf("echo after timeout: %q, %v", out, err)
	}
	// The same task still runs (and times out again) on a fresh instance.
	_, err = e.Call(ctx, "loop", nil)
	callErr(t, err, KindTimeout)
	if _, err := e.Call(ctx, "counter", nil); err != nil {
		t.Fatal(err)
	}
}

func TestCallFailures(t *testing.T) {
	e := newEngine(t,
		Spec{Name: "grow", Module: fixture(t, "grow"), MemoryLimit: 1 << 20},
		Spec{Name: "trap", Module: fixture(t, "trap")},
		Spec{Name: "fail", Module: fixture(t, "fail")},
		Spec{Name: "badout", Module: fixture(t, "badout")},
		Spec{Name: "badalloc", Module: fixture(t, "badalloc")},
		Spec{Name: "badfail", Module: fixture(t, "badfail")},
		Spec{Name: "small", Module: "builtin:echo", MemoryLimit: 64 << 10},
		Spec{Name: "exit", Module: fixture(t, "exit")},
		Spec{Name: "echo", Module: "builtin:echo"},
	)
	tests := []struct {
		task    string
		input   string
		kind    Kind
		msgHas  string
		inputSz int
	}{
		{task: "grow", kind: KindMemory, msgHas: "memory at its limit"},
		{task: "trap", kind: KindTrap, msgHas: "unreachable"},
		{task: "fail", input: "sensor d1 offline", kind: KindFailed, msgHas: "sensor d1 offline"},
		{task: "badout", kind: KindInvalidOutput, msgHas: "outside linear memory"},
		{task: "badalloc", kind: KindInvalidOutput, msgHas: "outpost_alloc"},
		{task: "badfail", kind: KindTrap, msgHas: "outpost.fail: message at 0xfffffff0"},
		{task: "exit", kind: KindTrap, msgHas: "exited with code 2"},
		{task: "small", inputSz: 100 << 10, kind: KindMemory, msgHas: "exceeds the memory limit"},
	}
	for _, tt := range tests {
		t.Run(tt.task, func(t *testing.T) {
			in := []byte(tt.input)
			if tt.inputSz > 0 {
				in = make([]byte, tt.inputSz)
			}
			for range 2 { // the second call runs on a fresh instance
				_, err := e.Call(context.Background(), tt.task, in)
				ce := callErr(t, err, tt.kind)
				if !strings.Contains(ce.Msg, tt.msgHas) {
					t.Errorf("msg %q, want it to contain %q", ce.Msg, tt.msgHas)
				}
				if ce.Task != tt.task || !strings.Contains(ce.Error(), fmt.Sprintf("task %q", tt.task)) {
					t.Errorf("error %q does not name the task", ce.Error())
				}
			}
			// The engine keeps working.
			if out, err := e.Call(context.Background(), "echo", []byte("ok")); err != nil || string(out) != "ok" {
				t.Fatalf("echo after %s: %q, %v", tt.task, out, err)
			}
		})
	}
}

func TestCommand(t *testing.T) {
	e := newEngine(t,
		Spec{Name: "cmd", Module: fixture(t, "command"), Timeout: 200 * time.Millisecond},
		Spec{Name: "forced", Module: fixture(t, "command"), ABI: "command"},
	)
	ctx := context.Background()
	tests := []struct {
		name, input string
		want        string
		kind        Kind
		msgHas      string
	}{
		{name: "copy", input: "hello command", want: "hello command"},
		{name: "empty", input: "", want: ""},
		{name: "proc_exit 0", input: "zap", want: "zap"},
		{name: "exit 3", input: "x", kind: KindFailed, msgHas: "boom: bad input"},
		{name: "loop", input: "l", kind: KindTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := e.Call(ctx, "cmd", []byte(tt.input))
			if tt.kind != "" {
				ce := callErr(t, err, tt.kind)
				if !strings.Contains(ce.Msg, tt.msgHas) {
					t.Errorf("msg %q, want %q", ce.Msg, tt.msgHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.want {
				t.Fatalf("out %q, want %q", out, tt.want)
			}
		})
	}
	if infos := e.Tasks(); infos[0].ABI != ABICommand || infos[1].ABI != ABICommand {
		t.Errorf("tasks %+v, want command ABI", infos)
	}
}

func TestLoadErrors(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "garbage.wasm")
	if err := os.WriteFile(garbage, []byte("this is not wasm"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec Spec
		want string
	}{
		{Spec{Name: "imp", Module: fixture(t, "badimport")}, `task "imp": module imports function env.now: only wasi_snapshot_preview1 and outpost imports are allowed`},
		{Spec{Name: "wasi", Module: fixture(t, "badwasi")}, `task "wasi": module imports unknown function wasi_snapshot_preview1.teleport`},
		{Spec{Name: "bad", Module: fixture(t, "noexports")}, `task "bad": module exports neither outpost_handle nor _start`},
		{Spec{Name: "sig", Module: fixture(t, "badsig")}, `task "sig": export outpost_handle has signature (i32, i32) -> (i32), want (i32, i32) -> (i64)`},
		{Spec{Name: "inbuf", Module: fixture(t, "badinbuf")}, `task "inbuf": export outpost_input_buffer has signature (i32) -> (i32), want (i32) -> (i64)`},
		{Spec{Name: "garbage", Module: garbage}, `task "garbage": compile module`},
		{Spec{Name: "missing", Module: "/nonexistent/x.wasm"}, `task "missing": read module: open /nonexistent/x.wasm: no such file or directory`},
		{Spec{Name: "nobuiltin", Module: "builtin:nope"}, `task "nobuiltin": unknown builtin module "builtin:nope"`},
		{Spec{Name: "abi", Module: "builtin:echo", ABI: "wasm"}, `task "abi": unknown abi "wasm"`},
		{Spec{Name: "notcmd", Module: "builtin:echo", ABI: "command"}, `task "notcmd": command module does not export _start`},
		{Spec{Name: "init", Module: fixture(t, "inittrap")}, `task "init": instantiate: trap: _initialize: wasm error: unreachable`},
		// The start section and _initialize run under the task timeout.
		{Spec{Name: "initloop", Module: fixture(t, "initloop"), Timeout: 200 * time.Millisecond}, `task "initloop": instantiate: timeout: `},
		{Spec{Name: "startloop", Module: fixture(t, "startloop"), Timeout: 200 * time.Millisecond}, `task "startloop": instantiate: timeout: `},
		{Spec{Module: "builtin:echo"}, `task #1: no name`},
		{Spec{Name: "big", Module: fixture(t, "bigmem"), MemoryLimit: 1 << 20}, `task "big": compile module: section memory: min 32 pages (2 Mi) over limit of 16 pages (1 Mi)`},
	}
	e := newEngine(t)
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := e.Load(context.Background(), []Spec{tt.spec, {Name: "good", Module: "builtin:echo"}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant it to contain %s", err, tt.want)
			}
			if strings.Contains(err.Error(), `"good"`) {
				t.Errorf("error blames the good task: %v", err)
			}
		})
	}
	t.Run("all failures reported", func(t *testing.T) {
		specs := []Spec{
			{Name: "a", Module: fixture(t, "noexports")},
			{Name: "ok", Module: "builtin:echo"},
			{Name: "b", Module: fixture(t, "badimport")},
			{Name: "c", Module: "/nonexistent/c.wasm"},
			{Name: "a", Module: "builtin:echo"},
		}
		_, err := e.Load(context.Background(), specs)
		if err == nil {
			t.Fatal("no error")
		}
		for _, name := range []string{`task "a": module exports neither`, `task "b": module imports`, `task "c": read module`, `task "a": defined more than once`} {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error does not report %s:\n%v", name, err)
			}
		}
		if n := strings.Count(err.Error(), "\n") + 1; n != 4 {
			t.Errorf("%d error lines, want 4:\n%v", n, err)
		}
		if err := Check(context.Background(), specs); err == nil || strings.Count(err.Error(), "\n") != 3 {
			t.Errorf("Check: %v", err)
		}
	})
	// A failed Load leaves nothing behind: the engine holds no code objects.
	e.codesMu.Lock()
	n := len(e.codes)
	e.codesMu.Unlock()
	if n != 0 {
		t.Errorf("%d code objects left after failed loads", n)
	}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	if err := Check(ctx, []Spec{
		{Name: "echo", Module: "builtin:echo"},
		{Name: "init", Module: fixture(t, "inittrap")}, // static: _initialize is not run
		{Name: "cmd", Module: fixture(t, "command")},
	}); err != nil {
		t.Fatal(err)
	}
	err := Check(ctx, []Spec{{Name: "bad", Module: fixture(t, "noexports")}})
	if err == nil || err.Error() != `task "bad": module exports neither outpost_handle nor _start` {
		t.Fatalf("err = %v", err)
	}
}

func TestLimitsAndTasks(t *testing.T) {
	e := newEngine(t,
		Spec{Name: "b", Module: "builtin:echo"},
		Spec{Name: "a", Module: "builtin:echo", MemoryLimit: 100_000, Timeout: time.Second, Concurrency: 2},
		Spec{Name: "c", Module: "builtin:echo", MemoryLimit: 1},
	)
	lim, ok := e.Limits("a")
	if !ok || lim != (Limits{Concurrency: 2, Timeout: time.Second, MemoryLimit: 65536, MaxInput: DefaultMaxInput, MaxOutput: DefaultMaxOutput,
		LogRate: DefaultLogRate, LogBurst: DefaultLogBurst}) {
		t.Fatalf("limits(a) = %+v, %v", lim, ok)
	}
	lim, _ = e.Limits("b")
	if lim != (Limits{Concurrency: DefaultConcurrency, Timeout: DefaultTimeout, MemoryLimit: DefaultMemoryLimit, MaxInput: DefaultMaxInput, MaxOutput: DefaultMaxOutput,
		LogRate: DefaultLogRate, LogBurst: DefaultLogBurst}) {
		t.Fatalf("default limits = %+v", lim)
	}
	if lim, _ := e.Limits("c"); lim.MemoryLimit != 65536 {
		t.Fatalf("min memory = %d, want one page", lim.MemoryLimit)
	}
	if _, ok := e.Limits("zz"); ok {
		t.Fatal("limits of an unknown task")
	}
	infos := e.Tasks()
	if len(infos) != 3 || infos[0].Name != "a" || infos[1].Name != "b" || infos[2].Name != "c" {
		t.Fatalf("tasks not sorted: %+v", infos)
	}
	i := infos[1]
	if i.ABI != ABIReactor || i.Module != "builtin:echo" || len(i.Digest) != 64 || i.Size == 0 {
		t.Fatalf("info %+v", i)
	}
}

func TestActivateWhileCalling(t *testing.T) {
	e := newEngine(t, Spec{Name: "sleep", Module: fixture(t, "sleep")}, Spec{Name: "counter", Module: fixture(t, "counter")})
	ctx := context.Background()
	var failed atomic.Int64
	var done atomic.Bool
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !done.Load(); i++ {
				task := "sleep"
				if w%2 == 1 {
					task = "counter"
				}
				if _, err := e.Call(ctx, task, []byte("x")); err != nil {
					failed.Add(1)
					t.Errorf("call %s during swaps: %v", task, err)
				}
			}
		})
	}
	// Alternate between sets that change the tasks' limits (new tasks, new
	// code objects) and sets identical to the active one (carried over).
	for i := range 6 {
		timeout := time.Duration(2+i%2) * time.Second
		set, err := e.Load(ctx, []Spec{
			{Name: "sleep", Module: fixture(t, "sleep"), Timeout: timeout},
			{Name: "counter", Module: fixture(t, "counter"), MemoryLimit: uint64(1+i%2) << 20},
		})
		if err != nil {
			t.Fatal(err)
		}
		e.Activate(set)
		time.Sleep(40 * time.Millisecond)
	}
	done.Store(true)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d calls failed during swaps", failed.Load())
	}
	// Only the active set's code objects remain open once idle.
	e.codesMu.Lock()
	n := len(e.codes)
	e.codesMu.Unlock()
	if n != 2 {
		t.Errorf("%d code objects open, want 2", n)
	}
}

func TestReloadReuse(t *testing.T) {
	e := newEngine(t, Spec{Name: "counter", Module: fixture(t, "counter"), Concurrency: 1})
	ctx := context.Background()
	if out, _ := e.Call(ctx, "counter", nil); counterValue(t, out) != 101 {
		t.Fatal("first call")
	}
	old := e.active.Load().tasks["counter"]
	// Same module and limits: the task (and its warm instance) is carried over.
	set, err := e.Load(ctx, []Spec{
		{Name: "counter", Module: fixture(t, "counter"), Concurrency: 1},
		{Name: "counter2", Module: fixture(t, "counter"), Concurrency: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Activate(set)
	if e.active.Load().tasks["counter"] != old {
		t.Fatal("unchanged task was not carried over")
	}
	if e.active.Load().tasks["counter2"].code != old.code {
		t.Fatal("same module and limits did not reuse the code object")
	}
	if out, _ := e.Call(ctx, "counter", nil); counterValue(t, out) != 102 {
		t.Fatal("carried-over task lost its instance state")
	}
	// A changed limit makes a new task with fresh instances.
	set, err = e.Load(ctx, []Spec{{Name: "counter", Module: fixture(t, "counter"), Concurrency: 2}})
	if err != nil {
		t.Fatal(err)
	}
	e.Activate(set)
	if out, _ := e.Call(ctx, "counter", nil); counterValue(t, out) != 101 {
		t.Fatal("changed task did not start fresh")
	}
	if _, err := e.Call(ctx, "counter2", nil); !errors.Is(err, ErrUnknownTask) {
		t.Fatalf("removed task: %v", err)
	}
	// A loaded set that is never activated is released by Close.
	set, err = e.Load(ctx, []Spec{{Name: "other", Module: "builtin:echo", MemoryLimit: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	set.Close()
	e.codesMu.Lock()
	n := len(e.codes)
	e.codesMu.Unlock()
	if n != 1 {
		t.Errorf("%d code objects open, want 1", n)
	}
}

func TestCompilationCacheDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	for range 2 {
		e := New(Options{CacheDir: dir, Logger: testLogger(t)})
		ctx := context.Background()
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		set, err := e.Load(ctx, []Spec{{Name: "echo", Module: "builtin:echo"}})
		if err != nil {
			t.Fatal(err)
		}
		e.Activate(set)
		if out, err := e.Call(ctx, "echo", []byte("c")); err != nil || string(out) != "c" {
			t.Fatal(out, err)
		}
		if err := e.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache dir empty: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	e := New(Options{})
	if _, err := e.Load(ctx, nil); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("load before start: %v", err)
	}
	if err := e.Close(ctx); err != nil { // close without start
		t.Fatal(err)
	}
	if err := e.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("start after close: %v", err)
	}

	e = newEngine(t, Spec{Name: "sleep", Module: fixture(t, "sleep")})
	// Close waits for the call in flight.
	res := make(chan error, 1)
	go func() {
		_, err := e.Call(ctx, "sleep", []byte("x"))
		res <- err
	}()
	time.Sleep(5 * time.Millisecond)
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("call in flight during close: %v", err)
	}
	if _, err := e.Call(ctx, "sleep", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after close: %v", err)
	}
	if _, err := e.Load(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("load after close: %v", err)
	}
}

func TestCloseStopsRunningCalls(t *testing.T) {
	e := newEngine(t, Spec{Name: "loop", Module: fixture(t, "loop"), Timeout: time.Minute})
	res := make(chan error, 1)
	go func() {
		_, err := e.Call(context.Background(), "loop", nil)
		res <- err
	}()
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.Close(ctx); err == nil {
		t.Error("close returned no error with a call still running at its deadline")
	}
	select {
	case err := <-res:
		if err == nil {
			t.Fatal("looping call succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("looping call not stopped by Close")
	}
}
