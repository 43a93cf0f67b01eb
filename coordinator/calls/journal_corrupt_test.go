package calls

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A journal record whose stored value is corrupt (its bytes no longer
// decode): recovery skips it with a logged error and a metric instead of
// refusing to start, the other records recover, the daemon keeps taking
// and running calls, and a redelivery of the corrupt call is reported
// interrupted instead of running a second time.
//
// The cut-off tail of the store itself (a writer killed mid group commit)
// is TestJournalKill9: badger drops the torn tail when it opens and every
// acknowledged record is still there.
func TestJournalCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	runs := map[string]int{}
	echo := func(ctx context.Context, c *Call) Result {
		mu.Lock()
		runs[c.ID]++
		mu.Unlock()
		return Result{Status: StatusOK, Output: c.Input}
	}
	ran := func(id string) int {
		mu.Lock()
		defer mu.Unlock()
		return runs[id]
	}
	wait := func(got chan *Record, n int) []*Record {
		t.Helper()
		var out []*Record
		for range n {
			select {
			case r := <-got:
				out = append(out, r)
			case <-time.After(5 * time.Second):
				t.Fatalf("only %d of %d results", len(out), n)
			}
		}
		return out
	}

	// First life: three calls finish; none is reported yet.
	{
		db := openDB(t, dir)
		j := openJournal(t, db, JournalOptions{}, nil, nil)
		s := NewScheduler(newFake(map[string]int{"t": 2}, echo), Options{Workers: 2, QueueSize: 100}, nil, nil)
		got := make(chan *Record, 10)
		d := NewDurable(j, s, nil, func(r *Record) { got <- r })
		if _, err := d.Accept([]*Call{cloudCall("a", Idempotent), cloudCall("b", AtMostOnce), cloudCall("c", Idempotent)}); err != nil {
			t.Fatal(err)
		}
		wait(got, 3)
		if err := j.Flush(); err != nil {
			t.Fatal(err)
		}
		_ = s.Drain(context.Background())
		_ = j.Close()
		// The value of b's record is damaged on disk.
		if err := db.Badger().Update(func(txn *badger.Txn) error {
			return txn.Set(j.recordKey("b"), []byte(`{"id":"b","state":"FINI`+"\x00\xff"))
		}); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
	}

	// Second life.
	ranBefore := ran("b")
	var logs bytes.Buffer
	var logMu sync.Mutex
	lg := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	db := openDB(t, dir)
	j := openJournal(t, db, JournalOptions{}, lg, prometheus.NewRegistry())
	s := NewScheduler(newFake(map[string]int{"t": 2}, echo), Options{Workers: 2, QueueSize: 100}, nil, nil)
	got := make(chan *Record, 10)
	d := NewDurable(j, s, lg, func(r *Record) { got <- r })
	t.Cleanup(func() {
		_ = s.Drain(context.Background())
		_ = j.Close()
		_ = db.Close()
	})
	if err := d.Recover(context.Background()); err != nil {
		t.Fatalf("recovery refused to start over one corrupt record: %v", err)
	}
	back := map[string]bool{}
	for _, r := range wait(got, 2) {
		back[r.ID] = true
	}
	if !back["a"] || !back["c"] {
		t.Errorf("recovered results %v, want a and c", back)
	}
	if recs, n, _ := j.Outbox("cloud", 0); n != 2 || len(recs) != 0 {
		t.Errorf("outbox holds %d results, want a and c", n)
	}
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "journal record unreadable") || !strings.Contains(out, "call=b") {
		t.Errorf("no error naming the unreadable record:\n%s", out)
	}
	if v := testutil.ToFloat64(j.m.corrupt); v != 1 {
		t.Errorf("outpost_journal_unreadable_records_total = %v", v)
	}

	// The daemon keeps serving: a new call is journaled and runs.
	if out, err := d.Accept([]*Call{cloudCall("d", Idempotent)}); err != nil || out[0] != Accepted {
		t.Fatalf("accept after recovery: %v %v", out, err)
	}
	if r := wait(got, 1)[0]; r.ID != "d" || r.Result.Status != StatusOK {
		t.Errorf("new call after recovery: %+v", r)
	}
	// The cloud redelivers b (its result was never reported): it is not run
	// again (it may have run) but reported interrupted, and the record is
	// readable again.
	if out, err := d.Accept([]*Call{cloudCall("b", AtMostOnce)}); err != nil || out[0] != Replayed {
		t.Fatalf("redelivery of the corrupt call: %v %v", out, err)
	}
	if r := wait(got, 1)[0]; r.ID != "b" || r.Result.Status != StatusInterrupted {
		t.Errorf("redelivered corrupt call: %+v", r)
	}
	if n := ran("b") - ranBefore; n != 0 {
		t.Errorf("the corrupt call ran %d times after the restart", n)
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	if rec, err := j.load("b"); err != nil || rec == nil || rec.State != Finished || rec.Result.Status != StatusInterrupted {
		t.Errorf("b's record after the redelivery: %+v %v", rec, err)
	}
	if v := testutil.ToFloat64(j.m.corrupt); v != 2 {
		t.Errorf("unreadable records counted %v, want 2 (recovery and the redelivery)", v)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
