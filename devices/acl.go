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

// grants are the compiled filters a client may publish to and subscribe
// to, split into levels. A level may still name {id}, which stands for the
// client's id when a topic is checked: one compilation serves every client
// of the same rules (all anonymous clients; all devices of the same
// groups), instead of a copy for each client.
type grants struct {
	pub, sub [][]string
}

// compileGrants compiles rules, {id} left in place.
func compileGrants(rules ...[]Rule) *grants {
	g := &grants{}
	for _, rs := range rules {
		for _, r := range rs {
			for _, f := range r.Publish {
				g.pub = append(g.pub, strings.Split(f, "/"))
			}
			for _, f := range r.Subscribe {
				g.sub = append(g.sub, strings.Split(f, "/"))
			}
		}
	}
	return g
}

// grantID is what {id} stands for in the grants of a client with id:
// the id itself when it is a valid device id, else "", for which a filter
// naming {id} grants nothing (an anonymous client id such as "a/#" must not
// widen a grant).
func grantID(id string) string {
	if !ValidDeviceID(id) {
		return ""
	}
	return id
}

// allowPublish reports whether the client whose {id} is id (see grantID)
// may publish to topic.
func (g *grants) allowPublish(topic, id string) bool { return anyCovers(g.pub, topic, id) }

// allowSubscribe reports whether the client whose {id} is id (see
// grantID) may subscribe to filter (every topic the filter can match is
// granted) or receive a message on a topic.
func (g *grants) allowSubscribe(filter, id string) bool { return anyCovers(g.sub, filter, id) }

func anyCovers(grants [][]string, filter, id string) bool {
	levels := strings.Split(shareless(filter), "/")
	for _, gr := range grants {
		if covers(gr, levels, id) {
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
// grant g (both split into levels, {id} in g standing for id). A topic name is a filter without
// wildcards, so the same test decides a publish. As in MQTT matching, a
// wildcard at the first level never covers a level starting with $, and
// "a/#" covers "a".
func covers(g, f []string, id string) bool {
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
		case fl == "+" || !levelIs(gl, fl, id):
			return false
		}
	}
	return len(f) == len(g)
}

// levelIs reports whether level fl is grant level gl with every {id} in it
// replaced by id; never when gl names {id} and id is "".
func levelIs(gl, fl, id string) bool {
	for {
		before, after, found := strings.Cut(gl, "{id}")
		if !found {
			return fl == gl
		}
		if id == "" || !strings.HasPrefix(fl, before) || !strings.HasPrefix(fl[len(before):], id) {
			return false
		}
		fl, gl = fl[len(before)+len(id):], after
	}
}
