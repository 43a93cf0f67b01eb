package calls

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A record's JSON (GET /v1/calls/{id}, `outpost calls show -o json`) uses
// the wire names of a result and a source, and a record journaled before
// they had names of their own still decodes.
func TestRecordJSONNames(t *testing.T) {
	r := Record{ID: "c1", Task: "echo", Source: Source{Kind: "admin"}, Result: &Result{Status: StatusOK, Output: []byte("ABC")}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"result":{"status":"ok","output":"QUJD"}`, `"source":{"kind":"admin"}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("record JSON lacks %s: %s", want, b)
		}
	}
	old := `{"id":"c0","task":"echo","source":{"Kind":"mqtt","Ref":"devices/d1/in"},"state":"finished","result":{"Status":"failed","Output":null,"Error":"boom"}}`
	var got Record
	if err := json.Unmarshal([]byte(old), &got); err != nil {
		t.Fatal(err)
	}
	if got.Source.Kind != "mqtt" || got.Source.Ref != "devices/d1/in" || got.Result == nil || got.Result.Status != "failed" || got.Result.Error != "boom" {
		t.Errorf("old record decoded as %+v %+v", got.Source, got.Result)
	}
}

// A call's labels are in its record and rebuilt with it (recovery); a
// record without them, as journaled before calls had labels, has none.
func TestRecordLabels(t *testing.T) {
	j := &Journal{opts: JournalOptions{Wall: time.Now}}
	c := New("echo", nil, Source{Kind: "admin"})
	c.Labels = map[string]string{"tier": "batch"}
	b, err := json.Marshal(j.newRecord(c))
	if err != nil || !strings.Contains(string(b), `"labels":{"tier":"batch"}`) {
		t.Fatalf("record %s %v", b, err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil || r.call(0).Labels["tier"] != "batch" {
		t.Fatalf("decoded %+v %v", r, err)
	}
	var old Record
	if err := json.Unmarshal([]byte(`{"id":"c0","task":"echo","source":{"kind":"admin"},"state":"received"}`), &old); err != nil || old.Labels != nil || old.call(0).Labels != nil {
		t.Fatalf("old record %+v %v", old, err)
	}
	if b, _ := json.Marshal(Record{ID: "c1"}); strings.Contains(string(b), "labels") {
		t.Errorf("a call without labels writes them: %s", b)
	}
}
