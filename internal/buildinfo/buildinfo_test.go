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
	if c := Commit(); !regexp.MustCompile(`^([0-9a-f]{40})?$`).MatchString(c) {
		t.Fatalf("Commit() = %q from the VCS stamp", c)
	}
	version, commit, date = "v1.2.3", "0123456789abcdef0123456789abcdef01234567", "2026-12-03T15:04:05Z"
	defer func() { version, commit, date = "", "", "" }()
	if v, c, d := Version(), Commit(), Date(); v != "v1.2.3" || c != commit || d != date {
		t.Fatalf("with -X version, commit, date: %q %q %q", v, c, d)
	}
}
