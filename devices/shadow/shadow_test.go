package shadow

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// sameJSON fails unless got and want are the same JSON value, field by
// field.
func sameJSON(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v: %s", what, err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad expectation: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", what, got, want)
	}
}

func mustParse(t *testing.T, op Op, payload string) Request {
	t.Helper()
	req, err := ParseRequest(op, []byte(payload))
	if err != nil {
		t.Fatalf("parse %s %s: %v", op, payload, err)
	}
	return req
}

// The request and reply sequence of the AWS IoT device shadow
// documentation (device shadow service documents, "Shadow document
// examples"): desired set by an app, the delta the device gets, the device
// reporting, get, a version conflict, a field deleted, delete and the
// version going on after it.
func TestAWSSequence(t *testing.T) {
	ref := Ref{Thing: "lamp"}
	var d Doc
	d, r, err := d.Update(mustParse(t, OpUpdate, `{"state":{"desired":{"color":"red","power":{"on":true}}},"clientToken":"app-1"}`), 100)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "update/accepted 1", r.Accepted, `{"state":{"desired":{"color":"red","power":{"on":true}}},
		"metadata":{"desired":{"color":{"timestamp":100},"power":{"on":{"timestamp":100}}}},"version":1,"timestamp":100,"clientToken":"app-1"}`)
	sameJSON(t, "update/delta 1", r.Delta, `{"version":1,"timestamp":100,"state":{"color":"red","power":{"on":true}},
		"metadata":{"color":{"timestamp":100},"power":{"on":{"timestamp":100}}},"clientToken":"app-1"}`)
	sameJSON(t, "update/documents 1", r.Documents, `{"current":{"state":{"desired":{"color":"red","power":{"on":true}}},
		"metadata":{"desired":{"color":{"timestamp":100},"power":{"on":{"timestamp":100}}}},"version":1},"timestamp":100,"clientToken":"app-1"}`)

	d, r, err = d.Update(mustParse(t, OpUpdate, `{"state":{"reported":{"color":"red","power":{"on":false}}}}`), 101)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "update/accepted 2", r.Accepted, `{"state":{"reported":{"color":"red","power":{"on":false}}},
		"metadata":{"reported":{"color":{"timestamp":101},"power":{"on":{"timestamp":101}}}},"version":2,"timestamp":101}`)
	if r.Delta != nil {
		t.Errorf("an update of reported only published a delta: %s", r.Delta)
	}
	sameJSON(t, "update/documents 2", r.Documents, `{
		"previous":{"state":{"desired":{"color":"red","power":{"on":true}}},"metadata":{"desired":{"color":{"timestamp":100},"power":{"on":{"timestamp":100}}}},"version":1},
		"current":{"state":{"desired":{"color":"red","power":{"on":true}},"reported":{"color":"red","power":{"on":false}}},
			"metadata":{"desired":{"color":{"timestamp":100},"power":{"on":{"timestamp":100}}},"reported":{"color":{"timestamp":101},"power":{"on":{"timestamp":101}}}},"version":2},
		"timestamp":101}`)

	got, err := d.Get(ref, "dev-7", 102)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "get/accepted", got, `{"state":{"desired":{"color":"red","power":{"on":true}},"reported":{"color":"red","power":{"on":false}},"delta":{"power":{"on":true}}},
		"metadata":{"desired":{"color":{"timestamp":100},"power":{"on":{"timestamp":100}}},"reported":{"color":{"timestamp":101},"power":{"on":{"timestamp":101}}}},
		"version":2,"timestamp":102,"clientToken":"dev-7"}`)

	if _, _, err := d.Update(mustParse(t, OpUpdate, `{"state":{"desired":{"color":"green"}},"version":1}`), 103); err == nil || err.Code != 409 || err.Message != "Version conflict" {
		t.Errorf("update naming version 1 of 2: %v", err)
	}
	sameJSON(t, "rejected", Rejected(&Error{Code: 409, Message: "Version conflict"}, "c", 103), `{"code":409,"message":"Version conflict","timestamp":103,"clientToken":"c"}`)

	d, r, err = d.Update(mustParse(t, OpUpdate, `{"state":{"desired":{"color":null,"power":{"on":false}}},"version":2}`), 104)
	if err != nil {
		t.Fatal(err)
	}
	if r.Delta != nil {
		t.Errorf("desired now equals reported, yet a delta: %s", r.Delta)
	}
	sameJSON(t, "update/accepted 3", r.Accepted, `{"state":{"desired":{"color":null,"power":{"on":false}}},
		"metadata":{"desired":{"color":{"timestamp":104},"power":{"on":{"timestamp":104}}}},"version":3,"timestamp":104}`)
	if _, ok := d.Desired["color"]; ok || d.MetaDesired["color"] != nil {
		t.Errorf("a null field was kept: %v %v", d.Desired, d.MetaDesired)
	}

	d, acc, err := d.Delete(ref, mustParse(t, OpDelete, `{"clientToken":"x"}`), 105)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "delete/accepted", acc, `{"version":3,"timestamp":105,"clientToken":"x"}`)
	if _, err := d.Get(ref, "", 106); err == nil || err.Code != 404 || err.Message != "No shadow exists with name: 'lamp'" {
		t.Errorf("get after delete: %v", err)
	}
	if _, _, err := d.Delete(ref, Request{}, 106); err == nil || err.Code != 404 {
		t.Errorf("second delete: %v", err)
	}
	d, r, err = d.Update(mustParse(t, OpUpdate, `{"state":{"reported":{"color":"blue"}}}`), 107)
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 4 || strings.Contains(string(r.Documents), "previous") {
		t.Errorf("after delete: version %d (want 4), documents %s", d.Version, r.Documents)
	}
}

