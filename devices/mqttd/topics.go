package mqttd

import (
	"strings"
	"sync"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/devices/topic"
)

// InlineHandler receives a message for an inline subscription, on the
// publisher's goroutine; pk must not be kept past the call.
type InlineHandler func(cl *Client, sub packets.Subscription, pk packets.Packet)

// index holds the subscriptions as a tree of topic levels.
type index struct {
	mu   sync.RWMutex
	root node
}

type node struct {
	children small[string, *node]
	subs     small[string, packets.Subscription]        // by client id
	shared   map[string]map[string]packets.Subscription // by share group, then client id
	inline   map[int]inlineSub                          // by subscription id
}

type inlineSub struct {
	sub packets.Subscription
	h   InlineHandler
}

// matches are the subscriptions a topic matches.
type matches struct {
	subs   map[string]packets.Subscription            // by client id, merged
	shared map[string]map[string]packets.Subscription // by group (and filter), then client id
	inline map[int]inlineSub                          // by subscription id: once, whatever filters of it match
}

// splitShare returns the group and the filter of a shared subscription
// ($share/group/filter), or "" and f.
func splitShare(f string) (group, filter string) {
	rest, ok := strings.CutPrefix(f, "$share/")
	if !ok {
		return "", f
	}
	group, filter, _ = strings.Cut(rest, "/")
	return group, filter
}

// walk returns the node of filter, made if make is true (nil if absent
// otherwise), and the nodes on its path.
func (x *index) walk(filter string, make bool) (*node, []*node) {
	n := &x.root
	path := []*node{n}
	for _, l := range strings.Split(filter, "/") {
		c, ok := n.children.get(l)
		if !ok {
			if !make {
				return nil, nil
			}
			c = &node{}
			n.children.set(l, c)
		}
		n = c
		path = append(path, n)
	}
	return n, path
}

// subscribe adds or replaces client's subscription; it reports whether it
// is new.
func (x *index) subscribe(client string, sub packets.Subscription) bool {
	group, filter := splitShare(sub.Filter)
	x.mu.Lock()
	defer x.mu.Unlock()
	n, _ := x.walk(filter, true)
	if group != "" {
		if n.shared == nil {
			n.shared = map[string]map[string]packets.Subscription{}
		}
		g := n.shared[group]
		if g == nil {
			g = map[string]packets.Subscription{}
			n.shared[group] = g
		}
		_, had := g[client]
		g[client] = sub
		return !had
	}
	return n.subs.set(client, sub)
}

// unsubscribe removes client's subscription to filter (as subscribed,
// $share/ included); it reports whether there was one.
func (x *index) unsubscribe(client, f string) bool {
	group, filter := splitShare(f)
	x.mu.Lock()
	defer x.mu.Unlock()
	n, path := x.walk(filter, false)
	if n == nil {
		return false
	}
	var had bool
	if group != "" {
		if g := n.shared[group]; g != nil {
			_, had = g[client]
			delete(g, client)
			if len(g) == 0 {
				delete(n.shared, group)
			}
		}
	} else {
		had = n.subs.del(client)
	}
	prune(filter, path)
	return had
}

// inlineSubscribe adds an inline subscription.
func (x *index) inlineSubscribe(id int, sub packets.Subscription, h InlineHandler) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n, _ := x.walk(sub.Filter, true)
	if n.inline == nil {
		n.inline = map[int]inlineSub{}
	}
	n.inline[id] = inlineSub{sub: sub, h: h}
}

// inlineUnsubscribe removes an inline subscription; it reports whether
// there was one.
func (x *index) inlineUnsubscribe(id int, filter string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	n, path := x.walk(filter, false)
	if n == nil {
		return false
	}
	_, had := n.inline[id]
	delete(n.inline, id)
	prune(filter, path)
	return had
}

// prune removes the empty nodes at the end of path.
func prune(filter string, path []*node) {
	levels := strings.Split(filter, "/")
	for i := len(path) - 1; i > 0; i-- {
		n := path[i]
		if n.children.len() > 0 || n.subs.len() > 0 || len(n.shared) > 0 || len(n.inline) > 0 {
			return
		}
		path[i-1].children.del(levels[i-1])
	}
}

// match returns the subscriptions topic matches.
func (x *index) match(topic string) matches {
	var m matches
	levels := strings.Split(topic, "/")
	x.mu.RLock()
	defer x.mu.RUnlock()
	x.root.match(levels, 0, strings.HasPrefix(topic, "$"), &m)
	return m
}

func (n *node) match(levels []string, i int, dollar bool, m *matches) {
	if i == len(levels) {
		n.collect(m)
		if c, ok := n.children.get("#"); ok { // "a/#" matches "a"
			c.collect(m)
		}
		return
	}
	if c, ok := n.children.get(levels[i]); ok {
		c.match(levels, i+1, dollar, m)
	}
	if i == 0 && dollar {
		return // wildcards at the first level do not match $ topics
	}
	if c, ok := n.children.get("+"); ok {
		c.match(levels, i+1, dollar, m)
	}
	if c, ok := n.children.get("#"); ok {
		c.collect(m)
	}
}

func (n *node) collect(m *matches) {
	for id, s := range n.subs.all() {
		if m.subs == nil {
			m.subs = map[string]packets.Subscription{}
		}
		if old, ok := m.subs[id]; ok {
			s = old.Merge(s)
		}
		m.subs[id] = s
	}
	for g, members := range n.shared {
		if m.shared == nil {
			m.shared = map[string]map[string]packets.Subscription{}
		}
		// one group per filter: "$share/g/a/+" and "$share/g/+/b" are two
		for id, s := range members {
			key := g + "\x00" + s.Filter
			if m.shared[key] == nil {
				m.shared[key] = map[string]packets.Subscription{}
			}
			m.shared[key][id] = s
		}
	}
	for id, s := range n.inline {
		if m.inline == nil {
			m.inline = map[int]inlineSub{}
		}
		m.inline[id] = s
	}
}

// retained holds the last retained message of each topic.
type retained struct {
	mu   sync.RWMutex
	msgs map[string]packets.Packet
}

// set keeps pk as its topic's retained message, or with an empty payload
// drops it; it returns the change in the number held.
func (r *retained) set(pk packets.Packet) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, had := r.msgs[pk.TopicName]
	if len(pk.Payload) == 0 {
		delete(r.msgs, pk.TopicName)
		if had {
			return -1
		}
		return 0
	}
	if r.msgs == nil {
		r.msgs = map[string]packets.Packet{}
	}
	r.msgs[pk.TopicName] = pk
	if had {
		return 0
	}
	return 1
}

// matching returns the retained messages filter matches.
func (r *retained) matching(filter string) []packets.Packet {
	f := topic.Compile(filter)
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []packets.Packet
	for t, pk := range r.msgs {
		if _, ok := f.Match(t); ok {
			out = append(out, pk)
		}
	}
	return out
}
