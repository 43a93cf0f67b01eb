package cluster

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	mLeases        prometheus.Counter
	mRenewFail     prometheus.Counter
	mCollecting    prometheus.Gauge
	mReplicated    prometheus.Counter
	mRefused       prometheus.Counter
	mReplicaErrors prometheus.Counter
	mLatency       prometheus.Histogram
	mCaughtUp      prometheus.Counter
}

var descLag = prometheus.NewDesc("outpost_cluster_replica_lag_seconds", "How far the replica of a target is behind its holder: while its stream is live, from the last point's timestamp to its arrival; otherwise the time since it was live.", []string{"target"}, nil)

type lagCollector struct{ n *Node }

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descLag }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.n.Status().Targets {
		if t.Role == RoleReplica && t.LagSeconds >= 0 {
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, t.LagSeconds, t.Target)
		}
	}
}

func newMetrics(n *Node, reg prometheus.Registerer, log *slog.Logger) metrics {
	m := metrics{
		mLeases:        prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cluster_leases_total", Help: "Leases this instance registered under (more than one: it lost one)."}),
		mRenewFail:     prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cluster_lease_renewals_failed_total", Help: "Lease renewals not confirmed in time (collection stops at each)."}),
		mCollecting:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_cluster_targets_collecting", Help: "Targets this instance holds the lock of and collects now."}),
		mReplicated:    prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cluster_replicated_points_total", Help: "Points copied from holders into this instance's replicas."}),
		mRefused:       prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cluster_replica_refused_total", Help: "Answers from a holder refused: not under the epoch followed, or that epoch was replaced."}),
		mReplicaErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cluster_replica_errors_total", Help: "Replication streams from a holder that failed."}),
		mLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outpost_cluster_replica_latency_seconds", Help: "From a point's timestamp to its arrival in this instance's replica, per live batch.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		mCaughtUp: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_cluster_caught_up_points_total", Help: "Points a new holder copied from other members that it had not received from its predecessor."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.mLeases, m.mRenewFail, m.mCollecting, m.mReplicated, m.mRefused, m.mReplicaErrors, m.mLatency, m.mCaughtUp, lagCollector{n}} {
			if err := reg.Register(c); err != nil {
				log.Warn("register cluster metric", "err", err)
			}
		}
	}
	return m
}

func secondsSince(t time.Time) float64 {
	if t.IsZero() {
		return -1
	}
	return time.Since(t).Seconds()
}
