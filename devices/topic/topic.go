// Package topic owns MQTT topic semantics shared by the config checks, the
// routing table and (later) device access rules: filter validation and
// matching, following MQTT 3.1.1 section 4.7.
package topic

import (
	"fmt"
	"strings"
)

// CheckFilter reports whether f is a valid topic filter.
func CheckFilter(f string) error {
	if f == "" {
		return fmt.Errorf("must not be empty")
	}
	segs := strings.Split(f, "/")
	for i, s := range segs {
		switch {
		case s == "#" && i != len(segs)-1:
			return fmt.Errorf("%q: '#' must be the last segment", f)
		case s != "+" && s != "#" && strings.ContainsAny(s, "+#"):
			return fmt.Errorf("%q: a wildcard must fill a whole segment", f)
		}
	}
	return nil
}

// CheckName reports whether name is a valid topic name to publish to: not
// empty, and with no wildcard character or NUL anywhere (MQTT 3.1.1 4.7.3).
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("must not be empty")
	case strings.ContainsAny(name, "+#\x00"):
		return fmt.Errorf("%q: a topic name cannot contain '+', '#' or NUL", name)
	}
	return nil
}

// Wildcards counts the wildcard segments of a valid filter.
func Wildcards(filter string) int {
	n := 0
	for _, s := range strings.Split(filter, "/") {
		if s == "+" || s == "#" {
			n++
		}
	}
	return n
}

// Filter is a valid filter split into its levels, ready to match.
type Filter []string

// Compile splits a valid filter.
func Compile(filter string) Filter { return strings.Split(filter, "/") }

// Match reports whether topic matches the filter and returns what each
// wildcard matched: one level for +, the rest of the topic for #. Topics
// starting with $ are not matched by a leading wildcard, and "a/#" also
// matches "a".
func (f Filter) Match(topic string) ([]string, bool) {
	if strings.HasPrefix(topic, "$") && (f[0] == "+" || f[0] == "#") {
		return nil, false
	}
	levels := strings.Split(topic, "/")
	var wild []string
	for i, s := range f {
		if s == "#" {
			return append(wild, strings.Join(levels[min(i, len(levels)):], "/")), true
		}
		if i >= len(levels) {
			return nil, false
		}
		if s == "+" {
			wild = append(wild, levels[i])
		} else if s != levels[i] {
			return nil, false
		}
	}
	return wild, len(levels) == len(f)
}
