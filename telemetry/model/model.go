// Package model owns Outpost's one telemetry update model: every source
// (gNMI, SNMP polls, SNMP traps) produces Updates of the same shape (target,
// path, timestamp, typed value), and every consumer (hub, time-series store,
// gNMI server, MQTT, triggers) reads them. It also owns the path syntax:
// parsing, the canonical string form, patterns with wildcards, and the
// conversion to and from gNMI paths.
package model

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// Kind is the type of a Value.
type Kind uint8

// Value kinds. Their numbers are part of the tsdb encoding: never renumber.
const (
	KindInvalid Kind = iota
	KindInt
	KindUint
	KindFloat
	KindBool
	KindString
	KindBytes
	KindJSON    // a JSON document (gNMI json/json_ietf values, SNMP trap events)
	KindDeleted // no value: the target stopped reporting the path (see Deleted)
)

var kindNames = [...]string{"invalid", "int", "uint", "float", "bool", "string", "bytes", "json", "deleted"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is a typed value in 24 bytes plus the string's bytes: numbers live
// in num (int64, uint64, float64 bits or a bool), text and bytes in str.
type Value struct {
	Kind Kind
	num  uint64
	str  string
}

// Int returns an int value.
func Int(v int64) Value { return Value{Kind: KindInt, num: uint64(v)} }

// Uint returns a uint value.
func Uint(v uint64) Value { return Value{Kind: KindUint, num: v} }

// Float returns a float value.
func Float(v float64) Value { return Value{Kind: KindFloat, num: math.Float64bits(v)} }

// Bool returns a bool value.
func Bool(v bool) Value {
	if v {
		return Value{Kind: KindBool, num: 1}
	}
	return Value{Kind: KindBool}
}

// String returns a string value.
func String(s string) Value { return Value{Kind: KindString, str: s} }

// Bytes returns a bytes value (copied).
func Bytes(b []byte) Value { return Value{Kind: KindBytes, str: string(b)} }

// JSON returns a JSON document value (copied, not validated).
func JSON(b []byte) Value { return Value{Kind: KindJSON, str: string(b)} }

// Deleted marks a path its target no longer reports (an SNMP object that
// answers noSuchObject, a table row gone): the store keeps it as the
// series' last point and no longer lists the series as latest, the gNMI
// server deletes the path (subscribers get a delete), MQTT rules publish it
// (value null) and triggers ignore it.
func Deleted() Value { return Value{Kind: KindDeleted} }

// Raw returns the numeric bits and the text of v, for encoders.
func (v Value) Raw() (uint64, string) { return v.num, v.str }

// FromRaw rebuilds a Value from Raw's parts.
func FromRaw(k Kind, num uint64, str string) Value { return Value{Kind: k, num: num, str: str} }

// AsInt returns v as an int64 (for KindInt).
func (v Value) AsInt() int64 { return int64(v.num) }

// AsUint returns v as a uint64 (for KindUint).
func (v Value) AsUint() uint64 { return v.num }

// AsBool returns v as a bool (for KindBool).
func (v Value) AsBool() bool { return v.num != 0 }

// Text returns the string, bytes or JSON of v.
func (v Value) Text() string { return v.str }

// Number returns v as a float64 when v is numeric (int, uint, float, bool).
func (v Value) Number() (float64, bool) {
	switch v.Kind {
	case KindInt:
		return float64(int64(v.num)), true
	case KindUint:
		return float64(v.num), true
	case KindFloat:
		return math.Float64frombits(v.num), true
	case KindBool:
		return float64(v.num), true
	}
	return 0, false
}

// String formats v for people and for condition comparisons.
func (v Value) String() string {
	switch v.Kind {
	case KindInt:
		return strconv.FormatInt(int64(v.num), 10)
	case KindUint:
		return strconv.FormatUint(v.num, 10)
	case KindFloat:
		return strconv.FormatFloat(math.Float64frombits(v.num), 'g', -1, 64)
	case KindBool:
		return strconv.FormatBool(v.num != 0)
	case KindString, KindJSON:
		return v.str
	case KindBytes:
		return strconv.Quote(v.str)
	}
	return ""
}

// Equal reports whether two values are the same kind and value.
func (v Value) Equal(o Value) bool { return v == o }

// MarshalJSON writes numbers as JSON numbers (non-finite floats as strings),
// strings as strings, bytes as base64 and JSON documents as themselves.
func (v Value) MarshalJSON() ([]byte, error) {
	switch v.Kind {
	case KindInt, KindUint, KindBool:
		return []byte(v.String()), nil
	case KindFloat:
		f := math.Float64frombits(v.num)
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return json.Marshal(v.String())
		}
		return []byte(v.String()), nil
	case KindString:
		return json.Marshal(v.str)
	case KindBytes:
		return json.Marshal([]byte(v.str))
	case KindJSON:
		if json.Valid([]byte(v.str)) {
			return []byte(v.str), nil
		}
		return json.Marshal(v.str)
	}
	return []byte("null"), nil
}

// Update is one value of one path on one target at one time. Path is in
// canonical form (see Canonical); Time is Unix nanoseconds.
type Update struct {
	Target string
	Path   string
	Time   int64
	Value  Value
}

// Timestamp returns u.Time as a time.Time.
func (u Update) Timestamp() time.Time { return time.Unix(0, u.Time) }

// Point is the JSON shape of an update in the admin API.
type Point struct {
	Target string    `json:"target"`
	Path   string    `json:"path"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Value  Value     `json:"value"`
}

// Point returns the JSON shape of u.
func (u Update) Point() Point {
	return Point{Target: u.Target, Path: u.Path, Time: u.Timestamp().UTC(), Kind: u.Value.Kind.String(), Value: u.Value}
}

// TargetStatus is the state of one collected target, shown by the admin
// API and exported as metrics.
type TargetStatus struct {
	Name       string    `json:"name"`
	Source     string    `json:"source"` // gnmi, snmp
	Address    string    `json:"address"`
	Connected  bool      `json:"connected"` // gNMI: stream up; SNMP: last poll answered
	LastUpdate time.Time `json:"last_update,omitzero"`
	LastError  string    `json:"last_error,omitempty"`
	ErrorTime  time.Time `json:"last_error_time,omitzero"`
	Errors     uint64    `json:"errors"`
	Updates    uint64    `json:"updates"`
	Reconnects uint64    `json:"reconnects,omitempty"`
	// SNMP: how long the last round took (from its tick, waiting for a
	// poll slot included), rounds that took the interval or longer, and
	// objects the agent stopped returning (see the poller).
	RoundSeconds float64 `json:"round_seconds,omitempty"`
	Overruns     uint64  `json:"overruns,omitempty"`
	Missing      int     `json:"missing,omitempty"`
}
