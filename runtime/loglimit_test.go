package runtime

import (
	"context"
	"encoding/binary"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLogRateLimit: a task flooding outpost.log and stderr gets its burst
// and then its rate through; the rest is dropped, counted in
// outpost_task_log_dropped_total, and reported in at most one line a
// second.
// Before, every line reached the log (52,787 lines in a 3 s call).
func TestLogRateLimit(t *testing.T) {
	var mu sync.Mutex
	var recs []string
	log := slog.New(logRecorder{mu: &mu, recs: &recs})
	e := newHostEngine(t, newMemHost(), log,
		Spec{Name: "flood", Module: fixture(t, "logflood"), LogRate: 20, LogBurst: 50},
		Spec{Name: "quiet", Module: fixture(t, "logflood")})
	in := binary.LittleEndian.AppendUint32(nil, 5000)
	start := time.Now()
	if _, err := e.Call(context.Background(), "flood", in); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	dropped := testutil.ToFloat64(e.metrics.logDropped.WithLabelValues("flood"))
	// 10,000 lines (5,000 each way): the burst and what the rate refilled pass.
	passed := 10000 - dropped
	if passed < 50 || passed > 50+20*elapsed.Seconds()+2 {
		t.Fatalf("%v lines passed in %s, want the burst of 50 plus 20/s", passed, elapsed)
	}
	// The drop is reported a second after the first one.
	var reported float64
	deadline := time.Now().Add(5 * time.Second)
	for reported < dropped && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		reported, _ = dropReports(&mu, &recs)
	}
	_, n := dropReports(&mu, &recs)
	if reported != dropped || n < 1 || float64(n) > 1+elapsed.Seconds() {
		t.Fatalf("%d report lines say %v dropped, the metric %v", n, reported, dropped)
	}
	// The default limit (100/s, burst 1000) lets a modest task through.
	if _, err := e.Call(context.Background(), "quiet", binary.LittleEndian.AppendUint32(nil, 400)); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(e.metrics.logDropped.WithLabelValues("quiet")); got != 0 {
		t.Fatalf("800 lines within the default burst: %v dropped", got)
	}
}

// dropReports sums the counts of the "task log lines dropped" lines.
func dropReports(mu *sync.Mutex, recs *[]string) (sum float64, lines int) {
	mu.Lock()
	defer mu.Unlock()
	for _, r := range *recs {
		if !strings.Contains(r, "task log lines dropped") {
			continue
		}
		lines++
		for _, f := range strings.Fields(r) {
			if v, ok := strings.CutPrefix(f, "dropped="); ok {
				n, _ := strconv.ParseFloat(v, 64)
				sum += n
			}
		}
	}
	return sum, lines
}
