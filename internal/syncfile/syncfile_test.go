package syncfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A new file gets its content and mode; an existing one is never replaced.
func TestWriteNew(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteNew(p, 0o600, strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	st, _ := os.Stat(p)
	if err != nil || string(b) != "data" || st.Mode().Perm() != 0o600 {
		t.Fatalf("content %q mode %v: %v", b, st.Mode().Perm(), err)
	}
	if err := WriteNew(p, 0o600, strings.NewReader("other")); !os.IsExist(err) {
		t.Fatalf("second write: %v, want exists", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "data" {
		t.Fatalf("existing file replaced: %q", b)
	}
}
