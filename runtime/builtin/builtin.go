// Package builtin holds the wasm modules embedded in the outpost binary and
// served by the runtime under the "builtin:" prefix (for example
// "builtin:echo"). Each module is committed as its source (.wat) beside the
// compiled bytes (.wasm); a test in package runtime rebuilds them with wat2wasm
// and fails when they differ.
package builtin

import (
	_ "embed"
	"sort"
)

// Prefix marks a module reference as builtin: "builtin:echo".
const Prefix = "builtin:"

//go:embed echo.wasm
var echo []byte

var modules = map[string][]byte{
	"echo": echo,
}

// Lookup returns the bytes of the builtin module name (without the prefix).
// The returned slice must not be modified.
func Lookup(name string) ([]byte, bool) {
	b, ok := modules[name]
	return b, ok
}

// Names lists the builtin modules, sorted.
func Names() []string {
	names := make([]string, 0, len(modules))
	for n := range modules {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
