package istioglobal

import (
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/debounce"
	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/coredns/coredns/plugin"
)

// coalesceDelay is the least time between two builds: a change after a quiet spell is built
// at once, and the rest of its burst waits for one build at the end of the window, so that a
// burst of N events costs a build per window, not N. It is the serial clock's tick: a build
// costs what its changes touch, and the serial could not grow faster anyway.
const coalesceDelay = 10 * time.Millisecond

// start takes over the table of the instance it replaces on reload, then launches the sources
// and the builder that publishes a table of its own once all have synced.
func (ig *IstioGlobal) start() error {
	ig.changed = debounce.New(0, 0, coalesceDelay)
	ig.succeed()
	for i, s := range ig.sources {
		if err := s.start(ig.notify); err != nil {
			for _, started := range ig.sources[:i] {
				started.stop()
			}
			ig.retire()
			return plugin.Error(ig.Name(), err)
		}
	}
	ig.stop = make(chan struct{})
	ig.done = make(chan struct{})
	if ig.xfer != nil {
		// Not waited for at shutdown: a round in progress may wait seconds on a secondary.
		ig.notifier = newNotifier(ig.xfer, ig.Zones)
		go ig.notifier.run(ig.stop)
	}
	go ig.run()
	return nil
}

// shutdown stops the sources and the builder; of this instance only its last table survives a
// reload, in the successor that serves it until it has one of its own.
func (ig *IstioGlobal) shutdown() error {
	if ig.stop == nil {
		return nil
	}
	close(ig.stop)
	for _, s := range ig.sources {
		s.stop()
	}
	<-ig.done
	if ig.wake != nil {
		ig.wake.Stop()
	}
	ig.stop = nil
	ig.retire()
	return nil
}

func (ig *IstioGlobal) notify() { ig.changed.Signal() }

func (ig *IstioGlobal) run() {
	defer close(ig.done)
	for ig.changed.Wait(ig.stop) {
		if ig.synced() {
			ig.rebuild()
		}
	}
}

func (ig *IstioGlobal) synced() bool {
	for _, s := range ig.sources {
		if !s.synced() {
			return false
		}
	}
	return true
}

// rebuild applies what every source changed since the last rebuild and publishes the new
// generation, unless no answer changed: then the table and its serial stay.
func (ig *IstioGlobal) rebuild() {
	start := time.Now()
	if ig.engine == nil {
		ig.engine = newEngine(ig.tableConfig())
	}
	e := ig.engine
	for i, s := range ig.sources {
		changes, unreadable := s.changes()
		for j := range changes {
			c := &changes[j]
			c.id.source = int32(i)
		}
		e.apply(changes)
		e.setUnreadable(i, unreadable)
	}
	if ig.store != nil && ig.storeChanged.Swap(false) {
		live, corrupt := ig.store.Current()
		var problems []Problem
		for _, err := range corrupt {
			problems = append(problems, Problem{Kind: kindAllocation, Reason: reasonCorrupt, Entry: ig.store.Key(), Detail: err.Error()})
		}
		e.setUnreadable(len(ig.sources), problems)
		if !maps.Equal(live, ig.live) || ig.live == nil {
			ig.live = live
			e.setAlloc(func([]string, vip.Reserved) (map[string]vip.VIPs, []string) { return live, nil })
		}
	}
	t := e.commit(serials.next)
	if d := e.deadline; !d.IsZero() && d != ig.wakeAt { // a host waiting for its VIP becomes overdue
		ig.wakeAt = d
		if ig.wake != nil {
			ig.wake.Stop()
		}
		ig.wake = time.AfterFunc(time.Until(d), ig.notify)
	}
	if ig.store != nil && e.demandChanged {
		e.demandChanged = false
		ig.store.Demand(e.lastWant, e.reserved.snapshot().run)
	}
	if t == nil {
		builds.WithLabelValues("unchanged").Inc()
	} else {
		ig.table.Store(t)
		if ig.notifier != nil {
			ig.notifier.signal()
		}
		builds.WithLabelValues("published").Inc()
		rebuildDuration.Observe(time.Since(start).Seconds())
		lastUpdate.Set(float64(time.Now().UnixNano()) / 1e9)
	}
	observe(e.statistics(), e.problems.counts, ig.allocator)
}

// tableConfig is the plugin's configuration as build takes it.
func (ig *IstioGlobal) tableConfig() tableConfig {
	c := tableConfig{zones: ig.Zones, ttl: ig.ttl, ns: ig.ns, export: ig.export, namespaces: ig.namespaces}
	if c.ns.name == "" { // not set up by parse
		c.ns = defaultNameServer(ig.Zones, nil)
	}
	if ig.allocator != nil {
		c.alloc, c.pool = ig.allocator.Deterministic, ig.allocator.Overlaps
	}
	if ig.store != nil { // until the allocations are read
		c.alloc = func([]string, vip.Reserved) (map[string]vip.VIPs, []string) { return nil, nil }
	}
	return c
}

func inNamespaces(namespace string, namespaces []string) bool {
	return len(namespaces) == 0 || slices.Contains(namespaces, namespace)
}

// storeSource makes the allocations store a source, so that nothing is served before it has
// synced; its changes rebuild the table, which reads them through Current.
type storeSource struct {
	*vip.Store
	changed *atomic.Bool
}

func (s storeSource) start(notify func()) error {
	s.changed.Store(true)
	return s.Start(func() { s.changed.Store(true); notify() })
}
func (s storeSource) stop()                        { s.Stop() }
func (s storeSource) synced() bool                 { return s.Synced() }
func (storeSource) changes() ([]change, []Problem) { return nil, nil }
