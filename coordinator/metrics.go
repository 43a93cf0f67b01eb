package coordinator

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	intakeDropped *prometheus.CounterVec
	reloads       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, version string) *metrics {
	m := &metrics{
		intakeDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_mqtt_messages_dropped_total",
			Help: "Routed MQTT messages that could not become calls, by reason (queue_full, draining, unknown_task).",
		}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_config_reloads_total", Help: "SIGHUP reloads, by result (ok, rejected).",
		}, []string{"result"}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outpost_build_info", Help: "The running version."}, []string{"version"})
	build.WithLabelValues(version).Set(1)
	reg.MustRegister(m.intakeDropped, m.reloads, build)
	return m
}
