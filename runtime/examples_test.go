package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestExamples builds examples/tasks with scripts/build-examples.sh and calls
// every example through the Engine.
func TestExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Go wasm modules; skipped with -short")
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", filepath.Join("..", "scripts", "build-examples.sh"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-examples.sh: %v\n%s", err, out)
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
			Spec{Name: "visits", Module: mod("go-visits"), Concurrency: 2,
				Permissions: Permissions{Publish: []string{"visits/+"}, Call: []string{"echo"}, KVQuota: 64 << 10}},
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
