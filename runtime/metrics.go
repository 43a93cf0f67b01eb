package runtime

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the engine, namespace outpost_runtime. The task label is bounded
// by the configured tasks; kind by the Kind values.
type metrics struct {
	instancesCreated *prometheus.CounterVec
	calls            *prometheus.CounterVec
	callErrors       *prometheus.CounterVec
	compileSeconds   prometheus.Histogram
	libCompiles      prometheus.Counter
	hostCalls        *prometheus.CounterVec
	sizeExceeded     *prometheus.CounterVec
	budgetRefused    *prometheus.CounterVec
	memReserved      prometheus.Gauge
	logDropped       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		instancesCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "runtime", Name: "instances_created_total",
			Help: "Wasm instances created, by task (pooled reactor instances and one per command call).",
		}, []string{"task"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "runtime", Name: "calls_total",
			Help: "Calls started, by task.",
		}, []string{"task"}),
		callErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "runtime", Name: "call_errors_total",
			Help: "Failed calls by task and kind (trap, timeout, memory, failed, invalid, too_large).",
		}, []string{"task", "kind"}),
		compileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "outpost", Subsystem: "runtime", Name: "compile_seconds",
			Help:    "Time to compile a module (or load it from the compilation cache).",
			Buckets: []float64{0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}),
		libCompiles: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "runtime", Name: "library_compiles_total",
			Help: "Library modules compiled (a library shared by tasks is compiled once per memory limit).",
		}),
		hostCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "runtime", Name: "host_calls_total",
			Help: "Host function calls (ABI v1 module outpost) by function and return code (ok, denied, not_found, invalid, too_large, quota, failed, unavailable).",
		}, []string{"function", "code"}),
		sizeExceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "runtime", Name: "size_limit_exceeded_total",
			Help: "Calls failed for an input over limits.max_input or an output over limits.max_output, by task and direction (input, output).",
		}, []string{"task", "direction"}),
		budgetRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "runtime", Name: "memory_budget_refusals_total",
			Help: "Instances not created because they would pass the memory budget (scheduler.memory_budget), by task.",
		}, []string{"task"}),
		memReserved: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "outpost", Subsystem: "runtime", Name: "memory_reserved_bytes",
			Help: "Linear memory reserved by live instances (each counts its memory limit), the amount checked against the memory budget.",
		}),
		logDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "task", Name: "log_dropped_total",
			Help: "Log lines of a task (outpost.log, stderr and stdout lines) dropped over its log rate limit (limits.log_rate, limits.log_burst), by task.",
		}, []string{"task"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.instancesCreated = register(reg, m.instancesCreated, &err)
	m.calls = register(reg, m.calls, &err)
	m.callErrors = register(reg, m.callErrors, &err)
	m.compileSeconds = register(reg, m.compileSeconds, &err)
	m.libCompiles = register(reg, m.libCompiles, &err)
	m.hostCalls = register(reg, m.hostCalls, &err)
	m.sizeExceeded = register(reg, m.sizeExceeded, &err)
	m.budgetRefused = register(reg, m.budgetRefused, &err)
	m.memReserved = register(reg, m.memReserved, &err)
	m.logDropped = register(reg, m.logDropped, &err)
	return m, err
}

// register registers c, or returns the collector already registered under
// the same description (two engines on one registry share counters).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		if *errp == nil {
			*errp = err
		}
	}
	return c
}
