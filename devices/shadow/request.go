package shadow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"unicode/utf8"
)

// Limits of requests and documents, those of AWS IoT device shadows.
const (
	// MaxRequest bounds a request's payload: 413 past it.
	MaxRequest = 128 << 10
	// MaxState bounds a shadow's state, the desired and reported sections
	// as JSON, metadata left out: an update that would make it larger is
	// refused with 413.
	MaxState = 8 << 10
	// MaxDepth bounds the nesting of objects in a desired or reported
	// section (the section's own object is level 1): 400 past it.
	MaxDepth = 6
	// MaxClientToken bounds a clientToken, in bytes.
	MaxClientToken = 64
)

// Error is a rejected request: an AWS shadow error code (400 bad request,
// 404 no such shadow, 409 version conflict, 413 too large, 500) and its
// message, sent on .../rejected.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("shadow request rejected: %d %s", e.Code, e.Message)
}

func badRequest(format string, a ...any) *Error {
	return &Error{Code: 400, Message: fmt.Sprintf(format, a...)}
}

// errTooLarge is the error of a payload over MaxRequest.
var errTooLarge = &Error{Code: 413, Message: "The payload exceeds the maximum size allowed"}

// Section is the desired or reported part of an update: absent, null (the
// whole section is deleted) or an object of fields (a null field is
// deleted).
type Section struct {
	Present bool
	Null    bool
	Fields  map[string]any
}

// Request is a parsed get, update or delete request.
type Request struct {
	Desired, Reported Section // updates only
	// State is the request's state, echoed in update/accepted: compact
	// JSON, its keys sorted.
	State       json.RawMessage
	ClientToken string
	Version     int64 // 0: any version
}

// ParseRequest reads the payload of op's request. A get or delete may be
// empty; an update needs a state with desired, reported or both. Numbers
// are kept as written (json.Number). The checks and messages are those of
// AWS IoT (400 with "Missing required node: state" and the like; 413 over
// MaxRequest). The payload is decoded once; the state echoed is written
// again from what was decoded.
func ParseRequest(op Op, payload []byte) (Request, *Error) {
	var req Request
	if len(payload) > MaxRequest {
		return req, errTooLarge
	}
	if len(bytes.TrimSpace(payload)) == 0 && op != OpUpdate {
		return req, nil
	}
	if !utf8.Valid(payload) {
		return req, &Error{Code: 400, Message: "Invalid JSON"}
	}
	top, err := decodeObject(payload)
	if err != nil {
		return req, &Error{Code: 400, Message: "Invalid JSON"}
	}
	if v, ok := top["clientToken"]; ok {
		token, isString := v.(string)
		if !isString || token == "" || len(token) > MaxClientToken {
			return Request{}, badRequest("Invalid clientToken: a string of 1 to %d bytes", MaxClientToken)
		}
		req.ClientToken = token
	}
	if v, ok := top["version"]; ok {
		n, isNumber := v.(json.Number)
		version, err := n.Int64()
		if !isNumber || err != nil || version < 1 {
			return req, badRequest("Invalid version: a positive integer")
		}
		req.Version = version
	}
	if op != OpUpdate {
		return req, nil
	}
	v, ok := top["state"]
	if !ok || v == nil {
		return req, badRequest("Missing required node: state")
	}
	state, isObject := v.(map[string]any)
	if !isObject {
		return req, badRequest("State node must be an object")
	}
	for k, v := range state {
		switch k {
		case "desired":
			req.Desired, err = section(v, "Desired")
		case "reported":
			req.Reported, err = section(v, "Reported")
		default:
			return req, badRequest("State contains an invalid node: '%s'", k)
		}
		if err != nil {
			return req, err.(*Error)
		}
	}
	if !req.Desired.Present && !req.Reported.Present {
		return req, badRequest("State node must have desired or reported")
	}
	req.State = appendObject(nil, state)
	return req, nil
}

func section(v any, what string) (Section, error) {
	if v == nil {
		return Section{Present: true, Null: true}, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return Section{}, badRequest("%s node must be an object", what)
	}
	if depth(m) > MaxDepth {
		return Section{}, badRequest("JSON contains too many levels of nesting; maximum is %d", MaxDepth)
	}
	return Section{Present: true, Fields: m}, nil
}

// depth is the nesting of objects in v (an object is 1 plus its deepest
// field; arrays are values, their elements counted too).
func depth(v any) int {
	switch x := v.(type) {
	case map[string]any:
		d := 0
		for _, f := range x {
			d = max(d, depth(f))
		}
		return d + 1
	case []any:
		d := 0
		for _, f := range x {
			d = max(d, depth(f))
		}
		return d
	}
	return 0
}

// decodeObject decodes a JSON object, and nothing after it, with numbers
// kept as json.Number.
func decodeObject(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("not an object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the object")
	}
	return m, nil
}
