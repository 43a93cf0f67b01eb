package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

func postMessages(t testing.TB, url, node string, msgs ...remote.Message) (int, remote.MessagesResponse) {
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
	if code, r := postMessages(t, hs.URL, "n2"); code != 200 || r.Stored != 0 || r.Duplicates != 0 {
		t.Fatalf("empty batch: %d %+v", code, r)
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
	if all, _ := s.Messages("", 0, 1000); len(all) != 44 || all[43].Node != "n2" || all[43].Seq != 1 {
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

// Two replicas on one database take batches for one node at once, with
// ids repeated across batches and replicas: every id is stored once, the
// node's seqs are 1 to N without a gap or a repeat, and each sender's
// messages are numbered in the order it sent them.
func TestDeviceMessagesReplicas(t *testing.T) {
	ss, hss := replicas(t, 2, Options{})
	const senders, batches, per = 6, 15, 8
	var stored, dups atomic.Int64
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				msgs := []remote.Message{{ID: fmt.Sprintf("shared-%d", b), Topic: "t"}}
				for i := range per {
					msgs = append(msgs, remote.Message{ID: fmt.Sprintf("g%d-%03d", g, b*per+i), Topic: "t", Payload: []byte{byte(g)}})
				}
				code, r := postMessages(t, hss[(g+b)%2].URL, "n", msgs...)
				if code != http.StatusOK || r.Stored+r.Duplicates != len(msgs) {
					t.Errorf("sender %d batch %d: %d %+v", g, b, code, r)
					return
				}
				stored.Add(int64(r.Stored))
				dups.Add(int64(r.Duplicates))
			}
		}()
	}
	wg.Wait()
	want := senders*batches*per + batches
	if stored.Load() != int64(want) || dups.Load() != int64(senders*batches-batches) {
		t.Fatalf("stored %d, duplicates %d: want %d and %d", stored.Load(), dups.Load(), want, senders*batches-batches)
	}
	got, err := ss[1].Messages("n", 0, maxMessageList)
	if err != nil || len(got) != want {
		t.Fatalf("listed %d messages (%v), want %d", len(got), err, want)
	}
	ids := map[string]bool{}
	last := map[byte]string{}
	for i, m := range got {
		if m.Seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d", i, m.Seq)
		}
		if ids[m.ID] {
			t.Fatalf("%s stored twice", m.ID)
		}
		ids[m.ID] = true
		if len(m.Payload) == 1 {
			g := m.Payload[0]
			if m.ID <= last[g] {
				t.Fatalf("seq %d: %s after %s of the same sender", m.Seq, m.ID, last[g])
			}
			last[g] = m.ID
		}
	}
	// Numbering goes on from the other replica.
	if _, err := ss[0].StoreMessages("n", []remote.Message{{ID: "last", Topic: "t"}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := ss[1].Messages("n", uint64(want), 10); len(got) != 1 || got[0].Seq != uint64(want+1) {
		t.Fatalf("after %d: %+v", want, got)
	}
}

// On PostgreSQL a remembered id whose time ran out is taken by the next
// message with it, and the sweep deletes only expired ids.
func TestDeviceMessageIDsExpire(t *testing.T) {
	e := &engine{t: t, name: "postgres", dir: t.TempDir(), store: pgtest.Shared(t).NewDatabase()}
	s := e.open(Options{})
	defer s.Close()
	ctx := context.Background()
	db, err := pgx.Connect(ctx, e.store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := s.StoreMessages("n", []remote.Message{{ID: "a", Topic: "t"}, {ID: "b", Topic: "t"}, {ID: "c", Topic: "t"}}); err != nil {
		t.Fatal(err)
	}
	var left time.Duration
	if err := db.QueryRow(ctx, `SELECT max(expires) - now() FROM message_ids`).Scan(&left); err != nil || left < messageIDTTL-time.Hour || left > messageIDTTL {
		t.Fatalf("ids remembered for %v (%v), want %v", left, err, messageIDTTL)
	}
	if _, err := db.Exec(ctx, `UPDATE message_ids SET expires = now() - interval '1 second' WHERE id IN ('a', 'b')`); err != nil {
		t.Fatal(err)
	}
	if r, err := s.StoreMessages("n", []remote.Message{{ID: "a", Topic: "t"}, {ID: "c", Topic: "t"}}); err != nil || r.Stored != 1 || r.Duplicates != 1 {
		t.Fatalf("expired a, live c: %+v %v", r, err)
	}
	if got, _ := s.Messages("n", 3, 10); len(got) != 1 || got[0].ID != "a" || got[0].Seq != 4 {
		t.Fatalf("a again: %+v", got)
	}
	if n, err := s.st.(*pgStore).sweepMessageIDs(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v, want b only", n, err)
	}
	var kept []string
	rows, _ := db.Query(ctx, `SELECT id FROM message_ids ORDER BY id`)
	if kept, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil || strings.Join(kept, ",") != "a,c" {
		t.Fatalf("kept %v (%v), want a,c", kept, err)
	}
}

// A database of schema version 2 (before device messages) is migrated at
// open, its jobs kept, and takes messages.
func TestSchemaMigratesToMessages(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase()
	ctx := context.Background()
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	for _, sql := range append(migrations[:2:2], `CREATE TABLE schema_version (version int NOT NULL); INSERT INTO schema_version VALUES (2)`,
		`INSERT INTO jobs (id, body) VALUES ('j', '{"id": "j"}')`) {
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	e := &engine{t: t, name: "postgres", dir: t.TempDir(), store: url}
	s := e.open(Options{})
	defer s.Close()
	var v int
	if err := db.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("schema version %d (%v), want %d", v, err, len(migrations))
	}
	if _, err := s.st.getJob(ctx, "j"); err != nil {
		t.Fatalf("job of version 2: %v", err)
	}
	if r, err := s.StoreMessages("n", []remote.Message{{ID: "a", Topic: "t"}}); err != nil || r.Stored != 1 {
		t.Fatalf("messages after the migration: %+v %v", r, err)
	}
}
