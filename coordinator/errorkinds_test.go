package coordinator

import (
	"os"
	"regexp"
	"strings"
	"testing"

	outpostrt "github.com/outpost-edge/outpost/runtime"
)

// TestDocumentedErrorKinds: the kinds in docs/abi.md's Errors table are
// exactly the runtime's kinds, and each is the status of the call (what
// the CLI, the admin API and the cloud link show) under the same name.
func TestDocumentedErrorKinds(t *testing.T) {
	b, err := os.ReadFile("../docs/abi.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Errors\n")
	if !ok {
		t.Fatal(`docs/abi.md has no "## Errors" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(section, -1)
	documented := map[string]bool{}
	for _, r := range rows {
		documented[r[1]] = true
	}
	if len(documented) == 0 {
		t.Fatal("no kinds in the table of docs/abi.md's Errors section")
	}
	for kind, status := range kindStatus {
		if !documented[string(kind)] {
			t.Errorf("kind %q is not in docs/abi.md's Errors table", kind)
		}
		if string(status) != string(kind) {
			t.Errorf("kind %q is shown as status %q", kind, status)
		}
	}
	for k := range documented {
		if _, ok := kindStatus[outpostrt.Kind(k)]; !ok {
			t.Errorf("docs/abi.md documents kind %q, which the runtime does not have", k)
		}
	}
}
