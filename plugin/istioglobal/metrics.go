package istioglobal

import (
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	entriesServed = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "entries",
		Help:      "ServiceEntries that contribute at least one name to the served table.",
	})
	namesServed = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "names",
		Help:      "Host names, wildcards included, in the served table.",
	})
	skipped = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "skipped",
		Help:      "Entries, hosts and addresses left out of the served table, by kind and reason.",
	}, []string{"kind", "reason"})
	rebuildDuration = promauto.NewHistogram(prometheus.HistogramOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "rebuild_duration_seconds",
		Help:      "Time to build the lookup table from all ServiceEntries.",
		Buckets:   prometheus.ExponentialBuckets(0.0005, 4, 10), // 0.5 ms to ~2 min
	})
	lastUpdate = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "last_update_timestamp_seconds",
		Help:      "When the served table was last replaced, in seconds since the epoch.",
	})
)

// observe publishes what a newly stored table holds.
func observe(t *Table, took time.Duration) {
	entriesServed.Set(float64(t.entries))
	namesServed.Set(float64(t.hosts))
	counts := make(map[[2]string]int)
	for _, p := range t.problems {
		counts[[2]string{p.Kind, p.Reason}]++
	}
	skipped.Reset() // reasons that are gone must not linger
	for kr, n := range counts {
		skipped.WithLabelValues(kr[0], kr[1]).Set(float64(n))
	}
	rebuildDuration.Observe(took.Seconds())
	lastUpdate.Set(float64(t.built.UnixNano()) / 1e9)
}
