package gnmiserver

import (
	"encoding/json"
	"math"
	"strconv"

	"github.com/openconfig/gnmi/ctree"
	"github.com/openconfig/gnmi/path"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/telemetry/model"
)

// What Get and Subscribe accept, and how answers are shaped (gNMI
// specification 0.10 and its depth and history extensions):
//
//   - encoding: JSON (the default, which the specification requires every
//     target to support), JSON_IETF and PROTO; BYTES and ASCII are refused
//     with Unimplemented. Every served value is a leaf, so JSON sends the
//     bare JSON value in json_val, JSON_IETF the RFC 7951 form in
//     json_ietf_val (64-bit integers as JSON strings, bytes as base64),
//     and PROTO the typed scalar (int_val, uint_val, double_val, bool_val,
//     string_val, bytes_val; a JSON document, such as an SNMP trap event,
//     stays json_ietf_val as it has no protobuf schema).
//   - use_models: the server knows no schema models (Capabilities lists
//     none), so a request naming any is refused with Unimplemented.
//   - extensions: depth (Get and Subscribe) is served; history (Subscribe
//     only, see history.go) is served when the server has the store; any
//     other extension is refused with Unimplemented.
//   - prefix target: reflected as the specification requires. A named
//     target selects it; "*" selects every target and each answer carries
//     its own target; no target selects every target and answers carry
//     none (so with several targets, ask for "*" to tell them apart).
//   - paths: origin is ignored, one tree per target (set in both the
//     prefix and a path: InvalidArgument); list elements without keys
//     match every entry (keys.go).
//   - the cache's own /meta leaves (connected, sync) are never served.

// supportedEncodings are the encodings Capabilities lists and requests may use.
var supportedEncodings = []gpb.Encoding{gpb.Encoding_JSON, gpb.Encoding_JSON_IETF, gpb.Encoding_PROTO}

// options are what Get and Subscribe requests have in common.
type options struct {
	view
	depth   uint32
	history *gnmi_ext.History
}

// parseOptions checks a request's encoding, models and extensions.
// History is accepted only where subscribe is true.
func parseOptions(target string, enc gpb.Encoding, models []*gpb.ModelData, exts []*gnmi_ext.Extension, subscribe bool) (options, error) {
	o := options{view: view{enc: enc, target: target}}
	switch enc {
	case gpb.Encoding_JSON, gpb.Encoding_JSON_IETF, gpb.Encoding_PROTO:
	default:
		return o, status.Errorf(codes.Unimplemented, "encoding %v is not supported (supported: JSON, JSON_IETF, PROTO)", enc)
	}
	if len(models) > 0 {
		return o, status.Errorf(codes.Unimplemented, "use_models is not supported: the server has no schema models and serves the collected paths as they are (asked for %q)", models[0].GetName())
	}
	for _, e := range exts {
		switch x := e.GetExt().(type) {
		case *gnmi_ext.Extension_Depth:
			o.depth = x.Depth.GetLevel()
		case *gnmi_ext.Extension_History:
			if !subscribe {
				return o, status.Error(codes.InvalidArgument, "the history extension applies to Subscribe only")
			}
			o.history = x.History
		default:
			return o, status.Errorf(codes.Unimplemented, "extension %T is not supported (supported: depth, history)", e.GetExt())
		}
	}
	return o, nil
}

// view shapes what is sent: the requested encoding, and the prefix target
// as the request gave it.
type view struct {
	enc    gpb.Encoding
	target string
}

// out returns n as the client asked for it. Cached notifications are
// shared and never changed: a copy is made when something differs.
func (v view) out(n *gpb.Notification) *gpb.Notification {
	if v.target != "" && v.enc == gpb.Encoding_PROTO {
		return n
	}
	c := &gpb.Notification{Timestamp: n.GetTimestamp(), Prefix: n.GetPrefix(), Delete: n.GetDelete(), Atomic: n.GetAtomic()}
	if v.target == "" {
		c.Prefix = nil // cached notifications' prefix holds only the target
	}
	if len(n.GetUpdate()) > 0 {
		c.Update = make([]*gpb.Update, len(n.GetUpdate()))
		for i, u := range n.GetUpdate() {
			c.Update[i] = &gpb.Update{Path: u.GetPath(), Val: encodeValue(u.GetVal(), v.enc), Duplicates: u.GetDuplicates()}
		}
	}
	return c
}

// encodeValue returns a leaf's value in enc (JSON, JSON_IETF or PROTO).
func encodeValue(tv *gpb.TypedValue, enc gpb.Encoding) *gpb.TypedValue {
	switch enc {
	case gpb.Encoding_JSON:
		return &gpb.TypedValue{Value: &gpb.TypedValue_JsonVal{JsonVal: leafJSON(tv, false)}}
	case gpb.Encoding_JSON_IETF:
		return &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: leafJSON(tv, true)}}
	}
	return tv
}

