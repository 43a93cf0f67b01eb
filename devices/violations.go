package devices

import (
	"strings"
	"sync"
	"time"
)

// Violation is one message or subscription the embedded broker refused by
// the access rules or the per-device limits: what the counters
// outpost_devices_acl_denied_total and outpost_devices_limited_total
// count, one at a time.
type Violation struct {
	Time   time.Time `json:"time"`
	Device string    `json:"device,omitempty"` // "": a client that is not a registered device
	Client string    `json:"client"`
	Topic  string    `json:"topic,omitempty"` // cut at maxViolationTopic bytes
	// Action is publish (from the client), subscribe (a subscription, or
	// a message the access rules keep from the client) or receive (a
	// message for a device at its in-flight limit).
	Action string `json:"action"`
	// Reason is acl (the access rules), or the limit: rate, size, inflight.
	Reason string `json:"reason"`
}

// Actions and the reason of a Violation (the limits' reasons are limitRate,
// limitSize, limitInflight).
const (
	actionPublish   = "publish"
	actionSubscribe = "subscribe"
	actionReceive   = "receive"
	reasonACL       = "acl"
)

// maxViolations is how many recent violations a broker keeps;
// maxViolationTopic bounds the bytes kept of each topic.
const (
	maxViolations     = 100
	maxViolationTopic = 256
)

// violations is a ring of the last maxViolations violations. The zero
// value is empty and ready.
type violations struct {
	mu   sync.Mutex // guards the fields below
	ring [maxViolations]Violation
	next int  // where the next one goes
	full bool // the ring has wrapped
}

// add records v, forgetting the oldest when the ring is full.
func (r *violations) add(v Violation) {
	if len(v.Topic) > maxViolationTopic {
		v.Topic = strings.ToValidUTF8(v.Topic[:maxViolationTopic], "") + "…"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ring[r.next] = v
	r.next = (r.next + 1) % maxViolations
	r.full = r.full || r.next == 0
}

// list returns the recorded violations, newest first.
func (r *violations) list() []Violation {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = maxViolations
	}
	out := make([]Violation, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.ring[(r.next-i+maxViolations)%maxViolations])
	}
	return out
}

// Violations returns the last refusals of the access rules and the
// per-device limits (at most 100), newest first; none before Start and
// with an external broker, which the daemon does not see refuse.
func (b *Broker) Violations() []Violation { return b.violations.list() }
