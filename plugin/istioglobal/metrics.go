package istioglobal

import (
	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
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
	otherZones = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "other_zone_entries",
		Help:      "ServiceEntries with no host in the served zones: read (their addresses are reserved), not served.",
	})
	capped = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "capped",
		Help:      "Answers that leave out records to stay bounded, by record type: reverse names (ptr), hosts with ports beyond the cap (srv), hosts whose facts leave entries, addresses or ports out, and addresses with more holders than a TXT lists (txt).",
	}, []string{"record"})
	transfers = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "transfers_total",
		Help:      "Zone transfers, by kind: axfr, ixfr (from the journal), ixfr_fallback (the whole zone for a serial the journal does not reach), ixfr_current (the SOA alone).",
	}, []string{"kind"})
	notifies = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "notifies_total",
		Help:      "NOTIFY rounds for one zone, by result: sent (every secondary acknowledged) or failed.",
	}, []string{"result"})
	builds = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "builds_total",
		Help:      "Batches of changes applied, by result: published (a new generation, a new serial) or unchanged (no answer changed).",
	}, []string{"result"})
	rebuildDuration = promauto.NewHistogram(prometheus.HistogramOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "rebuild_duration_seconds",
		Help:      "Time to apply a batch of changes and publish the table's new generation.",
		Buckets:   prometheus.ExponentialBuckets(0.0005, 4, 10), // 0.5 ms to ~2 min
	})
	allocated = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "allocated",
		Help:      "Hosts served an auto-allocated VIP, by address family.",
	}, []string{"family"})
	allocationFree = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "allocation_free",
		Help:      "Addresses of the autoallocate ranges not served as a VIP, by address family.",
	}, []string{"family"})
	sourceSynced = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "source_synced",
		Help:      "1 once the Kubernetes source has listed every watched namespace; it stays 1 through outages, as the last table serves on.",
	})
	sourceLastEvent = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "source_last_event_timestamp_seconds",
		Help:      "When the Kubernetes source last received a ServiceEntry change or list, in seconds since the epoch.",
	})
	relists = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "relists_total",
		Help:      "Full lists of ServiceEntries after the first: after an outage, or a watch that expired (410 Gone).",
	})
	watchRestarts = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "watch_restarts_total",
		Help:      "ServiceEntry watches begun after the first (routine every 5 to 10 minutes, as the API server ends them).",
	})
	watchErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "watch_errors_total",
		Help:      "Failed lists and watches of ServiceEntries, by reason: unreachable, forbidden, unauthorized, expired, server.",
	}, []string{"reason"})
	lastUpdate = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "last_update_timestamp_seconds",
		Help:      "When the served table was last replaced, in seconds since the epoch.",
	})
)

// observe publishes what the served table holds, and the problems of its input; a is nil when
// autoallocate is off.
func observe(s tableStats, problems map[[2]string]int, a *vip.Allocator) {
	entriesServed.Set(float64(s.entries))
	namesServed.Set(float64(s.hosts))
	otherZones.Set(float64(s.other))
	skipped.Reset() // reasons that are gone must not linger
	for kr, n := range problems {
		skipped.WithLabelValues(kr[0], kr[1]).Set(float64(n))
	}
	for i, record := range cappedRecords {
		capped.WithLabelValues(record).Set(float64(s.capped[i]))
	}
	if a != nil {
		v4, v6 := a.Capacity()
		for i, family := range []string{"ipv4", "ipv6"} {
			capacity := [2]uint64{v4, v6}[i]
			allocated.WithLabelValues(family).Set(float64(s.allocated[i]))
			allocationFree.WithLabelValues(family).Set(float64(capacity - min(capacity, uint64(s.allocated[i]))))
		}
	}
}
