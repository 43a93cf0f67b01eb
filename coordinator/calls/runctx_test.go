package calls

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestRunDeadlines checks the deadlines of running calls, watched by the
// scheduler's one timer (runctx.go): calls started with deadlines in any
// order each end at their own deadline with context.DeadlineExceeded (Err
// and Cause), a context derived from a call's ends with it, a call without
// a deadline is left running until it is canceled (context.Canceled), and
// no call stays in the scheduler's heap.
func TestRunDeadlines(t *testing.T) {
	type seen struct {
		err, cause, derivedCause error
		deadline                 time.Time
		hasDeadline              bool
		at                       time.Time
	}
	var mu sync.Mutex
	got := map[string]seen{}
	started := make(chan string, 8)
	f := newFake(map[string]int{"t": 8}, func(ctx context.Context, c *Call) Result {
		// Derived as the runtime derives a task timeout, but later.
		derived, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		started <- string(c.Input)
		<-derived.Done()
		dl, ok := ctx.Deadline()
		mu.Lock()
		got[string(c.Input)] = seen{ctx.Err(), context.Cause(ctx), context.Cause(derived), dl, ok, time.Now()}
		mu.Unlock()
		return Result{Status: StatusTimeout, Error: ctx.Err().Error()}
	})
	s := NewScheduler(f, Options{Workers: 8, QueueSize: 16}, nil, nil)
	defer s.Drain(context.Background())

	base := time.Now()
	offsets := map[string]time.Duration{"c": 900 * time.Millisecond, "a": 300 * time.Millisecond, "b": 600 * time.Millisecond}
	var wg sync.WaitGroup
	for _, name := range []string{"c", "a", "b"} { // the latest first: the timer moves earlier
		c := New("t", []byte(name), Source{Kind: "test"})
		c.Deadline = base.Add(offsets[name])
		wg.Add(1)
		c.Done = func(*Call) { wg.Done() }
		if err := s.Submit(c); err != nil {
			t.Fatal(err)
		}
	}
	open := New("t", []byte("open"), Source{Kind: "test"})
	openDone := make(chan struct{})
	open.Done = func(*Call) { close(openDone) }
	if err := s.Submit(open); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("calls did not start")
		}
	}
	wg.Wait()
	mu.Lock()
	for name, off := range offsets {
		g := got[name]
		switch {
		case !errors.Is(g.err, context.DeadlineExceeded) || !errors.Is(g.cause, context.DeadlineExceeded) || !errors.Is(g.derivedCause, context.DeadlineExceeded):
			t.Errorf("call %s: Err %v, Cause %v, derived Cause %v; want deadline exceeded", name, g.err, g.cause, g.derivedCause)
		case !g.hasDeadline || !g.deadline.Equal(base.Add(off)):
			t.Errorf("call %s: Deadline() = %v, %v; want %v", name, g.deadline, g.hasDeadline, base.Add(off))
		case g.at.Before(base.Add(off)):
			t.Errorf("call %s ended %v before its deadline", name, base.Add(off).Sub(g.at))
		}
	}
	mu.Unlock()
	select {
	case <-openDone:
		t.Fatal("the call without a deadline ended with the others")
	default:
	}
	if !s.Cancel(open.ID) {
		t.Fatal("running call not found")
	}
	select {
	case <-openDone:
	case <-time.After(10 * time.Second):
		t.Fatal("canceled call did not end")
	}
	mu.Lock()
	if g := got["open"]; !errors.Is(g.err, context.Canceled) || g.hasDeadline {
		t.Errorf("call without deadline: Err %v, has deadline %v; want canceled, none", g.err, g.hasDeadline)
	}
	mu.Unlock()
	if open.Result.Status != StatusCanceled {
		t.Errorf("canceled call: %+v", open.Result)
	}
	s.mu.Lock()
	if n := len(s.runs); n != 0 {
		t.Errorf("%d calls left in the runs heap", n)
	}
	s.mu.Unlock()
}
