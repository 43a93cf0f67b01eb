package calls

import (
	"context"
	"sync"
	"testing"
	"time"
)

// BenchmarkNeedByMisses: two workers get 200 queued calls of a task that
// take 4 ms (400 ms of work) and, right after, 50 calls of the same task
// that take 2 ms, each needed by a time spread from 20 ms to 314 ms: the
// workers can do both in time only if the needed calls go first when their
// time comes. first-come: they are queued behind the rest (their need-by
// is only checked); slack: they carry it (Call.NeedBy) and are deferred by
// slack. Metric: the share of needed calls that finished after their
// need-by.
func BenchmarkNeedByMisses(b *testing.B) {
	for _, mode := range []string{"first-come", "slack"} {
		b.Run(mode, func(b *testing.B) {
			var missed, total int
			for range b.N {
				m, n := needByRound(b, mode == "slack")
				missed += m
				total += n
			}
			b.ReportMetric(100*float64(missed)/float64(total), "misses-%")
		})
	}
}

func needByRound(b *testing.B, slack bool) (missed, total int) {
	run := func(ctx context.Context, c *Call) Result {
		d := 4 * time.Millisecond
		if string(c.Input) == "dep" {
			d = 2 * time.Millisecond
		}
		return sleepy(d)(ctx, c)
	}
	s := NewScheduler(newFake(map[string]int{"w": 2}, run), Options{Workers: 2, QueueSize: 1000}, nil, nil)
	defer func() { _ = s.Drain(context.Background()) }()
	if _, err := s.Do(context.Background(), New("w", nil, Source{})); err != nil { // its run time is known
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	submit := func(kind string, needBy time.Time) {
		c := New("w", []byte(kind), Source{})
		if slack {
			c.NeedBy = needBy
		}
		wg.Add(1)
		c.Done = func(c *Call) {
			if !needBy.IsZero() && c.Finished.After(needBy) {
				mu.Lock()
				missed++
				mu.Unlock()
			}
			wg.Done()
		}
		if err := s.Submit(c); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	for range 200 {
		submit("bg", time.Time{})
	}
	for i := range 50 {
		submit("dep", start.Add(20*time.Millisecond+time.Duration(i)*6*time.Millisecond))
	}
	wg.Wait()
	return missed, 50
}
