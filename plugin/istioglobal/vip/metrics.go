package vip

import (
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The package logs and counts as the plugin that uses it.
var log = clog.NewWithPlugin("istioglobal")

// What went wrong with the allocations ConfigMap: the reason label of allocationErrors.
const (
	reasonCorrupt     = "corrupt"      // an entry that does not decode; its addresses stay held
	reasonUnreadable  = "unreadable"   // the ConfigMap could not be listed, watched or read
	reasonWriteFailed = "write_failed" // the leader could not create or update it
)

var (
	allocationLeader = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "allocation_leader",
		Help:      "1 while this replica holds the allocations Lease and writes the ConfigMap, else 0.",
	})
	allocationConflicts = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "allocation_conflicts",
		Help:      "Live allocations whose address a ServiceEntry now declares, as the leader last saw them.",
	})
	allocationExhausted = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "allocation_exhausted",
		Help:      "Hosts that want a VIP but find the ranges full, as the leader last saw them.",
	})
	allocationErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "istioglobal",
		Name:      "allocation_errors_total",
		Help:      "Failures to read, decode or write the allocations ConfigMap, by reason.",
	}, []string{"reason"})
)
