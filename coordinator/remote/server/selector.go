package server

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/outpost-edge/outpost/internal/confval"
)

// A Selector picks nodes by their labels, in the set-based style of
// Kubernetes label selectors: comma-separated requirements, all of which a
// node's labels must meet.
//
//	k=v, k==v   the label k is v
//	k!=v        k is not v (or k is absent)
//	k in (a,b)  k is a or b
//	k notin (a,b) k is neither (or absent)
//	k           k is present
//	!k          k is absent
//
// An empty selector matches every node. Keys are checked as a reader
// names them (confval.CheckLabelKeyRef: labels stored under an earlier,
// longer key limit are still selected); a value is any text without a
// comma or parentheses, which end it.
type Selector struct {
	reqs []requirement
	text string
}

type requirement struct {
	key    string
	op     string // "=", "!=", "in", "notin", "exists", "!exists"
	values []string
}

// errSelector marks a selector that does not parse.
var errSelector = errors.New("bad label selector")

// ParseSelector parses a selector (see Selector).
func ParseSelector(s string) (Selector, error) {
	sel := Selector{text: strings.TrimSpace(s)}
	for _, part := range splitTop(s) {
		part = strings.TrimSpace(part)
		if part == "" {
			return Selector{}, fmt.Errorf("%w %q: an empty requirement", errSelector, s)
		}
		r, err := parseRequirement(part)
		if err != nil {
			return Selector{}, fmt.Errorf("%w %q: %w", errSelector, s, err)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// splitTop splits s at the commas outside parentheses ("" gives none).
func splitTop(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

var setReq = regexp.MustCompile(`^(\S+)\s+(in|notin)\s*\(([^()]*)\)$`)

func parseRequirement(p string) (requirement, error) {
	if m := setReq.FindStringSubmatch(p); m != nil {
		r := requirement{key: m[1], op: m[2]}
		if err := confval.CheckLabelKeyRef(r.key); err != nil {
			return r, fmt.Errorf("label %w", err)
		}
		for v := range strings.SplitSeq(m[3], ",") {
			r.values = append(r.values, strings.TrimSpace(v))
		}
		return r, nil
	}
	for _, op := range []string{"!=", "==", "="} {
		if k, v, ok := strings.Cut(p, op); ok {
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if err := confval.CheckLabelKeyRef(k); err != nil {
				return requirement{}, fmt.Errorf("label %w", err)
			}
			if strings.ContainsAny(v, "()") {
				return requirement{}, fmt.Errorf("%q: a value without parentheses (k in (a,b) lists values)", p)
			}
			if op == "==" {
				op = "="
			}
			return requirement{key: k, op: op, values: []string{v}}, nil
		}
	}
	r := requirement{key: p, op: "exists"}
	if k, ok := strings.CutPrefix(p, "!"); ok {
		r = requirement{key: strings.TrimSpace(k), op: "!exists"}
	}
	if confval.CheckLabelKeyRef(r.key) != nil {
		return r, fmt.Errorf("%q: want k=v, k!=v, k in (a,b), k notin (a,b), k or !k", p)
	}
	return r, nil
}

// Matches reports whether labels meet every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, has := labels[r.key]
		var ok bool
		switch r.op {
		case "=":
			ok = has && v == r.values[0]
		case "!=":
			ok = !has || v != r.values[0]
		case "in":
			ok = has && slices.Contains(r.values, v)
		case "notin":
			ok = !has || !slices.Contains(r.values, v)
		case "exists":
			ok = has
		case "!exists":
			ok = !has
		}
		if !ok {
			return false
		}
	}
	return true
}

// Empty reports whether s matches every node.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

func (s Selector) String() string { return s.text }
