// Package buildinfo is the version of the running binary: set at build
// time with -ldflags "-X github.com/outpost-edge/outpost/internal/buildinfo.version=…",
// else the module version, else "dev-<commit>" from the VCS stamp, else
// "dev". The daemon reports it (health, metrics, `outpost version`) and
// a refusal of a newer on-disk format names it.
package buildinfo

import "runtime/debug"

var version = ""

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
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
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
