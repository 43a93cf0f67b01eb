package calls

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// AcceptAsync returns at once; done runs once the calls are on disk, after
// they were queued, and on the journal's completion goroutine, where it may
// journal again (a done that accepts another call must not deadlock).
func TestAcceptAsync(t *testing.T) {
	r := newRig(t, t.TempDir(), func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK, Output: c.Input} })
	got := make(chan error, 2)
	c := cloudCall("a", Idempotent)
	c.ReplyTo = "devices/x/out"
	r.d.AcceptAsync([]*Call{c}, func(out []Outcome, err error) {
		if err == nil && out[0] != Accepted {
			err = errors.New("outcome " + out[0].String())
		}
		if err == nil {
			if rec, _ := r.j.load("a"); rec == nil || rec.ReplyTo != "devices/x/out" {
				err = errors.New("not on disk when done ran")
			}
		}
		got <- err
		// Journaling again from the completion goroutine.
		r.d.AcceptAsync([]*Call{cloudCall("b", Idempotent)}, func(_ []Outcome, err error) { got <- err })
	})
	for range 2 {
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("done never ran")
		}
	}
	recs := r.wait(t, 2)
	for _, rec := range recs {
		if rec.State != Finished || rec.Result.Status != StatusOK {
			t.Errorf("record %+v", rec)
		}
	}
	if rec, _ := r.j.Get("a"); rec.ReplyTo != "devices/x/out" || rec.call(r.j.Clock()).ReplyTo != "devices/x/out" {
		t.Errorf("reply topic lost: %+v", rec)
	}
}

// A failed write: done gets the error, nothing is queued or kept.
func TestAcceptAsyncDiskFull(t *testing.T) {
	var ran atomic.Int32
	r := newRig(t, t.TempDir(), func(ctx context.Context, c *Call) Result { ran.Add(1); return Result{Status: StatusOK} })
	r.j.fault = func() error { return syscall.ENOSPC }
	errc := make(chan error, 1)
	r.d.AcceptAsync([]*Call{cloudCall("x", Idempotent)}, func(_ []Outcome, err error) { errc <- err })
	if err := <-errc; !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("want ENOSPC, got %v", err)
	}
	if rec, _ := r.j.Get("x"); rec != nil || ran.Load() != 0 {
		t.Fatalf("refused call kept (%+v) or run (%d)", rec, ran.Load())
	}
}

// On a closed journal done runs at once with an error.
func TestAcceptAsyncClosed(t *testing.T) {
	r := newRig(t, t.TempDir(), func(ctx context.Context, c *Call) Result { return Result{Status: StatusOK} })
	_ = r.j.Close()
	var err error
	r.d.AcceptAsync([]*Call{cloudCall("x", Idempotent)}, func(_ []Outcome, e error) { err = e })
	if !errors.Is(err, errJournalClosed) {
		t.Fatalf("got %v", err)
	}
}
