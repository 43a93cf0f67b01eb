package shadow

import (
	"encoding/json"
	"testing"
)

// FuzzParseRequest feeds update payloads (seeds in
// testdata/fuzz/FuzzParseRequest) through the parser and, when accepted,
// through an update of an existing shadow: nothing panics, a refusal
// leaves the shadow as it was, an accepted update bumps the version once,
// stays within MaxState, writes valid JSON replies (its maps written as
// json.Marshal writes them), and survives the
// stored form's round trip.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"state":{"desired":{"color":"red"}},"clientToken":"t"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		req, perr := ParseRequest(OpUpdate, payload)
		if perr != nil {
			if perr.Code != 400 && perr.Code != 413 {
				t.Fatalf("parse error code %d", perr.Code)
			}
			return
		}
		var base Doc
		base, _, err := base.Update(mustParse(t, OpUpdate, `{"state":{"desired":{"a":{"b":1},"c":[1]},"reported":{"a":{"b":2}}}}`), 1)
		if err != nil {
			t.Fatal(err)
		}
		next, r, err := base.Update(req, 2)
		if err != nil {
			if err.Code != 409 && err.Code != 413 {
				t.Fatalf("update error %v", err)
			}
			if base.Version != 1 || len(base.Desired) != 2 {
				t.Fatalf("a refused update changed the shadow: %+v", base)
			}
			return
		}
		if next.Version != 2 || next.stateSize() > MaxState {
			t.Fatalf("version %d, state %d bytes", next.Version, next.stateSize())
		}
		for _, sec := range []map[string]any{req.Desired.Fields, req.Reported.Fields, next.MetaDesired, next.MetaReported} {
			if want := mustJSON(sec); string(appendObject(nil, sec)) != string(want) {
				t.Fatalf("encoded %s, json.Marshal %s", appendObject(nil, sec), want)
			}
		}
		for _, b := range [][]byte{r.Accepted, r.Delta, r.Documents} {
			if b != nil && !json.Valid(b) {
				t.Fatalf("reply not JSON: %s", b)
			}
		}
		stored, merr := json.Marshal(next)
		if merr != nil {
			t.Fatal(merr)
		}
		var back Doc
		if err := json.Unmarshal(stored, &back); err != nil {
			t.Fatalf("stored form unreadable: %v: %s", err, stored)
		}
		if !Equal(asAny(back.Desired), asAny(next.Desired)) || !Equal(asAny(back.Reported), asAny(next.Reported)) || back.Version != next.Version {
			t.Fatalf("round trip changed the shadow:\n%+v\n%+v", back, next)
		}
	})
}

// asAny keeps a nil map a nil interface, as Equal compares them.
func asAny(m map[string]any) any {
	if m == nil {
		return nil
	}
	return m
}
