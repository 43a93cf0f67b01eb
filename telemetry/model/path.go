package model

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
)

// Elem is one element of a path: a name and its keys.
type Elem struct {
	Name string
	Keys []Key // sorted by name
}

// Key is one key of an element.
type Key struct{ Name, Value string }

// Path is a parsed path.
type Path []Elem

// ErrPath is wrapped by every path syntax error.
var ErrPath = errors.New("bad path")

// ParsePath parses a gNMI path string such as
// /interfaces/interface[name=Ethernet1/1]/state/counters. Inside [ ] a '/'
// is literal; ']' and '\' in key values are escaped with '\'. A missing
// leading '/' is accepted; "/" and "" are the root (no elements).
func ParsePath(s string) (Path, error) {
	var p Path
	i := 0
	if strings.HasPrefix(s, "/") {
		i = 1
	}
	if i >= len(s) {
		return p, nil
	}
	for i <= len(s) {
		// element name up to '/', '[' or end
		start := i
		for i < len(s) && s[i] != '/' && s[i] != '[' {
			if s[i] == ']' {
				return nil, fmt.Errorf("%w %q: ']' without '[' at %d", ErrPath, s, i)
			}
			i++
		}
		e := Elem{Name: s[start:i]}
		if e.Name == "" {
			return nil, fmt.Errorf("%w %q: empty element at %d", ErrPath, s, start)
		}
		for i < len(s) && s[i] == '[' {
			i++
			ks := i
			for i < len(s) && s[i] != '=' && s[i] != ']' {
				i++
			}
			if i >= len(s) || s[i] != '=' {
				return nil, fmt.Errorf("%w %q: key without '=' at %d", ErrPath, s, ks)
			}
			name := s[ks:i]
			if name == "" {
				return nil, fmt.Errorf("%w %q: empty key name at %d", ErrPath, s, ks)
			}
			i++
			var val strings.Builder
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				if c == ']' {
					closed = true
					i++
					break
				}
				val.WriteByte(c)
				i++
			}
			if !closed {
				return nil, fmt.Errorf("%w %q: '[' without ']'", ErrPath, s)
			}
			for _, k := range e.Keys {
				if k.Name == name {
					return nil, fmt.Errorf("%w %q: duplicate key %q", ErrPath, s, name)
				}
			}
			e.Keys = append(e.Keys, Key{name, val.String()})
		}
		sort.Slice(e.Keys, func(a, b int) bool { return e.Keys[a].Name < e.Keys[b].Name })
		p = append(p, e)
		if i >= len(s) {
			break
		}
		if s[i] != '/' {
			return nil, fmt.Errorf("%w %q: unexpected %q at %d", ErrPath, s, s[i], i)
		}
		i++
		if i == len(s) { // trailing slash
			break
		}
	}
	return p, nil
}

// String returns the canonical form: a leading '/', keys sorted by name,
// ']' and '\' escaped in key values.
func (p Path) String() string {
	if len(p) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, e := range p {
		b.WriteByte('/')
		b.WriteString(e.Name)
		for _, k := range e.Keys {
			b.WriteByte('[')
			b.WriteString(k.Name)
			b.WriteByte('=')
			for j := 0; j < len(k.Value); j++ {
				if c := k.Value[j]; c == ']' || c == '\\' {
					b.WriteByte('\\')
				}
				b.WriteByte(k.Value[j])
			}
			b.WriteByte(']')
		}
	}
	return b.String()
}

// Canonical parses s and returns its canonical form.
func Canonical(s string) (string, error) {
	p, err := ParsePath(s)
	if err != nil {
		return "", err
	}
	return p.String(), nil
}

// Join appends the elements of q to p.
func (p Path) Join(q Path) Path {
	out := make(Path, 0, len(p)+len(q))
	return append(append(out, p...), q...)
}

// ToGNMI converts p to a gNMI path (structured elements).
func (p Path) ToGNMI() *gpb.Path {
	g := &gpb.Path{Elem: make([]*gpb.PathElem, len(p))}
	for i, e := range p {
		pe := &gpb.PathElem{Name: e.Name}
		if len(e.Keys) > 0 {
			pe.Key = make(map[string]string, len(e.Keys))
			for _, k := range e.Keys {
				pe.Key[k.Name] = k.Value
			}
		}
		g.Elem[i] = pe
	}
	return g
}

// FromGNMI converts a gNMI prefix and path to a Path. Old-style string
// elements (Element) are accepted as names.
func FromGNMI(prefix, path *gpb.Path) Path {
	var p Path
	add := func(g *gpb.Path) {
		if g == nil {
			return
		}
		if len(g.Elem) == 0 {
			//lint:ignore SA1019 deprecated field, still sent by old agents
			for _, s := range g.Element {
				if q, err := ParsePath(s); err == nil && len(q) == 1 {
					p = append(p, q[0])
				} else {
					p = append(p, Elem{Name: s})
				}
			}
			return
		}
		for _, pe := range g.Elem {
			e := Elem{Name: pe.Name}
			if len(pe.Key) > 0 {
				e.Keys = make([]Key, 0, len(pe.Key))
				for k, v := range pe.Key {
					e.Keys = append(e.Keys, Key{k, v})
				}
				sort.Slice(e.Keys, func(a, b int) bool { return e.Keys[a].Name < e.Keys[b].Name })
			}
			p = append(p, e)
		}
	}
	add(prefix)
	add(path)
	return p
}

