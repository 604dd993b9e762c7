package istioglobal

import (
	"strings"
	"sync"
)

// On reload CoreDNS sets up and starts the new instance's servers before it shuts the old
// instance down, and the new instance has no table until its sources have synced: seconds
// with a large API server, forever while it is unreachable. So a starting instance takes over
// the last table of the instance it replaces (the same server block, the same zones) and
// serves it until it publishes its own. An instance that never had a predecessor still
// answers SERVFAIL until its first sync.

// lineages maps a server block's identity to its running instance.
var lineages = struct {
	sync.Mutex
	live map[string]*IstioGlobal
}{live: make(map[string]*IstioGlobal)}

// lineageKey identifies a plugin instance across reloads: its server block's keys (zones and
// port) and its own zones, the two things the table's shape depends on.
func lineageKey(blockKeys, zones []string) string {
	return strings.Join(blockKeys, " ") + "|" + strings.Join(zones, " ")
}

// succeed registers ig as the running instance of its lineage and seeds its table with the
// predecessor's, if any.
func (ig *IstioGlobal) succeed() {
	if ig.lineage == "" {
		return
	}
	lineages.Lock()
	defer lineages.Unlock()
	if prev := lineages.live[ig.lineage]; prev != nil && prev != ig {
		if t := prev.table.Load(); t != nil {
			ig.table.CompareAndSwap(nil, t)
			ig.inherited.Store(t)
		}
		prev.successor = ig
	}
	lineages.live[ig.lineage] = ig
}

// retire removes ig from its lineage. A successor still serving an inherited table gets ig's
// latest one, which may have been published after the successor started.
func (ig *IstioGlobal) retire() {
	if ig.lineage == "" {
		return
	}
	lineages.Lock()
	defer lineages.Unlock()
	if next := ig.successor; next != nil {
		if old := next.inherited.Load(); old != nil {
			if latest := ig.table.Load(); latest != nil && next.table.CompareAndSwap(old, latest) {
				next.inherited.Store(latest)
			}
		}
	}
	if lineages.live[ig.lineage] == ig {
		delete(lineages.live, ig.lineage)
	}
}

// resume makes ig the running instance again after a reload away from it failed: the instance
// that failed to start must not hand its table to the next one.
func (ig *IstioGlobal) resume() error {
	if ig.lineage == "" {
		return nil
	}
	lineages.Lock()
	defer lineages.Unlock()
	ig.successor = nil
	lineages.live[ig.lineage] = ig
	return nil
}
