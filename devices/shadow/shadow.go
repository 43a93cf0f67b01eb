package shadow

import (
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
)

// Doc is one shadow. The zero value is a shadow that does not exist.
// Methods never change a Doc: they return the next one.
type Doc struct {
	Desired, Reported         map[string]any // nil: section absent
	MetaDesired, MetaReported map[string]any // per-field {"timestamp": T}
	Version                   int64          // counts on across a delete
	Timestamp                 int64          // last change, seconds since 1970
	Exists                    bool
}

// Replies are the messages an accepted update publishes: on
// update/accepted, update/delta (nil when desired and reported agree, or
// the update did not touch desired) and update/documents.
type Replies struct {
	Accepted, Delta, Documents []byte
}

// state is the JSON of a shadow's state or metadata.
type state struct {
	Desired  map[string]any `json:"desired,omitempty"`
	Reported map[string]any `json:"reported,omitempty"`
	Delta    map[string]any `json:"delta,omitempty"`
}

// Document is a shadow as get/accepted and the admin API show it (with
// the delta), and as update/documents carries it (without).
type Document struct {
	State       state  `json:"state"`
	Metadata    state  `json:"metadata"`
	Version     int64  `json:"version"`
	Timestamp   int64  `json:"timestamp,omitempty"`
	ClientToken string `json:"clientToken,omitempty"`
}

// Update applies req at now (seconds): the sections merged field by field
// (a null field deleted, a null section deleted whole, objects merged,
// other values replaced), metadata timestamps set on the fields written,
// the version incremented. A request naming a version other than the
// current one is refused with 409; a state that would grow past MaxState
// with 413.
func (d Doc) Update(req Request, now int64) (Doc, Replies, *Error) {
	if req.Version != 0 && req.Version != d.Version {
		return d, Replies{}, &Error{Code: 409, Message: "Version conflict"}
	}
	next := d.clone()
	if !next.Exists {
		next = Doc{Version: d.Version, Exists: true}
	}
	apply := func(sec Section, fields, meta *map[string]any) {
		switch {
		case !sec.Present:
		case sec.Null:
			*fields, *meta = nil, nil
		default:
			if *fields == nil {
				*fields, *meta = map[string]any{}, map[string]any{}
			}
			merge(*fields, *meta, sec.Fields, now)
		}
	}
	apply(req.Desired, &next.Desired, &next.MetaDesired)
	apply(req.Reported, &next.Reported, &next.MetaReported)
	// A section left without fields is no section (as stored and shown).
	if len(next.Desired) == 0 {
		next.Desired, next.MetaDesired = nil, nil
	}
	if len(next.Reported) == 0 {
		next.Reported, next.MetaReported = nil, nil
	}
	if n := next.stateSize(); n > MaxState {
		return d, Replies{}, &Error{Code: 413, Message: fmt.Sprintf("The document exceeds the maximum size allowed: state of %d bytes (at most %d)", n, MaxState)}
	}
	next.Version++
	next.Timestamp = now

	var r Replies
	accepted := struct {
		State       json.RawMessage `json:"state"`
		Metadata    state           `json:"metadata"`
		Version     int64           `json:"version"`
		Timestamp   int64           `json:"timestamp"`
		ClientToken string          `json:"clientToken,omitempty"`
	}{State: req.State, Version: next.Version, Timestamp: now, ClientToken: req.ClientToken}
	if req.Desired.Present {
		accepted.Metadata.Desired = requestMeta(req.Desired, now)
	}
	if req.Reported.Present {
		accepted.Metadata.Reported = requestMeta(req.Reported, now)
	}
	r.Accepted = mustJSON(accepted)
	if delta := Delta(next.Desired, next.Reported); req.Desired.Present && len(delta) > 0 {
		r.Delta = mustJSON(struct {
			Version     int64          `json:"version"`
			Timestamp   int64          `json:"timestamp"`
			State       map[string]any `json:"state"`
			Metadata    map[string]any `json:"metadata"`
			ClientToken string         `json:"clientToken,omitempty"`
		}{next.Version, now, delta, pick(next.MetaDesired, delta), req.ClientToken})
	}
	docs := struct {
		Previous    *Document `json:"previous,omitempty"`
		Current     Document  `json:"current"`
		Timestamp   int64     `json:"timestamp"`
		ClientToken string    `json:"clientToken,omitempty"`
	}{Current: next.document(false), Timestamp: now, ClientToken: req.ClientToken}
	if d.Exists {
		prev := d.document(false)
		docs.Previous = &prev
	}
	r.Documents = mustJSON(docs)
	return next, r, nil
}