// AppendGNMI appends the canonical string of a gNMI path's elements to b
// (no leading "/" for an empty path), without building a Path. Old-style
// string elements go through FromGNMI.
func AppendGNMI(b []byte, g *gpb.Path) []byte {
	if g == nil {
		return b
	}
	//lint:ignore SA1019 deprecated field, still sent by old agents
	if len(g.Elem) == 0 && len(g.Element) > 0 {
		p := FromGNMI(nil, g).String()
		return append(b, p...)
	}
	var keys [4]string
	for _, pe := range g.Elem {
		b = append(b, '/')
		b = append(b, pe.Name...)
		if len(pe.Key) == 0 {
			continue
		}
		ks := keys[:0]
		for k := range pe.Key {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			b = append(b, '[')
			b = append(b, k...)
			b = append(b, '=')
			v := pe.Key[k]
			for j := 0; j < len(v); j++ {
				if c := v[j]; c == ']' || c == '\\' {
					b = append(b, '\\')
				}
				b = append(b, v[j])
			}
			b = append(b, ']')
		}
	}
	return b
}

// Pattern matches paths. Its elements are those of a path where a name "*"
// matches any one element, "..." matches any number of elements (also
// none), a key value "*" matches any value and a key the pattern leaves out
// matches anything.
type Pattern struct {
	elems Path
	raw   string
}

// ParsePattern parses a path pattern; "" and "/..." match everything.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		s = "/..."
	}
	p, err := ParsePath(s)
	if err != nil {
		return Pattern{}, err
	}
	return Pattern{elems: p, raw: p.String()}, nil
}

// MustPattern is ParsePattern for constants; it panics on a bad pattern.
func MustPattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the canonical pattern.
func (m Pattern) String() string { return m.raw }

// Exact reports whether the pattern has no wildcard (it names one path).
func (m Pattern) Exact() bool {
	for _, e := range m.elems {
		if e.Name == "*" || e.Name == "..." {
			return false
		}
		for _, k := range e.Keys {
			if k.Value == "*" {
				return false
			}
		}
	}
	return true
}

// Match reports whether the path p matches.
func (m Pattern) Match(p Path) bool { return matchElems(m.elems, p) }

// MatchString parses s and matches it; unparsable paths never match.
func (m Pattern) MatchString(s string) bool {
	if m.raw == s {
		return true
	}
	p, err := ParsePath(s)
	return err == nil && m.Match(p)
}

func matchElems(pat, p Path) bool {
	for len(pat) > 0 {
		e := pat[0]
		if e.Name == "..." {
			rest := pat[1:]
			if len(rest) == 0 {
				return true
			}
			for i := 0; i <= len(p); i++ {
				if matchElems(rest, p[i:]) {
					return true
				}
			}
			return false
		}
		if len(p) == 0 || !matchElem(e, p[0]) {
			return false
		}
		pat, p = pat[1:], p[1:]
	}
	return len(p) == 0
}

func matchElem(pe, e Elem) bool {
	if pe.Name != "*" && pe.Name != e.Name {
		return false
	}
	for _, k := range pe.Keys {
		found := false
		for _, ek := range e.Keys {
			if ek.Name == k.Name {
				found = k.Value == "*" || k.Value == ek.Value
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Glob matches a target name against a glob with '*' (any run) and '?'
// (one character); "" matches everything.
func Glob(pattern, name string) bool {
	if pattern == "" || pattern == "*" {
		return true
	}
	px, nx := 0, 0
	nextPx, nextNx := 0, 0
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '?':
				if nx < len(name) {
					px++
					nx++
					continue
				}
			case '*':
				nextPx, nextNx = px, nx+1
				px++
				continue
			default:
				if nx < len(name) && name[nx] == c {
					px++
					nx++
					continue
				}
			}
		}
		if 0 < nextNx && nextNx <= len(name) {
			px, nx = nextPx, nextNx
			continue
		}
		return false
	}
	return true
}

// CheckPath is a light syntax check of a path or path pattern as the config
// writes it (a leading '/', balanced '[' ']' not nested, '\' escapes), so a
// config check finds what ParsePath and ParsePattern would refuse later.
func CheckPath(s string) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf("%q must start with /", s)
	}
	depth := 0
	esc := false
	for _, r := range s {
		switch {
		case esc:
			esc = false
		case r == '\\':
			esc = true
		case r == '[':
			if depth > 0 {
				return fmt.Errorf("%q: nested '['", s)
			}
			depth++
		case r == ']':
			if depth == 0 {
				return fmt.Errorf("%q: ']' without '['", s)
			}
			depth--
		}
	}
	if depth != 0 {
		return fmt.Errorf("%q: '[' without ']'", s)
	}
	return nil
}
