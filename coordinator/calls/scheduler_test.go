package calls

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeExec runs per-task functions and tracks concurrency.
type fakeExec struct {
	limits map[string]int
	run    func(ctx context.Context, c *Call) Result

	mu      sync.Mutex
	now     map[string]int
	peak    map[string]int
	total   int
	maxAll  int
	started []string
}

func newFake(limits map[string]int, run func(ctx context.Context, c *Call) Result) *fakeExec {
	return &fakeExec{limits: limits, run: run, now: map[string]int{}, peak: map[string]int{}}
}

func (f *fakeExec) Concurrency(task string) (int, bool) { n, ok := f.limits[task]; return n, ok }

func (f *fakeExec) Execute(ctx context.Context, c *Call) Result {
	f.mu.Lock()
	f.now[c.Task]++
	f.total++
	f.peak[c.Task] = max(f.peak[c.Task], f.now[c.Task])
	f.maxAll = max(f.maxAll, f.total)
	f.started = append(f.started, c.Task)
	f.mu.Unlock()
	r := f.run(ctx, c)
	f.mu.Lock()
	f.now[c.Task]--
	f.total--
	f.mu.Unlock()
	return r
}

func sleepy(d time.Duration) func(ctx context.Context, c *Call) Result {
	return func(ctx context.Context, c *Call) Result {
		select {
		case <-time.After(d):
			return Result{Status: StatusOK, Output: c.Input}
		case <-ctx.Done():
			return Result{Status: StatusTimeout, Error: ctx.Err().Error()}
		}
	}
}

func submitN(t *testing.T, s *Scheduler, task string, n int, wg *sync.WaitGroup) {
	t.Helper()
	for range n {
		wg.Add(1)
		c := New(task, nil, Source{Kind: "test"})
		c.Done = func(*Call) { wg.Done() }
		if err := s.Submit(c); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLimits(t *testing.T) {
	f := newFake(map[string]int{"a": 2, "b": 1, "c": 8}, sleepy(5*time.Millisecond))
	s := NewScheduler(f, Options{Workers: 4, QueueSize: 1000}, nil, nil)
	var wg sync.WaitGroup
	submitN(t, s, "a", 20, &wg)
	submitN(t, s, "b", 10, &wg)
	submitN(t, s, "c", 30, &wg)
	wg.Wait()
	if f.peak["a"] != 2 || f.peak["b"] != 1 {
		t.Errorf("per-task peaks %v, want a=2 b=1", f.peak)
	}
	if f.maxAll > 4 {
		t.Errorf("%d calls ran at once, worker cap is 4", f.maxAll)
	}
	if err := s.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A task with a deep queue does not starve a task that arrives later.
func TestRoundRobin(t *testing.T) {
	f := newFake(map[string]int{"busy": 4, "rare": 1}, sleepy(2*time.Millisecond))
	s := NewScheduler(f, Options{Workers: 1, QueueSize: 1000}, nil, nil)
	var wg sync.WaitGroup
	submitN(t, s, "busy", 50, &wg)
	submitN(t, s, "rare", 1, &wg)
	wg.Wait()
	for i, task := range f.started {
		if task == "rare" {
			if i > 3 {
				t.Errorf("rare ran as call %d of %d: starved behind busy", i, len(f.started))
			}
			break
		}
	}
	_ = s.Drain(context.Background())
}

// TestFairShare: a task holding every worker, with free slots of its own
// and more calls queued, gets no further worker while another task waits:
// the first worker freed goes to the other task.
func TestFairShare(t *testing.T) {
	release := make(chan struct{})
	f := newFake(map[string]int{"busy": 8, "other": 8}, func(ctx context.Context, c *Call) Result {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Result{Status: StatusOK}
	})
	s := NewScheduler(f, Options{Workers: 4, QueueSize: 1000}, nil, nil)
	var wg sync.WaitGroup
	submitN(t, s, "busy", 8, &wg)
	waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.started) == 4 })
	submitN(t, s, "other", 2, &wg)
	release <- struct{}{} // one busy call ends: its worker goes to other
	waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.started) == 5 })
	release <- struct{}{} // busy holds 3, other 1: the next goes to other again
	waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.started) == 6 })
	f.mu.Lock()
	got := fmt.Sprint(f.started[4:6])
	f.mu.Unlock()
	if got != "[other other]" {
		t.Errorf("calls 5 and 6 started: %s, want [other other]", got)
	}
	close(release)
	wg.Wait()
	_ = s.Drain(context.Background())
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 10s")
		}
	}
}

func TestFIFOPopMin(t *testing.T) {
	var q fifo[int]
	for _, v := range []int{3, 1, 2, 1} {
		q.push(v)
	}
	var got []int
	for q.len() > 0 {
		v, _ := q.popMin(func(v int) int { return v })
		got = append(got, v)
	}
	if fmt.Sprint(got) != "[1 1 2 3]" {
		t.Fatalf("popMin order %v", got)
	}
}

