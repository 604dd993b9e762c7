package istioglobal

import (
	"maps"
	"net/netip"
	"time"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/coredns/coredns/plugin"
)

// coalesceDelay is the least time between two builds: a change after a quiet spell is built
// at once, and the rest of its burst waits for one build at the end of the window, so that a
// burst of N events costs one or two builds, not N.
const coalesceDelay = 50 * time.Millisecond

// builtFrom is what the instance's last table was built from, to tell an event that changes
// nothing (a status-only update, a resync, a touched file) from one that does.
type builtFrom struct {
	table      *Table
	entries    []Entry             // sorted
	live       map[string]vip.VIPs // persisted allocations; nil without a store
	unreadable []Problem           // input that is not even an entry (a file, the allocations)
}

// start takes over the table of the instance it replaces on reload, then launches the sources
// and the builder that publishes a table of its own once all have synced.
func (ig *IstioGlobal) start() error {
	ig.changed = make(chan struct{}, 1)
	ig.logged = make(map[string]bool)
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
	ig.stop = nil
	ig.retire()
	return nil
}

func (ig *IstioGlobal) notify() {
	select {
	case ig.changed <- struct{}{}:
	default: // a rebuild is pending already and will see this change
	}
}

func (ig *IstioGlobal) run() {
	defer close(ig.done)
	wait := time.NewTimer(0)
	<-wait.C
	var last time.Time // when the last build started
	for {
		select {
		case <-ig.stop:
			return
		case <-ig.changed:
		}
		if d := coalesceDelay - time.Since(last); d > 0 {
			wait.Reset(d)
			select {
			case <-ig.stop:
				wait.Stop()
				return
			case <-wait.C:
			}
		}
		if ig.synced() {
			last = time.Now()
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

// rebuild builds a table from every source's entries and publishes it, unless nothing it reads
// has changed since the last one: then the table and its serial stay.
func (ig *IstioGlobal) rebuild() {
	start := time.Now()
	var in builtFrom
	for _, s := range ig.sources {
		e, p := s.entries()
		in.entries = append(in.entries, e...)
		in.unreadable = append(in.unreadable, p...)
	}
	in.entries = inNamespaces(in.entries, ig.namespaces)
	sortEntries(in.entries)
	cfg := ig.tableConfig()
	if ig.store != nil {
		live, corrupt := ig.store.Current()
		in.live = live
		for _, err := range corrupt {
			in.unreadable = append(in.unreadable, Problem{Kind: kindAllocation, Reason: reasonCorrupt, Entry: ig.store.Key(), Detail: err.Error()})
		}
		cfg.alloc = func([]string, func(netip.Addr) bool) (map[string]vip.VIPs, []string) { return live, nil }
	}

	if last := ig.last; last != nil && sameEntries(last.entries, in.entries) && maps.Equal(last.live, in.live) {
		last.unreadable = in.unreadable
		ig.report(last)
		builds.WithLabelValues("unchanged").Inc()
		return
	}
	in.table = build(in.entries, cfg, serials.next())
	if ig.store != nil {
		ig.store.Demand(in.table.wants, in.table.reserved.has)
	}
	ig.table.Store(in.table)
	ig.last = &in
	builds.WithLabelValues("published").Inc()
	rebuildDuration.Observe(time.Since(start).Seconds())
	lastUpdate.Set(float64(time.Now().UnixNano()) / 1e9)
	ig.report(&in)
}

// tableConfig is the plugin's configuration as build takes it.
func (ig *IstioGlobal) tableConfig() tableConfig {
	c := tableConfig{zones: ig.Zones, ttl: ig.ttl, ns: ig.ns}
	if c.ns.name == "" { // not set up by parse
		c.ns = defaultNameServer(ig.Zones, nil)
	}
	if ig.allocator != nil {
		c.alloc = ig.allocator.Deterministic
	}
	return c
}

// report logs the problems that are new and sets the metrics of what is served.
func (ig *IstioGlobal) report(b *builtFrom) {
	problems := append(b.unreadable[:len(b.unreadable):len(b.unreadable)], b.table.problems...)
	observe(b.table, problems, ig.allocator)
	ig.logNew(problems)
}

// logNew logs each problem once, when it first appears, however often the table is rebuilt.
func (ig *IstioGlobal) logNew(problems []Problem) {
	current := make(map[string]bool, len(problems))
	for _, p := range problems {
		s := p.String()
		current[s] = true
		if !ig.logged[s] {
			log.Warning(s)
		}
	}
	ig.logged = current
}

func inNamespaces(entries []Entry, namespaces []string) []Entry {
	if len(namespaces) == 0 {
		return entries
	}
	out := entries[:0]
	for _, e := range entries {
		for _, ns := range namespaces {
			if e.Namespace == ns {
				out = append(out, e)
				break
			}
		}
	}
	return out
}

// storeSource makes the allocations store a source, so that nothing is served before it has
// synced and its changes rebuild the table; what it holds reaches build through Current.
type storeSource struct{ *vip.Store }

func (s storeSource) start(notify func()) error   { return s.Start(notify) }
func (s storeSource) stop()                       { s.Stop() }
func (s storeSource) synced() bool                { return s.Synced() }
func (storeSource) entries() ([]Entry, []Problem) { return nil, nil }
