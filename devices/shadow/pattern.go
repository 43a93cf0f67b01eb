package shadow

import (
	"fmt"
	"path"
	"strings"
)

// CheckThingPattern checks a pattern of device ids (a task's
// permissions.shadows entry): an exact id or a glob of path.Match, * any
// run of characters and ? one, non-empty and without a /.
func CheckThingPattern(pat string) error {
	if pat == "" || strings.Contains(pat, "/") {
		return fmt.Errorf("%q is not a device id pattern (non-empty, no /)", pat)
	}
	if _, err := path.Match(pat, ""); err != nil {
		return fmt.Errorf("%q is not a device id pattern: %w", pat, err)
	}
	return nil
}

// MatchThing reports whether thing matches pat, a pattern CheckThingPattern
// accepts.
func MatchThing(pat, thing string) bool {
	ok, _ := path.Match(pat, thing)
	return ok
}
