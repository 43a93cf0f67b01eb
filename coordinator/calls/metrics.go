package calls

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	queued   prometheus.Gauge
	running  prometheus.Gauge
	refused  *prometheus.CounterVec
	depth    *prometheus.GaugeVec
	aged     prometheus.Counter
	// parked counts calls waiting in Scheduler.Blocking without a worker
	// slot; parkRefused the waits that kept their slot (MaxParked reached).
	parked      prometheus.Gauge
	parkRefused prometheus.Counter
	// cycles counts waits refused by Scheduler.Wait (ErrCallCycle).
	cycles prometheus.Counter
	// Deadline-aware scheduling (slack.go): calls deferred now, deferred
	// calls started before their latest start (idle workers), and calls
	// with a NeedBy that finished after it.
	deferred     prometheus.Gauge
	early        prometheus.Counter
	needByMissed prometheus.Counter

	mu    sync.Mutex
	tasks map[string]*taskMetrics
}

// taskMetrics caches one task's series so the hot path skips label lookups.
type taskMetrics struct {
	duration prometheus.Observer
	// ok is the series of status ok once it exists: most calls take it
	// without the lock.
	ok       atomic.Pointer[prometheus.Counter]
	mu       sync.Mutex
	byStatus map[Status]prometheus.Counter
	calls    *prometheus.CounterVec
	task     string
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_calls_total", Help: "Calls finished, by task and status.",
		}, []string{"task", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outpost_call_duration_seconds",
			Help:    "Time from start to end of a call, by task.",
			Buckets: []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 30},
		}, []string{"task"}),
		queued:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_calls_queued", Help: "Calls waiting to run."}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_calls_running", Help: "Workers running calls."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_calls_refused_total", Help: "Calls refused before queueing, by reason (queue_full, draining, unknown_task, too_late).",
		}, []string{"reason"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outpost_calls_queue_depth", Help: "Calls waiting, by scheduler queue.",
		}, []string{"queue"}),
		aged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_calls_aged_total", Help: "Calls run out of weighted order because they waited past aging_after.",
		}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_calls_parked", Help: "Calls waiting (for another call) with their worker slot given back.",
		}),
		parkRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_calls_park_refused_total", Help: "Waits that kept their worker slot because max_parked calls were parked.",
		}),
		cycles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_calls_cycle_refused_total",
			Help: "Calls between tasks refused at once because the wait would deadlock: every slot of the called task is held by the calling chain.",
		}),
		deferred: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_calls_deferred", Help: "Calls with a need-by time waiting for a worker, ordered by their latest start.",
		}),
		early: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_calls_deferred_early_total", Help: "Deferred calls started before their latest start because nothing else was queued.",
		}),
		needByMissed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_calls_need_by_missed_total", Help: "Calls with a need-by time that finished after it.",
		}),
		tasks: map[string]*taskMetrics{},
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.duration, m.queued, m.running, m.refused, m.depth, m.aged, m.parked, m.parkRefused, m.cycles,
			m.deferred, m.early, m.needByMissed)
	}
	return m
}

func (m *metrics) task(name string) *taskMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	tm := m.tasks[name]
	if tm == nil {
		tm = &taskMetrics{duration: m.duration.WithLabelValues(name), byStatus: map[Status]prometheus.Counter{}, calls: m.calls, task: name}
		m.tasks[name] = tm
	}
	return tm
}

func (tm *taskMetrics) observe(st Status, d time.Duration) {
	tm.duration.Observe(d.Seconds())
	if st == StatusOK {
		if c := tm.ok.Load(); c != nil {
			(*c).Inc()
			return
		}
	}
	tm.mu.Lock()
	c := tm.byStatus[st]
	if c == nil {
		c = tm.calls.WithLabelValues(tm.task, string(st))
		tm.byStatus[st] = c
		if st == StatusOK {
			tm.ok.Store(&c)
		}
	}
	tm.mu.Unlock()
	c.Inc()
}
