// Package buildinfo is the version of the running binary, the commit it
// was built from and when. A release build (scripts/release.sh) sets all
// three with -ldflags "-X github.com/outpost-edge/outpost/internal/buildinfo.version=…"
// (and .commit=, .date=); otherwise the version is the module version,
// else "dev-<commit>" from the VCS stamp, else "dev", and the commit and
// date come from the VCS stamp when the build has one. The daemon reports
// the version (health, metrics, `outpost version`) and a refusal of a
// newer on-disk format names it.
package buildinfo

import "runtime/debug"

// Set at link time by release builds.
var (
	version = ""
	commit  = ""
	date    = ""
)

// Version returns the binary's version.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	rev, dirty := vcs(bi)
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "dev-" + rev
}

// Commit returns the commit the binary was built from, "" when unknown.
func Commit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, _ := vcs(bi)
		return rev
	}
	return ""
}

// Date returns when the binary was built (a release build's stamp, RFC
// 3339), else the time of its commit from the VCS stamp, else "".
func Date() string {
	if date != "" {
		return date
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				return s.Value
			}
		}
	}
	return ""
}

// vcs returns the VCS stamp's revision and whether the tree was modified.
func vcs(bi *debug.BuildInfo) (rev string, dirty bool) {
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	return rev, dirty
}
