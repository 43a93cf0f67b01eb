package calls

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// fakeMono is a monotonic clock the test moves (JournalOptions.mono).
type fakeMono struct{ d atomic.Int64 }

func (f *fakeMono) now() time.Duration  { return time.Duration(f.d.Load()) }
func (f *fakeMono) add(d time.Duration) { f.d.Add(int64(d)) }

// fakeWall is a node's wall clock: it runs with the monotonic clock from
// a start time and can be stepped (NTP, a person, a dead RTC).
type fakeWall struct {
	mu    sync.Mutex
	mono  *fakeMono
	start time.Time
}

func (w *fakeWall) now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.start.Add(w.mono.now())
}

func (w *fakeWall) step(d time.Duration) {
	w.mu.Lock()
	w.start = w.start.Add(d)
	w.mu.Unlock()
}

// Retention is measured on the journal clock: whatever the wall clock
// does (off by an hour either way, at 1970, stepped a year forward or an
// hour back, or from 1970 to today by NTP, mid-retention), no reported
// record is compacted before the retention has passed on the journal
// clock, and all are once it has, across a reopen (the clock is saved).
func TestJournalRetentionIgnoresWallClock(t *testing.T) {
	const (
		retention  = time.Hour
		reportedAt = 10 * time.Minute // journal clock at MarkReported
		reopenAt   = 30 * time.Minute // journal clock at the restart
	)
	today := time.Now()
	year := 365 * 24 * time.Hour
	for _, tc := range []struct {
		name  string
		start time.Time     // wall clock when the journal opens
		step  time.Duration // wall step mid-retention, after the report
	}{
		{"wall +1h", today.Add(time.Hour), 0},
		{"wall -1h", today.Add(-time.Hour), 0},
		{"wall at 1970 (dead RTC)", time.Unix(0, 0), 0},
		{"1970 then NTP steps to today", time.Unix(0, 0), today.Sub(time.Unix(0, 0))},
		{"step +1 year mid-retention", today, year},
		{"step -1h mid-retention", today, -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mono := &fakeMono{}
			wall := &fakeWall{mono: mono, start: tc.start}
			opts := JournalOptions{Retention: retention, Wall: wall.now, mono: mono.now}
			r := newRigOpts(t, dir, opts, func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK} })
			keyed := cloudCall("keyed", AtMostOnce)
			keyed.IdempotencyKey = "k-keyed"
			if _, err := r.d.Accept([]*Call{cloudCall("a", Idempotent), cloudCall("b", AtMostOnce), keyed}); err != nil {
				t.Fatal(err)
			}
			r.wait(t, 3)
			mono.add(reportedAt)
			wantReported := wall.now()
			if err := r.j.MarkReported("a", "b", "keyed"); err != nil {
				t.Fatal(err)
			}
			if err := r.j.Flush(); err != nil {
				t.Fatal(err)
			}
			mono.add(reopenAt - reportedAt)
			wall.step(tc.step)
			compactNone(t, r.j)

			// Restart: a new monotonic clock from zero; the journal clock
			// goes on from its saved value.
			r.close()
			mono.d.Store(0)
			r = newRigOpts(t, dir, opts, func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK} })
			if got := r.j.Clock(); got != reopenAt {
				t.Fatalf("journal clock after reopen %v, want %v (saved at close)", got, reopenAt)
			}
			rec, err := r.j.Get("a")
			if err != nil || rec == nil {
				t.Fatalf("record a after reopen: %v %v", rec, err)
			}
			if !rec.Reported.Equal(wantReported) || rec.ReportedClock != reportedAt {
				t.Errorf("record a reported at wall %v clock %v, want wall %v (display) clock %v", rec.Reported, rec.ReportedClock, wantReported, reportedAt)
			}
			mono.add(reportedAt + retention - reopenAt - time.Millisecond)
			compactNone(t, r.j)
			mono.add(time.Millisecond)
			n, err := r.j.Compact(context.Background())
			if err != nil || n != 4 {
				t.Fatalf("at the retention: compacted %d keys (%v), want 3 records and 1 idempotency key", n, err)
			}
			for _, id := range []string{"a", "b", "keyed"} {
				if rec, _ := r.j.Get(id); rec != nil {
					t.Errorf("%s survived the retention", id)
				}
			}
		})
	}
}

// compactNone asserts that compaction removes nothing now.
func compactNone(t *testing.T, j *Journal) {
	t.Helper()
	n, err := j.Compact(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("journal clock %v: compacted %d keys (%v) before the retention", j.Clock(), n, err)
	}
}

