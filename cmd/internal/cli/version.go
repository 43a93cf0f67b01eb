package cli

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/internal/buildinfo"
)

// Version describes a build: its version, commit and build date
// (internal/buildinfo: stamped by release builds, else from the module
// version and the VCS stamp), the Go version and the wazero version it was
// built with.
type Version struct {
	Version, Commit, Date, Go, Wazero string
	Modified                          bool
}

// BuildVersion reads the build information of the running binary: the
// version as buildinfo.Version gives it (the daemon reports the same in
// health and in format refusals), the commit, the date, Go and wazero.
func BuildVersion() Version {
	v := Version{Version: buildinfo.Version(), Commit: buildinfo.Commit(), Date: buildinfo.Date()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Go = bi.GoVersion
	for _, s := range bi.Settings {
		if s.Key == "vcs.modified" {
			v.Modified = s.Value == "true"
		}
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/tetratelabs/wazero" {
			v.Wazero = d.Version
		}
	}
	return v
}

// String is the version alone, as the daemon reports it in health.
func (v Version) String() string { return v.Version }

// Long is what `version` and `--version` print: the version, then one line
// each for the commit, the build date, Go and wazero (those the build
// knows).
func (v Version) Long(program string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", program, v.Version)
	if v.Commit != "" {
		mod := ""
		if v.Modified {
			mod = " (modified)"
		}
		fmt.Fprintf(&b, "commit: %s%s\n", v.Commit, mod)
	}
	if v.Date != "" {
		fmt.Fprintf(&b, "built: %s\n", v.Date)
	}
	if v.Go != "" {
		fmt.Fprintf(&b, "go: %s\n", v.Go)
	}
	if v.Wazero != "" {
		fmt.Fprintf(&b, "wazero: %s\n", v.Wazero)
	}
	return b.String()
}

// AddVersion gives root --version and a `version` command, both printing
// v.Long.
func AddVersion(root *cobra.Command, v Version) {
	root.Version = v.Version
	root.SetVersionTemplate(strings.ReplaceAll(v.Long(root.Name()), "{", "{{`{`}}"))
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date, Go and wazero versions",
		Args:  NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), v.Long(root.Name()))
			return err
		},
	})
}
