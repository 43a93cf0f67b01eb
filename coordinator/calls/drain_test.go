package calls

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Journaled calls cut by the drain deadline are left as a crash leaves
// them (STARTED, or RECEIVED when still queued), nothing is reported for
// them, and the next start recovers them: idempotent ones run again with
// attempt+1 and the same key, at-most-once ones finish interrupted, queued
// ones run.
func TestDurableDrainDeadlineCut(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	j := openJournal(t, db, JournalOptions{}, nil, prometheus.NewRegistry())
	// Two running calls fill the task's two slots; the third waits.
	f := newFake(map[string]int{"t": 2}, func(ctx context.Context, c *Call) Result {
		<-ctx.Done()
		return Result{Status: StatusTimeout, Error: ctx.Err().Error()}
	})
	s := NewScheduler(f, Options{Workers: 4, QueueSize: 100}, nil, nil)
	reported := make(chan *Record, 10)
	d := NewDurable(j, s, nil, func(r *Record) { reported <- r })
	idem := cloudCall("idem", Idempotent)
	idem.IdempotencyKey = "key-idem"
	if _, err := d.Accept([]*Call{idem, cloudCall("amo", AtMostOnce), cloudCall("queued", AtMostOnce)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Running < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("calls never started: %+v", s.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Drain(ctx); err == nil {
		t.Fatal("drain reported no cut although two calls ran past its deadline")
	}
	if len(reported) != 0 {
		t.Fatalf("%d results reported for calls cut by the shutdown", len(reported))
	}
	want := map[string]State{"idem": Started, "amo": Started, "queued": Received}
	for id, st := range want {
		r, err := j.Get(id)
		if err != nil || r == nil || r.State != st || r.Result != nil {
			t.Errorf("%s after the cut: %+v %v, want %s without a result", id, r, err, st)
		}
	}
	_ = j.Close()
	_ = db.Close()

	r := newRig(t, dir, func(ctx context.Context, c *Call) Result {
		return Result{Status: StatusOK, Output: fmt.Appendf(nil, "%s#%d", c.IdempotencyKey, c.Attempt)}
	})
	if err := r.d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]*Record{}
	for _, rec := range r.wait(t, 3) {
		got[rec.ID] = rec
	}
	wantRes := map[string]string{"idem": "ok key-idem#2", "amo": "interrupted ", "queued": "ok queued#1"}
	for id, w := range wantRes {
		rec := got[id]
		if rec == nil {
			t.Errorf("%s: no result after the restart", id)
			continue
		}
		if s := string(rec.Result.Status) + " " + string(rec.Result.Output); s != w {
			t.Errorf("%s: %q, want %q", id, s, w)
		}
	}
	if got["idem"] != nil && got["amo"] != nil && got["queued"] != nil &&
		(got["idem"].Runs != 2 || got["amo"].Runs != 1 || got["queued"].Runs != 1) {
		t.Errorf("runs: idem %d (want 2), amo %d (want 1), queued %d (want 1)", got["idem"].Runs, got["amo"].Runs, got["queued"].Runs)
	}
}

// A call journaled while the drain begins (on disk, so its sender was
// told it is accepted) is not rejected: it stays RECEIVED, nothing is
// reported, and the next start runs it.
func TestDurableAcceptedAsDrainBegins(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	j := openJournal(t, db, JournalOptions{}, nil, prometheus.NewRegistry())
	f := newFake(map[string]int{"t": 1}, func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK} })
	s := NewScheduler(f, Options{Workers: 1, QueueSize: 10}, nil, nil)
	reported := make(chan *Record, 10)
	d := NewDurable(j, s, nil, func(r *Record) { reported <- r })
	if err := s.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Accept([]*Call{cloudCall("late", AtMostOnce)}); err != nil {
		t.Fatalf("a call journaled as the drain began: %v", err)
	}
	if len(reported) != 0 {
		t.Fatalf("a result reported for a call the drain kept from starting: %+v", <-reported)
	}
	if r, err := j.Get("late"); err != nil || r == nil || r.State != Received || r.Result != nil {
		t.Fatalf("late after the drain: %+v %v, want received without a result", r, err)
	}
	_ = j.Close()
	_ = db.Close()

	r := newRig(t, dir, func(ctx context.Context, c *Call) Result {
		return Result{Status: StatusOK, Output: c.Input}
	})
	if err := r.d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec := r.wait(t, 1)[0]; rec.ID != "late" || rec.Result.Status != StatusOK || rec.Runs != 1 {
		t.Errorf("after the restart: %+v, want late ok, run once", rec)
	}
}
