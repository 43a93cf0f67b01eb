package calls

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// relay is an executor function: the input is a comma-separated list of
// tasks; the call calls the first one (synchronously with Do inside Wait,
// or, with async, by Submit and a wait for its Done) with the rest as
// input, and answers what it answered. An empty input answers "leaf".
func relay(s **Scheduler, async bool) func(ctx context.Context, c *Call) Result {
	return func(ctx context.Context, c *Call) Result {
		if len(c.Input) == 0 {
			return Result{Status: StatusOK, Output: []byte("leaf")}
		}
		next, rest, _ := strings.Cut(string(c.Input), ",")
		child := New(next, []byte(rest), Source{Kind: "task", Ref: c.Task})
		var res Result
		var err error
		if async {
			done := make(chan struct{})
			child.Done = func(*Call) { close(done) }
			if err = (*s).Submit(child); err == nil {
				err = (*s).Wait(ctx, child, func() error {
					select {
					case <-done:
						res = child.Result
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				})
			}
		} else {
			err = (*s).Wait(ctx, child, func() error {
				var err error
				res, err = (*s).Do(ctx, child)
				return err
			})
		}
		if err != nil {
			return Result{Status: StatusFailed, Error: err.Error()}
		}
		return res
	}
}

// TestWaitCycle: a task calling itself, directly or through others, while
// every slot of the called task is held by the calling chain fails at once
// with a message naming the chain (and counts it); a call the chain leaves
// a slot for runs.
func TestWaitCycle(t *testing.T) {
	tests := []struct {
		name   string
		limits map[string]int
		task   string
		input  string
		async  bool
		want   string // "" = succeeds with "leaf"
	}{
		{name: "self call, concurrency 1", limits: map[string]int{"a": 1}, task: "a", input: "a",
			want: "call cycle would deadlock: a -> a (a has concurrency 1, all held by this chain)"},
		{name: "a -> b -> a", limits: map[string]int{"a": 1, "b": 1}, task: "a", input: "b,a",
			want: "call cycle would deadlock: a -> b -> a (a has concurrency 1, all held by this chain)"},
		{name: "self call once, concurrency 2", limits: map[string]int{"a": 2}, task: "a", input: "a"},
		{name: "self call twice, concurrency 2", limits: map[string]int{"a": 2}, task: "a", input: "a,a",
			want: "call cycle would deadlock: a -> a -> a (a has concurrency 2, all held by this chain)"},
		{name: "a -> b -> b, b concurrency 2", limits: map[string]int{"a": 1, "b": 2}, task: "a", input: "b,b"},
		{name: "async self call awaited, concurrency 1", limits: map[string]int{"a": 1}, task: "a", input: "a", async: true,
			want: "call cycle would deadlock: a -> a (a has concurrency 1, all held by this chain)"},
		{name: "async a -> b -> a", limits: map[string]int{"a": 1, "b": 1}, task: "a", input: "b,a", async: true,
			want: "call cycle would deadlock: a -> b -> a (a has concurrency 1, all held by this chain)"},
		{name: "async self call, concurrency 2", limits: map[string]int{"a": 2}, task: "a", input: "a", async: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s *Scheduler
			s = NewScheduler(newFake(tt.limits, relay(&s, tt.async)), Options{Workers: 4, QueueSize: 100}, nil, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := s.Do(ctx, New(tt.task, []byte(tt.input), Source{Kind: "test"}))
			if err != nil {
				t.Fatalf("Do: %v (the wait was not refused at once)", err)
			}
			if tt.want == "" {
				if !res.OK() || string(res.Output) != "leaf" {
					t.Fatalf("got %+v, want leaf", res)
				}
				if n := testutil.ToFloat64(s.m.cycles); n != 0 {
					t.Errorf("cycle counter %v, want 0", n)
				}
			} else {
				// The innermost refusal travels up the chain as each caller's failure.
				if res.Status != StatusFailed || !strings.HasSuffix(res.Error, tt.want) {
					t.Fatalf("got %+v, want failed with %q", res, tt.want)
				}
				if n := testutil.ToFloat64(s.m.cycles); n != 1 {
					t.Errorf("cycle counter %v, want 1", n)
				}
			}
			if err := s.Drain(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestWaitNoCycleWhenOthersHoldSlots: a self call that finds the task's
// other slot held by a call outside the chain waits for it rather than
// failing: that call will finish.
func TestWaitNoCycleWhenOthersHoldSlots(t *testing.T) {
	var s *Scheduler
	release := make(chan struct{})
	holding := make(chan struct{})
	chain := relay(&s, false)
	f := newFake(map[string]int{"a": 2}, func(ctx context.Context, c *Call) Result {
		if string(c.Input) == "hold" {
			close(holding)
			<-release
			return Result{Status: StatusOK}
		}
		return chain(ctx, c)
	})
	s = NewScheduler(f, Options{Workers: 4, QueueSize: 100}, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hold := New("a", []byte("hold"), Source{Kind: "test"})
	held := make(chan struct{})
	hold.Done = func(*Call) { close(held) }
	if err := s.Submit(hold); err != nil {
		t.Fatal(err)
	}
	<-holding
	// Two calls of a: the chain's and the holder; the chain's child waits
	// for the holder's slot.
	got := make(chan Result, 1)
	go func() {
		res, err := s.Do(ctx, New("a", []byte("a"), Source{Kind: "test"}))
		if err != nil {
			res = Result{Status: StatusFailed, Error: err.Error()}
		}
		got <- res
	}()
	for deadline := time.Now().Add(10 * time.Second); s.Stats().Queued == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the child call never queued")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if res := <-got; !res.OK() || string(res.Output) != "leaf" {
		t.Fatalf("got %+v, want leaf", res)
	}
	<-held
	if n := testutil.ToFloat64(s.m.cycles); n != 0 {
		t.Errorf("cycle counter %v, want 0", n)
	}
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWaitOutsideCall: without a call of the scheduler in ctx, Wait runs wait.
func TestWaitOutsideCall(t *testing.T) {
	s := NewScheduler(newFake(map[string]int{"a": 1}, nil), Options{Workers: 1, QueueSize: 1}, nil, nil)
	want := errors.New("x")
	if err := s.Wait(context.Background(), New("a", nil, Source{}), func() error { return want }); err != want {
		t.Fatalf("got %v", err)
	}
}
