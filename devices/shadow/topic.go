package shadow

import (
	"regexp"
	"strings"
)

// Op is a shadow request: get, update or delete.
type Op string

// The requests a device publishes.
const (
	OpGet    Op = "get"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
)

// Ref names one shadow: the thing (a device id) and the shadow's name, ""
// for the classic (unnamed) shadow.
type Ref struct {
	Thing string `json:"thing"`
	Name  string `json:"name,omitempty"`
}

// String is thing for the classic shadow, thing~name for a named one (the
// form error messages use).
func (r Ref) String() string {
	if r.Name == "" {
		return r.Thing
	}
	return r.Thing + "~" + r.Name
}

// Prefix is the topic prefix of the shadow: $aws/things/{thing}/shadow, or
// $aws/things/{thing}/shadow/name/{name}.
func (r Ref) Prefix() string {
	p := "$aws/things/" + r.Thing + "/shadow"
	if r.Name != "" {
		p += "/name/" + r.Name
	}
	return p
}

// Topic is the topic of op's request, followed by the reply's suffix
// ("accepted", "rejected", "delta", "documents") when given.
func (r Ref) Topic(op Op, reply string) string {
	t := r.Prefix() + "/" + string(op)
	if reply != "" {
		t += "/" + reply
	}
	return t
}

// RequestFilters are the MQTT filters of every shadow request, classic and
// named, for every thing: what the service subscribes to on a broker that
// does not hand it requests directly.
func RequestFilters() []string {
	var fs []string
	for _, op := range []Op{OpGet, OpUpdate, OpDelete} {
		fs = append(fs, "$aws/things/+/shadow/"+string(op), "$aws/things/+/shadow/name/+/"+string(op))
	}
	return fs
}

// Limits of names, as AWS IoT has them: a thing name of 1 to 128 and a
// shadow name of 1 to 64 characters from [a-zA-Z0-9:_-] (a thing name
// here is a device id, which allows '.' too).
var (
	thingRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9:_-]{1,64}$`)
)

// ValidRef reports whether r names a shadow that can exist.
func ValidRef(r Ref) bool {
	return thingRE.MatchString(r.Thing) && (r.Name == "" || nameRE.MatchString(r.Name))
}

// ParseTopic reads a request topic: $aws/things/{thing}/shadow/{op} or
// $aws/things/{thing}/shadow/name/{name}/{op}. It reports false for any
// other topic (replies among them) and for invalid names.
func ParseTopic(topic string) (Ref, Op, bool) {
	rest, ok := strings.CutPrefix(topic, "$aws/things/")
	if !ok {
		return Ref{}, "", false
	}
	parts := strings.Split(rest, "/")
	var r Ref
	var op string
	switch {
	case len(parts) == 3 && parts[1] == "shadow":
		r, op = Ref{Thing: parts[0]}, parts[2]
	case len(parts) == 5 && parts[1] == "shadow" && parts[2] == "name":
		r, op = Ref{Thing: parts[0], Name: parts[3]}, parts[4]
	default:
		return Ref{}, "", false
	}
	switch Op(op) {
	case OpGet, OpUpdate, OpDelete:
	default:
		return Ref{}, "", false
	}
	if !ValidRef(r) {
		return Ref{}, "", false
	}
	return r, Op(op), true
}
