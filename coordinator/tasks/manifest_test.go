package tasks

import (
	"strings"
	"testing"
)

// A manifest deployed without a module is a process-only task: it needs
// an artifact, and may not use what only a wasm module uses.
func TestManifestCheckNative(t *testing.T) {
	exe := []Artifact{{Env: "process", OS: "linux", Arch: "amd64", Executable: "nat"}}
	for _, tc := range []struct {
		name string
		m    Manifest
		want []string // "" : valid
	}{
		{"artifacts only", Manifest{Artifacts: exe}, nil},
		{"a module reference", Manifest{Module: "sha256:00"}, nil},
		{"nothing to run", Manifest{}, []string{`module: task "nat" needs a module (a .wasm file or builtin:NAME) or a process artifact`}},
		{"libraries and fresh_instance", Manifest{Artifacts: exe, FreshInstance: true, Libraries: []Library{{Name: "l", Module: "l.wasm"}}}, []string{
			`libraries: task "nat" has no module to import them`,
			`fresh_instance: task "nat" has no module to instantiate`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.CheckNative("nat")
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("CheckNative: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckNative: no error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("CheckNative: %v, want %d errors", err, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("error %d: %s, want %s…", i, lines[i], w)
				}
			}
		})
	}
}