// Get is the answer on get/accepted: state with the delta, metadata,
// version; 404 when the shadow does not exist.
func (d Doc) Get(ref Ref, clientToken string, now int64) ([]byte, *Error) {
	if !d.Exists {
		return nil, notFound(ref)
	}
	doc := d.document(true)
	doc.Timestamp, doc.ClientToken = now, clientToken
	return mustJSON(doc), nil
}

// Document is the shadow with its delta, as the admin API shows it.
func (d Doc) Document() Document { return d.document(true) }

// Delete removes the shadow; its version is kept, so that a new shadow of
// the same name goes on from it. A request naming another version is
// refused with 409; a shadow that does not exist with 404.
func (d Doc) Delete(ref Ref, req Request, now int64) (Doc, []byte, *Error) {
	if !d.Exists {
		return d, nil, notFound(ref)
	}
	if req.Version != 0 && req.Version != d.Version {
		return d, nil, &Error{Code: 409, Message: "Version conflict"}
	}
	accepted := mustJSON(struct {
		Version     int64  `json:"version"`
		Timestamp   int64  `json:"timestamp"`
		ClientToken string `json:"clientToken,omitempty"`
	}{d.Version, now, req.ClientToken})
	return Doc{Version: d.Version, Timestamp: now}, accepted, nil
}

func notFound(ref Ref) *Error {
	return &Error{Code: 404, Message: fmt.Sprintf("No shadow exists with name: '%s'", ref)}
}

// Rejected is the payload of a .../rejected reply.
func Rejected(e *Error, clientToken string, now int64) []byte {
	return mustJSON(struct {
		Code        int    `json:"code"`
		Message     string `json:"message"`
		Timestamp   int64  `json:"timestamp"`
		ClientToken string `json:"clientToken,omitempty"`
	}{e.Code, e.Message, now, clientToken})
}

func (d Doc) document(withDelta bool) Document {
	doc := Document{
		State:    state{Desired: d.Desired, Reported: d.Reported},
		Metadata: state{Desired: d.MetaDesired, Reported: d.MetaReported},
		Version:  d.Version,
	}
	if withDelta {
		doc.State.Delta = Delta(d.Desired, d.Reported)
	}
	return doc
}

func (d Doc) stateSize() int {
	return len(mustJSON(state{Desired: d.Desired, Reported: d.Reported}))
}

func (d Doc) clone() Doc {
	d.Desired, d.Reported = cloneMap(d.Desired), cloneMap(d.Reported)
	d.MetaDesired, d.MetaReported = cloneMap(d.MetaDesired), cloneMap(d.MetaReported)
	return d
}

// stored is a Doc as the state store keeps it.
type stored struct {
	State     state `json:"state"`
	Metadata  state `json:"metadata"`
	Version   int64 `json:"version"`
	Timestamp int64 `json:"timestamp"`
	Deleted   bool  `json:"deleted,omitempty"`
}

// MarshalJSON is the stored form of the shadow.
func (d Doc) MarshalJSON() ([]byte, error) {
	return json.Marshal(stored{
		State:    state{Desired: d.Desired, Reported: d.Reported},
		Metadata: state{Desired: d.MetaDesired, Reported: d.MetaReported},
		Version:  d.Version, Timestamp: d.Timestamp, Deleted: !d.Exists,
	})
}

