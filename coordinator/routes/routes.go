// Package routes owns the routing table: which MQTT topic filters feed which
// task, and where each result is published, or go up to the cloud. A Table is immutable; a reload
// builds a new one and swaps it in.
package routes

import (
	"strconv"
	"strings"

	"github.com/outpost-edge/outpost/devices/topic"
)

// Route is one compiled entry of the table: to a task, or to the cloud.
type Route struct {
	Filter string
	Task   string // "" for the cloud
	Cloud  bool
	QoS    byte
	Reply  Template
	// Labels label the route's calls.
	Labels map[string]string

	filter topic.Filter
}

// Table is an immutable set of routes.
type Table struct {
	routes []Route
}

// New compiles the routes of a validated config.
func New(rs []Rule) *Table {
	t := &Table{routes: make([]Route, len(rs))}
	for i, r := range rs {
		t.routes[i] = Route{Filter: r.Topic, Task: r.Task, Cloud: r.Cloud, QoS: r.QoS, Reply: ParseTemplate(r.Reply), Labels: r.Labels, filter: topic.Compile(r.Topic)}
	}
	return t
}

// Routes returns the table's routes in config order.
func (t *Table) Routes() []Route { return t.routes }

// Match is a route that matched a topic, with the topic's wildcard segments.
type Match struct {
	*Route
	Wild []string // what each + matched, and for # the rest of the topic
}

// Match returns every route whose filter matches topic, in table order.
func (t *Table) Match(name string) []Match {
	var out []Match
	for i := range t.routes {
		if wild, ok := t.routes[i].filter.Match(name); ok {
			out = append(out, Match{Route: &t.routes[i], Wild: wild})
		}
	}
	return out
}

// ReplyTopic renders the route's reply topic for the matched topic; "" if
// the route has no reply.
func (m Match) ReplyTopic(topic string) string { return m.Reply.Render(topic, m.Wild) }

// Template is a compiled reply topic: literal parts and placeholders.
type Template struct {
	parts []part
}

type part struct {
	lit  string
	wild int // 1-based wildcard index; 0 for a literal; -1 for the whole topic
}

// ParseTemplate compiles a reply template validated by CheckReply.
func ParseTemplate(s string) Template {
	var t Template
	for s != "" {
		i := strings.IndexByte(s, '{')
		j := strings.IndexByte(s[max(i, 0):], '}')
		if i < 0 || j < 0 {
			t.parts = append(t.parts, part{lit: s})
			break
		}
		j += i
		if i > 0 {
			t.parts = append(t.parts, part{lit: s[:i]})
		}
		name := s[i+1 : j]
		if name == "topic" {
			t.parts = append(t.parts, part{wild: -1})
		} else if n, err := strconv.Atoi(name); err == nil && n > 0 {
			t.parts = append(t.parts, part{wild: n})
		} else {
			t.parts = append(t.parts, part{lit: s[i : j+1]})
		}
		s = s[j+1:]
	}
	return t
}

// Empty reports whether the template produces no topic.
func (t Template) Empty() bool { return len(t.parts) == 0 }

// Render fills the template from a topic and its wildcard segments.
func (t Template) Render(topic string, wild []string) string {
	if len(t.parts) == 1 && t.parts[0].wild == 0 {
		return t.parts[0].lit
	}
	var b strings.Builder
	for _, p := range t.parts {
		switch {
		case p.wild == -1:
			b.WriteString(topic)
		case p.wild > 0 && p.wild <= len(wild):
			b.WriteString(wild[p.wild-1])
		default:
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

// Subscriptions returns each distinct filter once with the highest QoS asked for it.
func (t *Table) Subscriptions() map[string]byte {
	subs := map[string]byte{}
	for _, r := range t.routes {
		if q, ok := subs[r.Filter]; !ok || r.QoS > q {
			subs[r.Filter] = r.QoS
		}
	}
	return subs
}