func TestDesiredSectionNull(t *testing.T) {
	var d Doc
	d, _, _ = d.Update(mustParse(t, OpUpdate, `{"state":{"desired":{"a":1},"reported":{"a":2}}}`), 1)
	d, _, err := d.Update(mustParse(t, OpUpdate, `{"state":{"desired":null}}`), 2)
	if err != nil || d.Desired != nil || d.MetaDesired != nil || len(Delta(d.Desired, d.Reported)) != 0 {
		t.Fatalf("desired null: %v %+v", err, d)
	}
}

func TestNumbersByValue(t *testing.T) {
	var d Doc
	d, _, _ = d.Update(mustParse(t, OpUpdate, `{"state":{"desired":{"t":21.0,"big":12345678901234567890123}}}`), 1)
	_, r, _ := d.Update(mustParse(t, OpUpdate, `{"state":{"desired":{"x":1},"reported":{"t":21,"big":12345678901234567890123,"x":1}}}`), 2)
	if r.Delta != nil {
		t.Errorf("21.0 and 21 differ: %s", r.Delta)
	}
	if !strings.Contains(string(r.Documents), "12345678901234567890123") {
		t.Errorf("a large integer lost digits: %s", r.Documents)
	}
}

func TestStoredRoundTrip(t *testing.T) {
	var d Doc
	d, _, _ = d.Update(mustParse(t, OpUpdate, `{"state":{"desired":{"a":{"b":[1,2]},"n":1.50},"reported":{"a":{"b":[1]}}}}`), 9)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Doc
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	want := d
	want.enc = nil // the encoding an update keeps, not read back
	if !reflect.DeepEqual(back, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, want)
	}
	if string(back.Record()) != string(d.Record()) {
		t.Errorf("record read back and written again:\n got %s\nwant %s", back.Record(), d.Record())
	}
	d, _, _ = d.Delete(Ref{Thing: "x"}, Request{}, 10)
	b, _ = json.Marshal(d)
	if err := json.Unmarshal(b, &back); err != nil || back.Exists || back.Version != 1 {
		t.Errorf("deleted round trip: %v %+v", err, back)
	}
}