// UnmarshalJSON reads the stored form, numbers kept as written.
func (d *Doc) UnmarshalJSON(b []byte) error {
	m, err := decodeObject(b)
	if err != nil {
		return fmt.Errorf("shadow document: %w", err)
	}
	sec := func(k, part string) map[string]any {
		v, _ := m[k].(map[string]any)
		f, _ := v[part].(map[string]any)
		return f
	}
	num := func(k string) int64 {
		n, _ := m[k].(json.Number)
		i, _ := n.Int64()
		return i
	}
	deleted, _ := m["deleted"].(bool)
	*d = Doc{
		Desired: sec("state", "desired"), Reported: sec("state", "reported"),
		MetaDesired: sec("metadata", "desired"), MetaReported: sec("metadata", "reported"),
		Version: num("version"), Timestamp: num("timestamp"), Exists: !deleted,
	}
	return nil
}

// merge writes src's fields into dst, and their timestamps into meta.
func merge(dst, meta, src map[string]any, ts int64) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			delete(meta, k)
			continue
		}
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				mv, ok := meta[k].(map[string]any)
				if !ok {
					mv = map[string]any{}
					meta[k] = mv
				}
				merge(dv, mv, sv, ts)
				continue
			}
			fresh, freshMeta := map[string]any{}, map[string]any{}
			merge(fresh, freshMeta, sv, ts)
			dst[k], meta[k] = fresh, freshMeta
			continue
		}
		dst[k], meta[k] = v, leafMeta(ts)
	}
}

// leafMeta is a field's metadata; the timestamp is a json.Number, as
// when read back from the store.
func leafMeta(ts int64) map[string]any {
	return map[string]any{"timestamp": json.Number(strconv.FormatInt(ts, 10))}
}

// requestMeta is the metadata of the fields a request writes (deleted
// ones included), as update/accepted reports it.
func requestMeta(sec Section, ts int64) map[string]any {
	if sec.Null {
		return nil
	}
	var walk func(m map[string]any) map[string]any
	walk = func(m map[string]any) map[string]any {
		out := make(map[string]any, len(m))
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				out[k] = walk(sub)
			} else {
				out[k] = leafMeta(ts)
			}
		}
		return out
	}
	return walk(sec.Fields)
}

// Delta is what desired asks that reported does not have: the desired
// fields absent from reported or different there, objects compared field
// by field, other values (arrays among them) whole.
func Delta(desired, reported map[string]any) map[string]any {
	out := map[string]any{}
	for k, dv := range desired {
		rv, ok := reported[k]
		if dm, isObj := dv.(map[string]any); isObj {
			if rm, ok := rv.(map[string]any); ok {
				if sub := Delta(dm, rm); len(sub) > 0 {
					out[k] = sub
				}
				continue
			}
		}
		if !ok || !Equal(dv, rv) {
			out[k] = dv
		}
	}
	return out
}

// pick is the part of meta that delta's fields have.
func pick(meta, delta map[string]any) map[string]any {
	out := make(map[string]any, len(delta))
	for k, v := range delta {
		m, ok := meta[k]
		if !ok {
			continue
		}
		if sub, ok := v.(map[string]any); ok {
			if mm, ok := m.(map[string]any); ok {
				out[k] = pick(mm, sub)
				continue
			}
		}
		out[k] = m
	}
	return out
}

// Equal compares two JSON values; numbers by value (1 and 1.0 are equal).
func Equal(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		fx, _, errx := big.ParseFloat(string(x), 10, 256, big.ToNearestEven)
		fy, _, erry := big.ParseFloat(string(y), 10, 256, big.ToNearestEven)
		return errx == nil && erry == nil && fx.Cmp(fy) == 0
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !Equal(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		return ok && slices.EqualFunc(x, y, Equal)
	}
	return a == b
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return cloneMap(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}

// mustJSON marshals what this package builds: maps, strings, bools,
// json.Number from a decoder, integers; none can fail.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("shadow: marshal: %v", err))
	}
	return b
}
