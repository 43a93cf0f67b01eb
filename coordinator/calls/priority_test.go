package calls

import (
	"context"
	"sync"
	"testing"
	"time"
)

// A flood in a bulk queue does not delay a trickle in the control queue,
// and aging lets a low-weight queue through.
func TestQueuesControlAndAging(t *testing.T) {
	f := newFake(map[string]int{"t": 1}, sleepy(time.Millisecond))
	s := NewScheduler(f, Options{Workers: 1, QueueSize: 10000,
		Queues: []QueueSpec{{Name: "bulk", Weight: 100}, {Name: "low", Weight: 1}}, AgingAfter: 30 * time.Millisecond}, nil, nil)
	defer s.Drain(context.Background())
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	add := func(queue string, n int) {
		for range n {
			wg.Add(1)
			c := New("t", nil, Source{})
			c.Queue = queue
			c.Done = func(*Call) { mu.Lock(); order = append(order, queue); mu.Unlock(); wg.Done() }
			if err := s.Submit(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	add("bulk", 300)
	add("low", 1)
	time.Sleep(5 * time.Millisecond)
	add(ControlQueue, 1)
	wg.Wait()
	pos := map[string]int{}
	for i, q := range order {
		if _, ok := pos[q]; !ok {
			pos[q] = i
		}
	}
	if pos[ControlQueue] > 10 {
		t.Errorf("control call ran %dth behind a bulk flood", pos[ControlQueue])
	}
	// Weight alone would run low after ~100 bulk calls; aging at 30ms of
	// 1ms calls lets it in after about 30.
	if pos["low"] > 60 {
		t.Errorf("low queue starved: ran %dth of %d", pos["low"], len(order))
	}
}

func TestStartByAndCancel(t *testing.T) {
	block := make(chan struct{})
	f := newFake(map[string]int{"t": 1}, func(ctx context.Context, c *Call) Result {
		if string(c.Input) == "block" {
			select {
			case <-block:
			case <-ctx.Done():
				return Result{Status: StatusTimeout, Error: ctx.Err().Error()}
			}
		}
		return Result{Status: StatusOK}
	})
	s := NewScheduler(f, Options{Workers: 1, QueueSize: 100}, nil, nil)
	defer s.Drain(context.Background())
	results := make(chan *Call, 10)
	submit := func(input string, startBy time.Duration) *Call {
		c := New("t", []byte(input), Source{})
		if startBy != 0 {
			c.StartBy = time.Now().Add(startBy)
		}
		c.Done = func(c *Call) { results <- c }
		if err := s.Submit(c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	running := submit("block", 0)
	submit("late", 10*time.Millisecond)
	queued := submit("queued", 0)
	time.Sleep(30 * time.Millisecond)
	if !s.Cancel(queued.ID) {
		t.Fatal("queued call not found")
	}
	if !s.Cancel(running.ID) {
		t.Fatal("running call not found")
	}
	if s.Cancel("nope") {
		t.Error("unknown id cancelled")
	}
	got := map[string]Status{}
	for range 3 {
		select {
		case c := <-results:
			got[string(c.Input)] = c.Result.Status
		case <-time.After(5 * time.Second):
			t.Fatalf("results so far %v", got)
		}
	}
	want := map[string]Status{"block": StatusCanceled, "late": StatusExpired, "queued": StatusCanceled}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s, want %s", k, got[k], v)
		}
	}
	if len(f.started) != 1 {
		t.Errorf("started %d calls, want only the blocking one", len(f.started))
	}
}
