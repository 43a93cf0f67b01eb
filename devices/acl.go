package devices

import (
	"regexp"
	"strings"
)

// Rule grants publish and subscribe topic filters. In a group's or the
// anonymous clients' rules, {id} stands for the client's device id (its
// client id when anonymous).
type Rule struct {
	Publish   []string `yaml:"publish"`
	Subscribe []string `yaml:"subscribe"`
}

// validID is what a device id may be: it is substituted into topic filters,
// so it must be one topic level without wildcards.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidDeviceID reports whether id can name a device.
func ValidDeviceID(id string) bool { return validID.MatchString(id) }

// ownRules are what every device may use: its namespace and its shadow
// topics.
var ownRules = []Rule{{
	Publish:   []string{"devices/{id}/#", "$aws/things/{id}/shadow/#"},
	Subscribe: []string{"devices/{id}/#", "$aws/things/{id}/shadow/#"},
}}

// grants are the compiled filters one client may publish to and
// subscribe to.
type grants struct {
	pub, sub [][]string
}

// expand compiles rules for id: {id} substituted; a filter naming {id} is
// left out when id is not a valid device id (an anonymous client id such
// as "a/#" must not widen a grant).
func (g *grants) expand(rules []Rule, id string) {
	add := func(dst *[][]string, filters []string) {
		for _, f := range filters {
			if strings.Contains(f, "{id}") {
				if !ValidDeviceID(id) {
					continue
				}
				f = strings.ReplaceAll(f, "{id}", id)
			}
			*dst = append(*dst, strings.Split(f, "/"))
		}
	}
	for _, r := range rules {
		add(&g.pub, r.Publish)
		add(&g.sub, r.Subscribe)
	}
}

// allowPublish reports whether the client may publish to topic.
func (g *grants) allowPublish(topic string) bool { return anyCovers(g.pub, topic) }

// allowSubscribe reports whether the client may subscribe to filter (every
// topic the filter can match is granted) or receive a message on a topic.
func (g *grants) allowSubscribe(filter string) bool { return anyCovers(g.sub, filter) }

func anyCovers(grants [][]string, filter string) bool {
	levels := strings.Split(shareless(filter), "/")
	for _, gr := range grants {
		if covers(gr, levels) {
			return true
		}
	}
	return false
}

// shareless strips the $share/{group}/ prefix of a shared subscription.
func shareless(filter string) string {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if _, f, ok := strings.Cut(rest, "/"); ok {
			return f
		}
	}
	return filter
}

// covers reports whether every topic that filter f matches is matched by
// grant g (both split into levels). A topic name is a filter without
// wildcards, so the same test decides a publish. As in MQTT matching, a
// wildcard at the first level never covers a level starting with $, and
// "a/#" covers "a".
func covers(g, f []string) bool {
	if len(f) > 0 && strings.HasPrefix(f[0], "$") && len(g) > 0 && (g[0] == "+" || g[0] == "#") {
		return false
	}
	for i, gl := range g {
		if gl == "#" {
			return i == len(g)-1
		}
		if i >= len(f) {
			return false
		}
		switch fl := f[i]; {
		case fl == "#":
			return false // f reaches deeper than a narrower grant
		case gl == "+":
		case fl == "+" || gl != fl:
			return false
		}
	}
	return len(f) == len(g)
}
