package coordinator

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	intakeDropped *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	// Blob GC (blobgc.go): blobs and bytes deleted.
	blobsReclaimed, blobBytesReclaimed prometheus.Counter
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
		blobsReclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_registry_blobs_reclaimed_total",
			Help: "Blobs (modules, libraries, data files, leftover uploads) deleted by blob GC because nothing references them.",
		}),
		blobBytesReclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_registry_blob_bytes_reclaimed_total", Help: "Bytes of the blobs deleted by blob GC.",
		}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outpost_build_info", Help: "The running version."}, []string{"version"})
	build.WithLabelValues(version).Set(1)
	reg.MustRegister(m.intakeDropped, m.reloads, m.blobsReclaimed, m.blobBytesReclaimed, build)
	return m
}