func TestParseErrors(t *testing.T) {
	deep := `{"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}}}`
	tooDeep := `{"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}}}`
	tests := []struct {
		name, payload string
		op            Op
		code          int
		msg           string
	}{
		{"not json", `{"state":`, OpUpdate, 400, "Invalid JSON"},
		{"array", `[1]`, OpUpdate, 400, "Invalid JSON"},
		{"trailing data", `{"state":{"desired":{}}} {}`, OpUpdate, 400, "Invalid JSON"},
		{"no state", `{"clientToken":"c"}`, OpUpdate, 400, "Missing required node: state"},
		{"null state", `{"state":null}`, OpUpdate, 400, "Missing required node: state"},
		{"empty update", ``, OpUpdate, 400, "Invalid JSON"},
		{"state not object", `{"state":1}`, OpUpdate, 400, "State node must be an object"},
		{"desired not object", `{"state":{"desired":[1]}}`, OpUpdate, 400, "Desired node must be an object"},
		{"reported not object", `{"state":{"reported":"x"}}`, OpUpdate, 400, "Reported node must be an object"},
		{"unknown node", `{"state":{"delta":{}}}`, OpUpdate, 400, "State contains an invalid node: 'delta'"},
		{"empty state", `{"state":{}}`, OpUpdate, 400, "State node must have desired or reported"},
		{"bad version", `{"state":{"desired":{}},"version":"3"}`, OpUpdate, 400, "Invalid version: a positive integer"},
		{"zero version", `{"state":{"desired":{}},"version":0}`, OpUpdate, 400, "Invalid version: a positive integer"},
		{"long token", `{"clientToken":"` + strings.Repeat("t", 65) + `"}`, OpGet, 400, "Invalid clientToken: a string of 1 to 64 bytes"},
		{"token not string", `{"clientToken":5}`, OpDelete, 400, "Invalid clientToken: a string of 1 to 64 bytes"},
		{"too deep", tooDeep, OpUpdate, 400, "JSON contains too many levels of nesting; maximum is 6"},
		{"too large", `{"state":{"desired":{"a":"` + strings.Repeat("x", MaxRequest) + `"}}}`, OpUpdate, 413, "The payload exceeds the maximum size allowed"},
		{"not utf-8", "{\"state\":{\"desired\":{\"a\":\"\xff\"}}}", OpUpdate, 400, "Invalid JSON"},
		{"deepest allowed", deep, OpUpdate, 0, ""},
		{"empty get", ``, OpGet, 0, ""},
		{"get with token", `{"clientToken":"abc"}`, OpGet, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRequest(tt.op, []byte(tt.payload))
			switch {
			case tt.code == 0 && err != nil:
				t.Errorf("refused: %v", err)
			case tt.code != 0 && (err == nil || err.Code != tt.code || err.Message != tt.msg):
				t.Errorf("got %v, want %d %q", err, tt.code, tt.msg)
			}
		})
	}
}

func TestStateLimit(t *testing.T) {
	var d Doc
	half := strings.Repeat("x", MaxState/2)
	d, _, err := d.Update(mustParse(t, OpUpdate, `{"state":{"desired":{"a":"`+half+`"}}}`), 1)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = d.Update(mustParse(t, OpUpdate, `{"state":{"reported":{"a":"`+half+`"}}}`), 2)
	if err == nil || err.Code != 413 || !strings.HasPrefix(err.Message, "The document exceeds the maximum size allowed") {
		t.Fatalf("state over %d bytes: %v", MaxState, err)
	}
	if d.Version != 1 || d.Reported != nil {
		t.Errorf("a refused update changed the shadow: %+v", d)
	}
}

func TestTopics(t *testing.T) {
	tests := []struct {
		topic string
		ref   Ref
		op    Op
		ok    bool
	}{
		{"$aws/things/d1/shadow/update", Ref{Thing: "d1"}, OpUpdate, true},
		{"$aws/things/d1/shadow/get", Ref{Thing: "d1"}, OpGet, true},
		{"$aws/things/d1/shadow/name/cfg:v2/delete", Ref{Thing: "d1", Name: "cfg:v2"}, OpDelete, true},
		{"$aws/things/d1/shadow/update/accepted", Ref{}, "", false},
		{"$aws/things/d1/shadow/name/cfg/update/delta", Ref{}, "", false},
		{"$aws/things/d1/shadow/list", Ref{}, "", false},
		{"$aws/things//shadow/get", Ref{}, "", false},
		{"$aws/things/d1/shadow/name/a.b/get", Ref{}, "", false},
		{"devices/d1/shadow/get", Ref{}, "", false},
	}
	for _, tt := range tests {
		ref, op, ok := ParseTopic(tt.topic)
		if ok != tt.ok || ref != tt.ref || op != tt.op {
			t.Errorf("%s: %v %v %v", tt.topic, ref, op, ok)
		}
		if ok && ref.Topic(op, "") != tt.topic {
			t.Errorf("%s: topic back is %s", tt.topic, ref.Topic(op, ""))
		}
	}
	if got := (Ref{Thing: "d1", Name: "n"}).Topic(OpUpdate, "delta"); got != "$aws/things/d1/shadow/name/n/update/delta" {
		t.Errorf("delta topic %s", got)
	}
}
