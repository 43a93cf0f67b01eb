package configs

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/outpost-edge/outpost"

// No part imports the coordinator: runtime, devices, telemetry and the
// shared internal packages reach their settings through their own types
// (and internal/confval), never through coordinator/... The coordinator,
// the commands and this package, which composes the sections (some of
// which the coordinator's own packages declare), are the layers above.
// Test files may use the coordinator to drive a part end to end.
func TestNoPartImportsTheCoordinator(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg, deps := fields[0], fields[1:]
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
		if above(rel) {
			continue
		}
		checked++
		for _, d := range deps {
			if strings.HasPrefix(d, module+"/coordinator") {
				t.Errorf("%s imports %s: a part must not import the coordinator", pkg, d)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages checked: go list output %q", checked, out)
	}
}

// above reports whether the package at rel (relative to the module) is a
// layer above the parts.
func above(rel string) bool {
	for _, p := range []string{"cmd", "coordinator", "configs"} {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}
