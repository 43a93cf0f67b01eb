package runtime

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/runtime/builtin"
)

// TestBuiltinUpToDate rebuilds every builtin module from its .wat source and
// fails when the committed .wasm differs (rebuild: wat2wasm X.wat -o X.wasm in
// runtime/builtin).
func TestBuiltinUpToDate(t *testing.T) {
	for _, name := range builtin.Names() {
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), name+".wasm")
			wat2wasm(t, filepath.Join("builtin", name+".wat"), dst)
			want, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := builtin.Lookup(name)
			if !bytes.Equal(got, want) {
				t.Fatalf("runtime/builtin/%s.wasm is stale: rebuild it with wat2wasm %s.wat -o %s.wasm", name, name, name)
			}
		})
	}
}
