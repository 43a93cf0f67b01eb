package buildinfo

import (
	"regexp"
	"testing"
)

func TestVersion(t *testing.T) {
	// A test binary has no module version; its VCS stamp depends on how
	// it was built.
	if v := Version(); !regexp.MustCompile(`^dev(-[0-9a-f]{1,12}(-dirty)?)?$`).MatchString(v) {
		t.Fatalf("Version() = %q", v)
	}
	version = "v1.2.3"
	defer func() { version = "" }()
	if v := Version(); v != "v1.2.3" {
		t.Fatalf("with -X version: %q", v)
	}
}
