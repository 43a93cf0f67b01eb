package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a config: where and what.
type Problem struct {
	File string
	Line int    // 0 when unknown
	Path string // key path such as tasks[0].limits.timeout; "" for the whole file
	Msg  string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found in one config; it is the error Load returns.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads, decodes and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes and validates a config read from name. Relative module paths
// are resolved against name's directory. Any problem, syntactic or semantic,
// is returned in a Problems error together with all the others.
func Parse(data []byte, name string) (*Config, error) {
	d := newDoc(data, name)
	c := Defaults()
	if !d.decode(&c) {
		return nil, d.problems // not YAML, or not a mapping: nothing to validate
	}
	c.Source = name
	c.applyListDefaults()
	c.resolve(filepath.Dir(name))
	c.validate(d)
	if len(d.problems) > 0 {
		sort.SliceStable(d.problems, func(i, j int) bool { return d.problems[i].Line < d.problems[j].Line })
		return nil, d.problems
	}
	return &c, nil
}

// doc holds a YAML document with a key path → line index, so that
// validation can say where a problem is.
type doc struct {
	name     string
	data     []byte
	lines    map[string]int // key path → line
	problems Problems
}

func newDoc(data []byte, name string) *doc {
	return &doc{name: name, data: data, lines: map[string]int{}}
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// decode fills c from the document strictly, recording every decode error.
// It returns false when the document cannot be validated further; after
// unknown keys or bad values it returns true, with those problems recorded,
// so that validation can report the rest.
func (d *doc) decode(c *Config) bool {
	var root yaml.Node
	if err := yaml.Unmarshal(d.data, &root); err != nil {
		d.addYAMLError(err.Error())
		return false
	}
	if len(root.Content) == 0 {
		return true // an empty file means all defaults
	}
	d.index(root.Content[0], "")
	if root.Content[0].Kind != yaml.MappingNode {
		d.add(root.Content[0].Line, "", "the config must be a mapping of keys to values")
		return false
	}
	dec := yaml.NewDecoder(bytes.NewReader(d.data))
	dec.KnownFields(true)
	err := dec.Decode(c)
	if err == nil || errors.Is(err, io.EOF) {
		return true
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, e := range te.Errors {
			d.addYAMLError(e)
		}
		return true
	}
	d.addYAMLError(err.Error())
	return false
}

func (d *doc) addYAMLError(msg string) {
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
	d.problems = append(d.problems, Problem{File: d.name, Line: line, Path: path, Msg: msg})
}

// keyPathAt returns the path on line whose last key is key: the unknown
// key itself, not a key nested under it in flow style ({a: {b: 1}}).
func (d *doc) keyPathAt(line int, key string) string {
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
func (d *doc) index(n *yaml.Node, path string) {
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = n.Line
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if path != "" {
				k = path + "." + k
			}
			d.lines[k] = n.Content[i].Line
			d.index(n.Content[i+1], k)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			d.index(c, fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

// line returns the line of path, or of its nearest indexed parent.
func (d *doc) line(path string) int {
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
func (d *doc) pathAt(line int) string {
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

func (d *doc) add(line int, path, msg string) {
	d.problems = append(d.problems, Problem{File: d.name, Line: line, Path: path, Msg: msg})
}

// errorf records a problem at a key path.
func (d *doc) errorf(path, format string, args ...any) {
	d.add(d.line(path), path, fmt.Sprintf(format, args...))
}
