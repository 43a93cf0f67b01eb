package configs

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// schemaKeys returns every key path of the config schema ("tasks[].limits.memory"):
// lists add "[]", sections are listed as well as their keys. lists holds
// the paths of the lists.
func schemaKeys() (all, leaves, lists map[string]bool) {
	all, leaves, lists = map[string]bool{}, map[string]bool{}, map[string]bool{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			all[p] = true
			ft := f.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				lists[p] = true
				p += "[]"
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, p)
			} else {
				leaves[p] = true
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return all, leaves, lists
}

var (
	tableKeyRE = regexp.MustCompile("^\\| *(`[^|]*)\\|")
	tickRE     = regexp.MustCompile("`([^`]+)`")
)

// docRows returns the keys named in the first column of docs/config.md's
// tables, each with the text of its row. A key written without its
// section ("`cloud.backoff_base`, `backoff_max`") is the sibling of the
// key before it.
func docRows(t *testing.T) map[string]string {
	b, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	all, _, _ := schemaKeys()
	top := map[string]bool{}
	for k := range all {
		top[strings.SplitN(strings.SplitN(k, ".", 2)[0], "[", 2)[0]] = true
	}
	rows := map[string]string{}
	for line := range strings.Lines(string(b)) {
		m := tableKeyRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		parent := ""
		for _, k := range tickRE.FindAllStringSubmatch(m[1], -1) {
			key := k[1]
			if root := strings.SplitN(strings.SplitN(key, ".", 2)[0], "[", 2)[0]; !top[root] && parent != "" {
				key = parent + "." + key
			}
			rows[key] = line
			if i := strings.LastIndex(key, "."); i > 0 {
				parent = key[:i]
			}
		}
	}
	return rows
}

// telemetryKeys returns the key paths of the annotated telemetry section in
// docs/telemetry.md ("## Configuration"), which documents it key by key.
func telemetryKeys(t *testing.T) map[string]bool {
	b, err := os.ReadFile("../docs/telemetry.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "## Configuration\n\n```yaml\n")
	if !ok {
		t.Fatal("docs/telemetry.md: no ## Configuration YAML block")
	}
	sec, _, _ = strings.Cut(sec, "```")
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(sec), &root); err != nil {
		t.Fatalf("docs/telemetry.md configuration block: %v", err)
	}
	keys := map[string]bool{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(n.Content[0], path)
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				keys[p] = true
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path+"[]")
			}
		}
	}
	walk(&root, "")
	return keys
}

// docs/config.md (with docs/telemetry.md for the telemetry section's keys)
// names only keys that exist, and documents every key of the schema.
func TestDocsMatchSchema(t *testing.T) {
	all, leaves, lists := schemaKeys()
	rows := docRows(t)
	tele := telemetryKeys(t)
	for k := range rows {
		if !all[k] && !leaves[k] {
			t.Errorf("docs/config.md documents %q, which is not a config key", k)
		}
	}
	for k := range tele {
		if !all[k] && !leaves[k] {
			t.Errorf("docs/telemetry.md documents %q, which is not a config key", k)
		}
	}
	var missing []string
	for k := range leaves {
		if _, ok := rows[k]; ok || tele[k] {
			continue
		}
		if !listRowNames(k, rows, lists) {
			missing = append(missing, k)
		}
	}
	slices.Sort(missing)
	for _, k := range missing {
		t.Errorf("config key %q is not documented in docs/config.md", k)
	}
}

// listRowNames reports whether the row of a list above key (a list written
// as a whole, "`mqtt.broker.users` | list | ... `{username, password_file}`")
// names key's last element.
func listRowNames(key string, rows map[string]string, lists map[string]bool) bool {
	last := key[strings.LastIndexAny(key, ".")+1:]
	for p := key; ; {
		i := strings.LastIndex(p, "[]")
		if i < 0 {
			return false
		}
		p = p[:i]
		if row, ok := rows[p]; ok && lists[p] && regexp.MustCompile(`\b`+regexp.QuoteMeta(last)+`\b`).MatchString(row) {
			return true
		}
	}
}