func TestRefusals(t *testing.T) {
	block := make(chan struct{})
	f := newFake(map[string]int{"a": 1}, func(ctx context.Context, c *Call) Result { <-block; return Result{Status: StatusOK} })
	reg := prometheus.NewRegistry()
	s := NewScheduler(f, Options{Workers: 1, QueueSize: 2}, nil, reg)
	var wg sync.WaitGroup
	submitN(t, s, "a", 3, &wg) // one runs, two wait
	if err := s.Submit(New("a", nil, Source{})); !errors.Is(err, ErrQueueFull) {
		t.Errorf("want ErrQueueFull, got %v", err)
	}
	if err := s.Submit(New("nope", nil, Source{})); !errors.Is(err, ErrUnknownTask) || err.Error() != `unknown task "nope"` {
		t.Errorf("want ErrUnknownTask naming the task, got %v", err)
	}
	if got := testutil.ToFloat64(s.m.refused.WithLabelValues("queue_full")); got != 1 {
		t.Errorf("queue_full refusals = %v", got)
	}
	if got := s.Stats(); got.Queued != 2 || got.Running != 1 {
		t.Errorf("stats %+v", got)
	}
	close(block)
	wg.Wait()
	if got := testutil.ToFloat64(s.m.calls.WithLabelValues("a", "ok")); got != 3 {
		t.Errorf("outpost_calls_total{a,ok} = %v, want 3", got)
	}
	_ = s.Drain(context.Background())
	if err := s.Submit(New("a", nil, Source{})); !errors.Is(err, ErrDraining) {
		t.Errorf("after drain: want ErrDraining, got %v", err)
	}
}

func TestDo(t *testing.T) {
	f := newFake(map[string]int{"a": 1}, sleepy(0))
	s := NewScheduler(f, Options{Workers: 2, QueueSize: 100}, nil, nil)
	defer s.Drain(context.Background())
	var doneCalls atomic.Int32
	c := New("a", []byte("in"), Source{Kind: "test"})
	c.Done = func(*Call) { doneCalls.Add(1) }
	r, err := s.Do(context.Background(), c)
	if err != nil || !r.OK() || string(r.Output) != "in" || c.State != Finished || doneCalls.Load() != 1 {
		t.Fatalf("inline Do: %+v %v state=%v done=%d", r, err, c.State, doneCalls.Load())
	}
	// Concurrent Do calls beyond the task limit queue and still complete.
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Do(context.Background(), New("a", []byte("x"), Source{}))
			if err != nil || !r.OK() {
				t.Errorf("Do: %+v %v", r, err)
			}
		}()
	}
	wg.Wait()
	if f.peak["a"] != 1 {
		t.Errorf("task limit 1 exceeded: peak %d", f.peak["a"])
	}
}

// A call whose deadline passes while it waits is not started.
func TestDeadlineWhileQueued(t *testing.T) {
	f := newFake(map[string]int{"a": 1}, sleepy(50*time.Millisecond))
	s := NewScheduler(f, Options{Workers: 1, QueueSize: 10}, nil, nil)
	defer s.Drain(context.Background())
	var wg sync.WaitGroup
	submitN(t, s, "a", 1, &wg)
	c := New("a", nil, Source{})
	c.Deadline = time.Now().Add(10 * time.Millisecond)
	r, err := s.Do(context.Background(), c)
	wg.Wait()
	if err != nil || r.Status != StatusTimeout {
		t.Fatalf("want timeout, got %+v %v", r, err)
	}
	if len(f.started) != 1 {
		t.Errorf("expired call was started: %v", f.started)
	}
}

