package ratelog

import (
	"testing"
	"time"
)

// One event a period is let through, with the number left out.
func TestLimiter(t *testing.T) {
	const every = 10 * time.Second
	l := Limiter{Every: every}
	t0 := time.Now()
	if n, ok := l.Allow(t0); !ok || n != 0 {
		t.Fatalf("first: %d %t", n, ok)
	}
	for i := range 5 {
		if _, ok := l.Allow(t0.Add(time.Duration(i) * time.Second)); ok {
			t.Fatalf("logged again after %ds", i)
		}
	}
	if n, ok := l.Allow(t0.Add(every)); !ok || n != 5 {
		t.Fatalf("after %s: %d %t, want 5 true", every, n, ok)
	}
}
