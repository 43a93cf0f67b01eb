package wasmtest

import (
	"context"
	"os"
	"testing"

	"github.com/tetratelabs/wazero"
)

// Variants of a module compile and differ.
func TestVariant(t *testing.T) {
	base, err := os.ReadFile("../../examples/tasks/build/echo.wasm")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	a, b := Variant(base, "a"), Variant(base, "b")
	if string(a) == string(b) || string(a) == string(base) {
		t.Fatal("variants do not differ")
	}
	for _, m := range [][]byte{a, b} {
		if _, err := rt.CompileModule(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}
