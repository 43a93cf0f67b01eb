package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

func postMessages(t *testing.T, url, node string, msgs ...remote.Message) (int, remote.MessagesResponse) {
	t.Helper()
	b, _ := json.Marshal(remote.MessagesRequest{Messages: msgs})
	req, _ := http.NewRequest("POST", url+"/edge/v1/nodes/"+node+"/messages:batch", bytes.NewReader(b))
	req.Header.Set(remote.HeaderProtocol, remote.Protocol)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r remote.MessagesResponse
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r
}

// Messages are kept per node in arrival order; a repeated id (an upload
// whose answer was lost) is dropped, also once consumed; a batch larger
// than one badger transaction is stored whole; bad messages are refused.
func TestDeviceMessages(t *testing.T) { forEngines(t, testDeviceMessages) }

func testDeviceMessages(t *testing.T, e *engine) {
	s := e.open(Options{})
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	m := func(id string, size int) remote.Message {
		return remote.Message{ID: id, Topic: "devices/d1/up", Payload: bytes.Repeat([]byte("x"), size), QoS: 1}
	}
	if code, r := postMessages(t, hs.URL, "n1", m("a", 1), m("b", 1), m("a", 1)); code != 200 || r.Stored != 2 || r.Duplicates != 1 {
		t.Fatalf("first batch: %d %+v", code, r)
	}
	if code, r := postMessages(t, hs.URL, "n1", m("b", 1), m("c", 1)); code != 200 || r.Stored != 1 || r.Duplicates != 1 {
		t.Fatalf("repeat: %d %+v", code, r)
	}
	if code, r := postMessages(t, hs.URL, "n2", m("a", 1)); code != 200 || r.Stored != 1 {
		t.Fatalf("another node, same id: %d %+v", code, r)
	}
	var big []remote.Message
	for i := range 40 {
		big = append(big, m(fmt.Sprintf("big-%d", i), 100<<10)) // 4 MB: several transactions
	}
	if code, r := postMessages(t, hs.URL, "n1", big...); code != 200 || r.Stored != 40 {
		t.Fatalf("big batch: %d %+v", code, r)
	}
	got, err := s.Messages("n1", 0, 100)
	if err != nil || len(got) != 43 || got[0].ID != "a" || got[0].Seq != 1 || got[2].ID != "c" || got[42].Seq != 43 {
		t.Fatalf("list: %v, %d messages", err, len(got))
	}
	if after, _ := s.Messages("n1", 41, 100); len(after) != 2 || after[0].Seq != 42 {
		t.Errorf("after 41: %+v", after)
	}
	if all, _ := s.Messages("", 0, 1000); len(all) != 44 || all[43].Node != "n2" {
		t.Errorf("every node: %d", len(all))
	}
	if n, err := s.Consume("n1", 3); err != nil || n != 3 {
		t.Fatalf("consume: %d %v", n, err)
	}
	if code, r := postMessages(t, hs.URL, "n1", m("a", 1)); code != 200 || r.Duplicates != 1 {
		t.Errorf("a consumed id came back: %d %+v", code, r)
	}
	if got, _ := s.Messages("n1", 0, 100); len(got) != 40 || got[0].Seq != 4 {
		t.Errorf("after consume: %d, first %+v", len(got), got[0].Seq)
	}
	for _, bad := range []remote.Message{{ID: "", Topic: "t"}, {ID: "x", Topic: ""}, {ID: strings.Repeat("i", 65), Topic: "t"}} {
		if code, _ := postMessages(t, hs.URL, "n1", bad); code != 400 {
			t.Errorf("%+v: %d", bad, code)
		}
	}
	// Stored means durable: the messages are there after a reopen, and
	// numbering goes on.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := e.open(Options{})
	defer s2.Close()
	if got, _ := s2.Messages("n1", 0, 100); len(got) != 40 {
		t.Errorf("after reopen: %d", len(got))
	}
	if r, err := s2.StoreMessages("n1", []remote.Message{m("d", 0), m("big-0", 1)}); err != nil || r.Stored != 1 || r.Duplicates != 1 {
		t.Fatalf("after reopen: %+v %v", r, err)
	}
	if got, _ := s2.Messages("n1", 43, 10); len(got) != 1 || got[0].Seq != 44 || got[0].ID != "d" || got[0].Payload == nil {
		t.Errorf("after reopen, next seq: %+v", got)
	}
}
