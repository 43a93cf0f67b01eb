// Package confval holds what every part's settings are made of: the value
// types of the config files (Duration, ByteSize, TLS), the strict YAML
// decoder that indexes every key path by its line, and the Checker through
// which a part's Validate reports problems at its own keys. Parts import it;
// it imports no part.
//
// A part's section is a plain struct with yaml tags, declared beside the
// part's code, with up to three steps that the top-level config (package
// configs) runs in this order after decoding: defaults (a Defaults
// function whose values the file overrides, or WithDefaults/ApplyDefaults
// where a zero value means "default", so that a section built in code gets
// them too), Resolve (file names made absolute against the config file's
// directory, values derived from the host or the node id), and Validate
// (every problem reported through a Checker rooted at the section's key).
package confval

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a config, or worth a warning: where and
// what.
type Problem struct {
	File string
	Line int    // 0 when unknown
	Path string // key path such as tasks[0].limits.timeout; "" for the whole file
	Msg  string
	// Warning marks a legal setting that may not do what the writer meant.
	Warning bool
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Warning {
		b.WriteString("warning: ")
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found in one document.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Doc is one YAML document being decoded and checked: it knows the line of
// every key path, so that a problem found after decoding is still reported
// where it is written.
type Doc struct {
	name     string
	data     []byte
	lines    map[string]int // key path → line
	problems Problems
	warnings Problems
}

// NewDoc returns a document read from name.
func NewDoc(data []byte, name string) *Doc {
	return &Doc{name: name, data: data, lines: map[string]int{}}
}

// Name is the file the document was read from.
func (d *Doc) Name() string { return d.name }

// Err returns the problems found, sorted by line, or nil.
func (d *Doc) Err() error {
	if len(d.problems) == 0 {
		return nil
	}
	sort.SliceStable(d.problems, func(i, j int) bool { return d.problems[i].Line < d.problems[j].Line })
	return d.problems
}

// Warnings returns the warnings recorded, in the order they were found.
func (d *Doc) Warnings() Problems { return d.warnings }

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Decode fills v (which holds the defaults) from the document strictly,
// recording every decode error: unknown keys and bad values are all
// reported, not only the first. It returns false when the document cannot
// be checked further (not YAML, or not a mapping).
func (d *Doc) Decode(v any) bool {
	var root yaml.Node
	if err := yaml.Unmarshal(d.data, &root); err != nil {
		d.addSyntaxError(err.Error())
		return false
	}
	if len(root.Content) == 0 {
		return true // an empty document means all defaults
	}
	d.index(root.Content[0], "")
	if root.Content[0].Kind != yaml.MappingNode {
		d.add(root.Content[0].Line, "", "the config must be a mapping of keys to values")
		return false
	}
	dec := yaml.NewDecoder(bytes.NewReader(d.data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return true
	}
	if te, ok := errors.AsType[*yaml.TypeError](err); ok {
		for _, e := range te.Errors {
			d.addYAMLError(e)
		}
		return true
	}
	d.addYAMLError(err.Error())
	return false
}

// maxScanLines bounds the documents whose syntax errors are located by
// re-parsing prefixes (quadratic in the worst case); longer ones keep the
// line yaml.v3 reports.
const maxScanLines = 2000

// addSyntaxError records a YAML syntax error at the line where the
// document stops being YAML. yaml.v3 reports such an error at the line
// where the enclosing block starts (its "context"), not where the problem
// is: a bad indentation on line 4 inside a mapping that starts on line 2
// comes out as line 1. The first bad line is the one after the longest
// prefix of whole lines that still parses.
func (d *Doc) addSyntaxError(msg string) {
	var ends []int // offset after each line
	for i, b := range d.data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(d.data) > 0 && d.data[len(d.data)-1] != '\n' {
		ends = append(ends, len(d.data))
	}
	if len(ends) <= maxScanLines {
		line := 1
		for k := len(ends) - 1; k > 0; k-- {
			var n yaml.Node
			if yaml.Unmarshal(d.data[:ends[k-1]], &n) == nil {
				line = k + 1
				break
			}
		}
		msg = lineRE.ReplaceAllString(msg, "line "+strconv.Itoa(line)+": $2")
		if !lineRE.MatchString(msg) {
			msg = "line " + strconv.Itoa(line) + ": " + strings.TrimPrefix(msg, "yaml: ")
		}
	}
	d.addYAMLError(msg)
}

func (d *Doc) addYAMLError(msg string) {
	line := 0
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	// yaml.v3 says "field x not found in type config.Task": say it plainly.
	if i := strings.Index(msg, " not found in type "); strings.HasPrefix(msg, "field ") && i > 0 {
		msg = "unknown key " + strconv.Quote(msg[len("field "):i])
	}
	path := d.pathAt(line)
	if key, ok := strings.CutPrefix(msg, "unknown key "); ok {
		path = d.keyPathAt(line, strings.Trim(key, `"`))
	}
	d.add(line, path, msg)
}

// keyPathAt returns the path on line whose last key is key: the unknown
// key itself, not a key nested under it in flow style ({a: {b: 1}}).
func (d *Doc) keyPathAt(line int, key string) string {
	best := ""
	for p, l := range d.lines {
		if l == line && (p == key || strings.HasSuffix(p, "."+key)) && (best == "" || len(p) < len(best)) {
			best = p
		}
	}
	if best == "" {
		return d.pathAt(line)
	}
	return best
}

// index records the line of every key path under n.
func (d *Doc) index(n *yaml.Node, path string) {
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = n.Line
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := Join(path, n.Content[i].Value)
			d.lines[k] = n.Content[i].Line
			d.index(n.Content[i+1], k)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			d.index(c, Join(path, "["+strconv.Itoa(i)+"]"))
		}
	}
}

// line returns the line of path, or of its nearest indexed parent.
func (d *Doc) line(path string) int {
	for p := path; ; {
		if l, ok := d.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return 0
		}
		p = p[:i]
	}
}

