package wasmtest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// WAT compiles the text module src with wat2wasm (wabt, installed by
// scripts/test.sh) into dir (a new temporary directory when "") as
// NAME.wasm and returns its path; a failure fails the test.
func WAT(t testing.TB, src, dir string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	dst := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".wat")+".wasm")
	if out, err := exec.Command("wat2wasm", src, "-o", dst).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm %s (scripts/test.sh installs wabt): %v\n%s", src, err, out)
	}
	return dst
}
