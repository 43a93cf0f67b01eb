package runtime

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fixtures compiles testdata/*.wat with wat2wasm once per test binary.
var fixtures struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtures.dir != "" {
		_ = os.RemoveAll(fixtures.dir)
	}
	os.Exit(code)
}

// wat2wasm compiles src to dst, failing the test if wat2wasm is missing
// (scripts/test.sh installs wabt).
func wat2wasm(tb testing.TB, src, dst string) {
	tb.Helper()
	path, err := exec.LookPath("wat2wasm")
	if err != nil {
		tb.Fatalf("wat2wasm not found (install Debian package wabt, as scripts/test.sh does): %v", err)
	}
	if out, err := exec.Command(path, src, "-o", dst).CombinedOutput(); err != nil {
		tb.Fatalf("wat2wasm %s: %v\n%s", src, err, out)
	}
}

// fixture returns the path of testdata/<name>.wat compiled to wasm.
func fixture(tb testing.TB, name string) string {
	tb.Helper()
	fixtures.once.Do(func() {
		fixtures.dir, fixtures.err = os.MkdirTemp("", "outpost-runtime-fixtures-")
	})
	if fixtures.err != nil {
		tb.Fatal(fixtures.err)
	}
	dst := filepath.Join(fixtures.dir, name+".wasm")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	tmp := dst + fmt.Sprintf(".%d.tmp", os.Getpid())
	wat2wasm(tb, filepath.Join("testdata", name+".wat"), tmp)
	if err := os.Rename(tmp, dst); err != nil {
		tb.Fatal(err)
	}
	return dst
}

// testLogger logs to the test output when -v is given.
func testLogger(tb testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newEngine starts an engine with specs loaded and active; it is closed at
// the end of the test.
func newEngine(tb testing.TB, specs ...Spec) *Engine {
	tb.Helper()
	ctx := context.Background()
	e := New(Options{Logger: testLogger(tb)})
	if err := e.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	if len(specs) > 0 {
		set, err := e.Load(ctx, specs)
		if err != nil {
			tb.Fatalf("load: %v", err)
		}
		e.Activate(set)
	}
	return e
}