// pathAt returns the deepest key path that starts on line.
func (d *Doc) pathAt(line int) string {
	var best []string
	for p, l := range d.lines {
		if l == line && p != "" {
			best = append(best, p)
		}
	}
	sort.Slice(best, func(i, j int) bool { return len(best[i]) > len(best[j]) })
	if len(best) == 0 {
		return ""
	}
	return best[0]
}

func (d *Doc) add(line int, path, msg string) {
	d.problems = append(d.problems, Problem{File: d.name, Line: line, Path: path, Msg: msg})
}

// Checker returns a Checker at the document's root.
func (d *Doc) Checker() *Checker { return &Checker{d: d} }

// Join appends key to the key path prefix: "a" and "b" make "a.b", "a" and
// "[0]" make "a[0]".
func Join(prefix, key string) string {
	switch {
	case key == "":
		return prefix
	case prefix == "", strings.HasPrefix(key, "["):
		return prefix + key
	}
	return prefix + "." + key
}

// Checker records the problems a part finds in its settings, at key paths
// relative to where the part's section is in the document, so that a part
// validates its own keys without knowing where it is mounted.
type Checker struct {
	d      *Doc
	prefix string
}

// At returns a Checker for the section under key.
func (c *Checker) At(key string) *Checker { return &Checker{d: c.d, prefix: Join(c.prefix, key)} }

// Index returns a Checker for entry i of the list under key.
func (c *Checker) Index(key string, i int) *Checker {
	return c.At(key + "[" + strconv.Itoa(i) + "]")
}

// Path returns the full key path of key.
func (c *Checker) Path(key string) string { return Join(c.prefix, key) }

// Errorf records a problem at key ("" for the section itself), on the line
// where key, or its nearest parent, is written.
func (c *Checker) Errorf(key, format string, args ...any) {
	p := c.Path(key)
	c.d.add(c.d.line(p), p, fmt.Sprintf(format, args...))
}

// Warnf records a warning at key: a setting that is valid but may not do
// what the writer meant.
func (c *Checker) Warnf(key, format string, args ...any) {
	p := c.Path(key)
	c.d.warnings = append(c.d.warnings, Problem{File: c.d.name, Line: c.d.line(p), Path: p, Msg: fmt.Sprintf(format, args...), Warning: true})
}

// Set reports whether key is written in the document (not defaulted).
func (c *Checker) Set(key string) bool {
	_, ok := c.d.lines[c.Path(key)]
	return ok
}