// leafJSON is the JSON text of a leaf value as the server stores it (see
// gnmi.TypedValue). With ietf, 64-bit integers are JSON strings (RFC 7951
// section 6.1). A float that JSON cannot hold (NaN, ±Inf) is a string.
func leafJSON(tv *gpb.TypedValue, ietf bool) []byte {
	quote := func(s string) []byte {
		if ietf {
			return strconv.AppendQuote(nil, s)
		}
		return []byte(s)
	}
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_IntVal:
		return quote(strconv.FormatInt(v.IntVal, 10))
	case *gpb.TypedValue_UintVal:
		return quote(strconv.FormatUint(v.UintVal, 10))
	case *gpb.TypedValue_DoubleVal:
		if math.IsNaN(v.DoubleVal) || math.IsInf(v.DoubleVal, 0) {
			return strconv.AppendQuote(nil, strconv.FormatFloat(v.DoubleVal, 'g', -1, 64))
		}
		return strconv.AppendFloat(nil, v.DoubleVal, 'g', -1, 64)
	case *gpb.TypedValue_BoolVal:
		return strconv.AppendBool(nil, v.BoolVal)
	case *gpb.TypedValue_JsonIetfVal:
		return v.JsonIetfVal
	case *gpb.TypedValue_JsonVal:
		return v.JsonVal
	}
	var x any
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_StringVal:
		x = v.StringVal
	case *gpb.TypedValue_BytesVal:
		x = v.BytesVal // base64, RFC 7951 section 6.6
	}
	b, _ := json.Marshal(x) // a string or []byte: never fails
	return b
}

// selection is one requested path resolved for the cache.
type selection struct {
	path     model.Path // prefix and path elements joined, list keys filled in
	query    []string   // the cache query (no target)
	maxElems int        // depth: leaves with more path elements are left out; 0: no limit
}

// selectPath resolves prefix+p (prefix without elements, as withKeys
// returns it, or a full prefix) with the depth extension's level.
func (s *Server) selectPath(prefix, p *gpb.Path, depth uint32) (selection, error) {
	if prefix.GetOrigin() != "" && p.GetOrigin() != "" {
		return selection{}, status.Error(codes.InvalidArgument, "bad path: origin is set both in prefix and path")
	}
	np, full := s.withKeys(prefix, p)
	// One tree per target: the origin selects nothing (the cache query
	// would take it for a first element).
	if np.GetOrigin() != "" {
		np = proto.Clone(np).(*gpb.Path)
		np.Origin = ""
	}
	if full.GetOrigin() != "" {
		full = proto.Clone(full).(*gpb.Path)
		full.Origin = ""
	}
	q, err := path.CompletePath(np, full)
	if err != nil {
		return selection{}, status.Errorf(codes.InvalidArgument, "bad path: %v", err)
	}
	sel := selection{path: model.FromGNMI(np, full), query: q} // also old-style string elements
	if depth > 0 {
		for _, e := range sel.path {
			if e.Name == "..." {
				return selection{}, status.Error(codes.InvalidArgument, "the depth extension cannot be used with a path containing \"...\"")
			}
		}
		sel.maxElems = len(sel.path) + int(depth)
	}
	return sel, nil
}

// keep reports whether a cached notification is served for sel: data
// only (no /meta leaves), within the depth.
func (sel selection) keep(n *gpb.Notification) bool {
	if isMeta(n) {
		return false
	}
	if sel.maxElems == 0 {
		return true
	}
	var p *gpb.Path
	if u := n.GetUpdate(); len(u) > 0 {
		p = u[0].GetPath()
	} else if d := n.GetDelete(); len(d) > 0 {
		p = d[0]
	}
	return len(p.GetElem()) <= sel.maxElems || len(p.GetElem()) == 1 && p.GetElem()[0].GetName() == "*"
}

type leafNote struct {
	l *ctree.Leaf
	n *gpb.Notification
}

// leaves returns the data leaves of target ("*": every target) that sel
// selects, collected first so no cache lock is held while sending. A
// target not in the cache (expired, or never seen) has none.
func (s *Server) leaves(target string, sel selection) ([]leafNote, error) {
	if target != "*" && !s.cache.HasTarget(target) {
		return nil, nil
	}
	var out []leafNote
	err := s.cache.Query(target, sel.query, func(_ []string, l *ctree.Leaf, v any) error {
		if n, ok := v.(*gpb.Notification); ok && sel.keep(n) {
			out = append(out, leafNote{l, n})
		}
		return nil
	})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "query: %v", err)
	}
	return out, nil
}

func isMeta(n *gpb.Notification) bool {
	for _, u := range n.GetUpdate() {
		if e := u.GetPath().GetElem(); len(e) > 0 && e[0].GetName() == "meta" {
			return true
		}
	}
	return false
}
