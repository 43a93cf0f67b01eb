package shadow

import (
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
)

// Doc is one shadow. The zero value is a shadow that does not exist.
// Methods never change a Doc: they return the next one. The maps of a Doc
// are never written once it is returned, so that the next one shares those
// an update left alone (an update copies only the maps on the paths it
// writes).
type Doc struct {
	Desired, Reported         map[string]any // nil: section absent
	MetaDesired, MetaReported map[string]any // per-field {"timestamp": T}
	Version                   int64          // counts on across a delete
	Timestamp                 int64          // last change, seconds since 1970
	Exists                    bool

	// enc is the shadow as update/documents shows it (appendDocument),
	// kept by the update that made it for the next update's "previous"
	// and the stored record; nil: not written yet.
	enc []byte
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
	next := Doc{Version: d.Version, Exists: true}
	if d.Exists {
		next.Desired, next.Reported, next.MetaDesired, next.MetaReported = d.Desired, d.Reported, d.MetaDesired, d.MetaReported
	}
	leaf := leafMeta(now) // shared by every field written: never changed
	apply := func(sec Section, fields, meta *map[string]any) {
		switch {
		case !sec.Present:
		case sec.Null:
			*fields, *meta = nil, nil
		default:
			*fields, *meta = merge(*fields, *meta, sec.Fields, leaf)
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
	next.Version++
	next.Timestamp = now
	// The document is written once: its state's length is the size
	// checked, and it is update/documents' "current" and the record.
	enc := appendSections(append(make([]byte, 0, 2*len(d.enc)+256), `{"state":`...), next.Desired, next.Reported)
	if n := len(enc) - len(`{"state":`); n > MaxState {
		return d, Replies{}, &Error{Code: 413, Message: fmt.Sprintf("The document exceeds the maximum size allowed: state of %d bytes (at most %d)", n, MaxState)}
	}
	enc = appendSections(append(enc, `,"metadata":`...), next.MetaDesired, next.MetaReported)
	next.enc = append(strconv.AppendInt(append(enc, `,"version":`...), next.Version, 10), '}')

	var r Replies
	b := append(append(make([]byte, 0, 2*len(req.State)+128), `{"state":`...), req.State...)
	var metaDesired, metaReported map[string]any
	if req.Desired.Present {
		metaDesired = requestMeta(req.Desired.Fields, leaf)
	}
	if req.Reported.Present {
		metaReported = requestMeta(req.Reported.Fields, leaf)
	}
	b = appendSections(append(b, `,"metadata":`...), metaDesired, metaReported)
	b = strconv.AppendInt(append(b, `,"version":`...), next.Version, 10)
	b = strconv.AppendInt(append(b, `,"timestamp":`...), now, 10)
	r.Accepted = append(appendToken(b, req.ClientToken), '}')
	if req.Desired.Present {
		if delta := Delta(next.Desired, next.Reported); len(delta) > 0 {
			b := strconv.AppendInt(append(make([]byte, 0, 256), `{"version":`...), next.Version, 10)
			b = strconv.AppendInt(append(b, `,"timestamp":`...), now, 10)
			b = appendObject(append(b, `,"state":`...), delta)
			b = appendObject(append(b, `,"metadata":`...), pick(next.MetaDesired, delta))
			r.Delta = append(appendToken(b, req.ClientToken), '}')
		}
	}
	b = append(make([]byte, 0, 2*len(next.enc)+64), '{')
	if d.Exists {
		b = append(d.appendDocument(append(b, `"previous":`...)), ',')
	}
	b = append(append(b, `"current":`...), next.enc...)
	b = strconv.AppendInt(append(b, `,"timestamp":`...), now, 10)
	r.Documents = append(appendToken(b, req.ClientToken), '}')
	return next, r, nil
}

// appendDocument writes the shadow as update/documents carries it:
// {"state":...,"metadata":...,"version":N}.
func (d Doc) appendDocument(b []byte) []byte {
	if d.enc != nil {
		return append(b, d.enc...)
	}
	b = appendSections(append(b, `{"state":`...), d.Desired, d.Reported)
	b = appendSections(append(b, `,"metadata":`...), d.MetaDesired, d.MetaReported)
	return append(strconv.AppendInt(append(b, `,"version":`...), d.Version, 10), '}')
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

func (d Doc) stateSize() int { return len(appendSections(nil, d.Desired, d.Reported)) }

// Record is the shadow as the state store keeps it: its document (state,
// metadata, version) with its timestamp, and "deleted": true when it does
// not exist.
func (d Doc) Record() []byte {
	b := d.appendDocument(make([]byte, 0, len(d.enc)+40))
	b = strconv.AppendInt(append(b[:len(b)-1], `,"timestamp":`...), d.Timestamp, 10)
	if !d.Exists {
		b = append(b, `,"deleted":true`...)
	}
	return append(b, '}')
}

// MarshalJSON is the stored form of the shadow (Record).
func (d Doc) MarshalJSON() ([]byte, error) { return d.Record(), nil }

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

// merge returns dst with src's fields written in, and meta with leaf (a
// field's metadata, leafMeta) set for them. dst and meta are not changed:
// the maps on the paths written are copies, the others shared.
func merge(dst, meta, src, leaf map[string]any) (map[string]any, map[string]any) {
	outDst := make(map[string]any, len(dst)+len(src))
	for k, v := range dst {
		outDst[k] = v
	}
	outMeta := make(map[string]any, len(meta)+len(src))
	for k, v := range meta {
		outMeta[k] = v
	}
	for k, v := range src {
		if v == nil {
			delete(outDst, k)
			delete(outMeta, k)
			continue
		}
		if sv, ok := v.(map[string]any); ok {
			dv, isObj := dst[k].(map[string]any)
			var mv map[string]any
			if isObj {
				mv, _ = meta[k].(map[string]any)
			}
			outDst[k], outMeta[k] = merge(dv, mv, sv, leaf)
			continue
		}
		outDst[k], outMeta[k] = v, leaf
	}
	return outDst, outMeta
}

// leafMeta is a field's metadata; the timestamp is a json.Number, as
// when read back from the store.
func leafMeta(ts int64) map[string]any {
	return map[string]any{"timestamp": json.Number(strconv.FormatInt(ts, 10))}
}

// requestMeta is the metadata of the fields a request writes (deleted
// ones included), leaf at each, as update/accepted reports it; nil for a
// null section.
func requestMeta(fields, leaf map[string]any) map[string]any {
	if fields == nil {
		return nil
	}
	out := make(map[string]any, len(fields))
	for k, v := range fields {
		if sub, ok := v.(map[string]any); ok {
			out[k] = requestMeta(sub, leaf)
		} else {
			out[k] = leaf
		}
	}
	return out
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

// mustJSON marshals what this package builds: maps, strings, bools,
// json.Number from a decoder, integers; none can fail.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("shadow: marshal: %v", err))
	}
	return b
}