func TestDrain(t *testing.T) {
	t.Run("waits for running and queued calls", func(t *testing.T) {
		f := newFake(map[string]int{"a": 1}, sleepy(20*time.Millisecond))
		s := NewScheduler(f, Options{Workers: 1, QueueSize: 10}, nil, nil)
		var ok atomic.Int32
		for range 3 {
			c := New("a", nil, Source{})
			c.Done = func(c *Call) {
				if c.Result.OK() {
					ok.Add(1)
				}
			}
			if err := s.Submit(c); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		if ok.Load() != 3 {
			t.Errorf("%d of 3 calls finished ok before Drain returned", ok.Load())
		}
	})
	t.Run("deadline cancels running and queued", func(t *testing.T) {
		f := newFake(map[string]int{"a": 1}, sleepy(time.Hour))
		s := NewScheduler(f, Options{Workers: 1, QueueSize: 10}, nil, nil)
		var mu sync.Mutex
		statuses := map[Status]int{}
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			c := New("a", nil, Source{})
			c.Done = func(c *Call) {
				mu.Lock()
				statuses[c.Result.Status]++
				mu.Unlock()
				wg.Done()
			}
			if err := s.Submit(c); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		err := s.Drain(ctx)
		if err == nil {
			t.Fatal("drain past its deadline returned nil")
		}
		wg.Wait()
		if statuses[StatusCanceled] != 3 {
			t.Errorf("statuses %v, want 3 canceled (%v)", statuses, err)
		}
	})
}

func TestFIFO(t *testing.T) {
	var q fifo[int]
	next := 0
	for i := range 1000 {
		q.push(i)
		if i%3 == 0 {
			v, ok := q.pop()
			if !ok || v != next {
				t.Fatalf("pop = %d,%v want %d", v, ok, next)
			}
			next++
		}
	}
	for q.len() > 0 {
		v, _ := q.pop()
		if v != next {
			t.Fatalf("pop = %d want %d", v, next)
		}
		next++
	}
	if next != 1000 {
		t.Fatalf("lost items: %d", next)
	}
}

// chainExec runs task "chain": input n > 0 calls "chain" with n-1 and waits
// for it inside Blocking (through Do, or Submit and a wait for Done); it
// tracks the calls running outside Blocking.
type chainExec struct {
	s     *Scheduler
	async bool

	mu          sync.Mutex
	active, max int
}

func (f *chainExec) Concurrency(string) (int, bool) { return 1000, true }

func (f *chainExec) add(d int) {
	f.mu.Lock()
	f.active += d
	f.max = max(f.max, f.active)
	f.mu.Unlock()
}

func (f *chainExec) Execute(ctx context.Context, c *Call) Result {
	f.add(1)
	defer f.add(-1)
	n := int(c.Input[0])
	if n == 0 {
		time.Sleep(time.Millisecond)
		return Result{Status: StatusOK, Output: []byte("leaf")}
	}
	child := New("chain", []byte{byte(n - 1)}, Source{Kind: "test"})
	var res Result
	f.add(-1)
	err := f.s.Blocking(ctx, func() error {
		if !f.async {
			var err error
			res, err = f.s.Do(ctx, child)
			return err
		}
		done := make(chan struct{})
		child.Done = func(*Call) { close(done) }
		if err := f.s.Submit(child); err != nil {
			return err
		}
		select {
		case <-done:
			res = child.Result
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	f.add(1)
	if err != nil {
		return Result{Status: StatusFailed, Error: err.Error()}
	}
	return res
}

// TestBlockingChainDeeperThanWorkers: chains of calls each waiting for the
// next, deeper than the worker cap and several at once, complete; the calls
// running outside Blocking never exceed the cap.
func TestBlockingChainDeeperThanWorkers(t *testing.T) {
	for _, async := range []bool{false, true} {
		name := map[bool]string{false: "do", true: "submit"}[async]
		t.Run(name, func(t *testing.T) {
			const workers, depth, chains = 2, 8, 5
			f := &chainExec{async: async}
			f.s = NewScheduler(f, Options{Workers: workers, QueueSize: 1000}, nil, nil)
			var wg sync.WaitGroup
			errs := make(chan string, chains)
			for range chains {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					res, err := f.s.Do(ctx, New("chain", []byte{depth}, Source{Kind: "test"}))
					if err != nil || string(res.Output) != "leaf" {
						errs <- fmt.Sprintf("chain: %v %+v", err, res)
					}
				}()
			}
			stop := make(chan struct{})
			peak := make(chan int)
			go func() {
				p := 0
				for {
					select {
					case <-stop:
						peak <- p
						return
					default:
					}
					p = max(p, f.s.Stats().Running)
					time.Sleep(50 * time.Microsecond)
				}
			}()
			wg.Wait()
			close(stop)
			if p := <-peak; p > workers {
				t.Errorf("Stats.Running reached %d, cap %d", p, workers)
			}
			close(errs)
			for e := range errs {
				t.Error(e)
			}
			if f.max > workers {
				t.Errorf("%d calls ran outside Blocking at once, cap %d", f.max, workers)
			}
			// The last worker gives its slot back just after Done answered.
			st := f.s.Stats()
			for deadline := time.Now().Add(5 * time.Second); (st.Running != 0 || st.Parked != 0 || st.Queued != 0) && time.Now().Before(deadline); st = f.s.Stats() {
				time.Sleep(time.Millisecond)
			}
			if st.Running != 0 || st.Parked != 0 || st.Queued != 0 {
				t.Errorf("after the chains: %+v", st)
			}
			if err := f.s.Drain(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBlockingOutsideCall: without a call of the scheduler in ctx, or past
// MaxParked, Blocking just runs wait and keeps the slot.
func TestBlockingOutsideCall(t *testing.T) {
	f := newFake(map[string]int{"a": 1}, nil)
	s := NewScheduler(f, Options{Workers: 1, QueueSize: 10, MaxParked: 1}, nil, nil)
	want := errors.New("x")
	if err := s.Blocking(context.Background(), func() error { return want }); err != want {
		t.Fatalf("got %v", err)
	}
	f.run = func(ctx context.Context, c *Call) Result {
		var parked []int
		_ = s.Blocking(ctx, func() error {
			parked = append(parked, s.Stats().Parked)
			// Nested: the call is already parked; the slot stays given back.
			return s.Blocking(ctx, func() error { parked = append(parked, s.Stats().Parked); return nil })
		})
		if fmt.Sprint(parked) != "[1 1]" || s.Stats().Running != 1 || s.Stats().Parked != 0 {
			return Result{Status: StatusFailed, Error: fmt.Sprint(parked, s.Stats())}
		}
		return Result{Status: StatusOK}
	}
	res, err := s.Do(context.Background(), New("a", nil, Source{Kind: "test"}))
	if err != nil || !res.OK() {
		t.Fatalf("%v %+v", err, res)
	}
}