// Records written before the journal clock existed (no stamps, no saved
// clock) are kept a full retention from the first open by this version,
// whatever their wall times say; their unfinished calls still recover.
func TestJournalMigratesRecordsWithoutClock(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	legacy := []string{
		`{"id":"rep-old","task":"t","source":{"kind":"cloud"},"key":"rep-old","effect":"idempotent","attempt":1,"runs":1,"state":"reported","result":{"status":"ok"},"received":"2020-01-01T00:00:00Z","reported":"2020-01-01T00:00:01Z"}`,
		`{"id":"recv-2","task":"t","input":"Mg==","source":{"kind":"cloud"},"key":"recv-2","effect":"idempotent","attempt":1,"state":"received","received":"2020-01-01T00:00:02Z"}`,
		`{"id":"recv-1","task":"t","input":"MQ==","source":{"kind":"cloud"},"key":"recv-1","effect":"idempotent","attempt":1,"state":"received","received":"2020-01-01T00:00:01Z"}`,
	}
	if err := db.Badger().Update(func(txn *badger.Txn) error {
		for i, v := range legacy {
			id := []string{"rep-old", "recv-2", "recv-1"}[i]
			if err := txn.Set([]byte("calls/r/"+id), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	mono := &fakeMono{}
	r := newRigOpts(t, dir, JournalOptions{Retention: time.Hour, mono: mono.now}, func(ctx context.Context, c *Call) Result {
		return Result{Status: StatusOK, Output: c.Input}
	})
	if got := r.j.Clock(); got != 0 {
		t.Fatalf("journal clock of a journal without one: %v, want 0", got)
	}
	if err := r.d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, rec := range r.wait(t, 2) {
		if want := map[string]string{"recv-1": "1", "recv-2": "2"}[rec.ID]; string(rec.Result.Output) != want {
			t.Errorf("recovered %s: output %q, want %q", rec.ID, rec.Result.Output, want)
		}
	}
	if rec, _ := r.j.Get("rep-old"); rec == nil || !rec.Reported.Equal(old.Add(time.Second)) {
		t.Fatalf("legacy record after open: %+v", rec)
	}
	compactNone(t, r.j) // its wall time is six years old: not what counts
	mono.add(time.Hour - time.Millisecond)
	compactNone(t, r.j)
	mono.add(time.Millisecond)
	if n, err := r.j.Compact(context.Background()); err != nil || n != 1 {
		t.Fatalf("a retention after the upgrade: compacted %d (%v), want the legacy record", n, err)
	}
}

// Recovery queues calls in the order they were received on the journal
// clock, not by their wall times: a clock stepped back between two
// receipts does not reorder them.
func TestJournalRecoverOrderIgnoresWallClock(t *testing.T) {
	dir := t.TempDir()
	mono := &fakeMono{}
	wall := &fakeWall{mono: mono, start: time.Now()}
	opts := JournalOptions{Wall: wall.now, mono: mono.now}
	db := openDB(t, dir)
	j := openJournal(t, db, opts, nil, nil)
	d := NewDurable(j, nil, nil, nil)
	var want []string
	for i := range 5 {
		id := fmt.Sprintf("c%d", i)
		want = append(want, id)
		a, err := d.prepare([]*Call{cloudCall(id, Idempotent)})
		if err != nil {
			t.Fatal(err)
		}
		if err := j.commit(true, a.kvs...); err != nil {
			t.Fatal(err)
		}
		mono.add(time.Second)
		wall.step(-time.Hour) // each later call looks an hour older
	}
	_ = j.Close()
	_ = db.Close()

	db = openDB(t, dir)
	defer db.Close()
	j = openJournal(t, db, opts, nil, nil)
	defer j.Close()
	open, err := j.recover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range open {
		got = append(got, r.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recovery order %v, want receipt order %v", got, want)
	}
}

// Journals with their own namespaces share one store without seeing each
// other's records; the default namespace keeps the daemon's keys.
func TestJournalNamespaces(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	if _, err := OpenJournal(db, JournalOptions{Namespace: "a/b"}, nil, nil); err == nil {
		t.Fatal("a namespace with '/' was accepted")
	}
	mono := &fakeMono{}
	js := map[string]*Journal{}
	for _, ns := range []string{"", "n1", "n2"} {
		j := openJournal(t, db, JournalOptions{Namespace: ns, Retention: time.Hour, mono: mono.now}, nil, nil)
		defer j.Close()
		js[ns] = j
		d := NewDurable(j, nil, nil, nil)
		a, err := d.prepare([]*Call{cloudCall("same-id", Idempotent), cloudCall("only-"+ns, Idempotent)})
		if err != nil {
			t.Fatal(err)
		}
		if err := j.commit(true, a.kvs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Badger().View(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte("calls/r/only-"))
		return err
	}); err != nil {
		t.Errorf("the default journal's record is not under calls/r/: %v", err)
	}
	for ns, j := range js {
		all, err := j.List(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range all {
			ids = append(ids, r.ID)
		}
		if want := fmt.Sprint([]string{"only-" + ns, "same-id"}); fmt.Sprint(ids) != want {
			t.Errorf("namespace %q lists %v, want %v", ns, ids, want)
		}
	}
}
