package istioglobal

import (
	"fmt"
	"strings"
	"sync"
)

// On reload CoreDNS sets up and starts the new instance's servers before it shuts the old
// instance down, and the new instance has no table until its sources have synced: seconds
// with a large API server, forever while it is unreachable. So a starting instance takes over
// the last table of the instance it replaces (the same server block and zones: lineageKey) and
// serves it until it publishes its own. An instance that never had a predecessor still
// answers SERVFAIL until its first sync.

// lineages maps a server block's identity to its running instance.
var lineages = struct {
	sync.Mutex
	live map[string]*IstioGlobal
}{live: make(map[string]*IstioGlobal)}

// lineageKey identifies a plugin instance across reloads: its server block (its place in the
// Corefile, its keys, bind addresses and view: two blocks may share keys) and its own zones,
// which the table's zones are. What else the table depends on (ttl, sources, namespaces,
// nameserver) may change in a reload: until its own sources sync, the new instance serves the
// old instance's answers.
func lineageKey(block int, keys, listen []string, view string, zones []string) string {
	return fmt.Sprintf("%d|%s|%s|%s|%s", block, strings.Join(keys, " "), strings.Join(listen, " "), view, strings.Join(zones, " "))
}

// succeed registers ig as the running instance of its lineage and seeds its table with the
// predecessor's, if any.
func (ig *IstioGlobal) succeed() {
	if ig.identity != nil {
		ig.lineage = ig.identity()
	}
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

// retire removes ig from its lineage. A successor without a table of its own (serving an
// inherited one, or none yet) gets ig's latest, which may have been published after the
// successor started.
func (ig *IstioGlobal) retire() {
	if ig.lineage == "" {
		return
	}
	lineages.Lock()
	defer lineages.Unlock()
	if next := ig.successor; next != nil {
		old := next.inherited.Load()
		if latest := ig.table.Load(); latest != nil && next.table.CompareAndSwap(old, latest) {
			next.inherited.Store(latest)
		}
	}
	if lineages.live[ig.lineage] == ig {
		delete(lineages.live, ig.lineage)
	}
}

// resume makes ig the running instance again after a reload away from it failed to start the
// new instance: that one must not hand its table to the next. caddy also calls this when the
// new instance runs and only ig's shutdown failed; then ig is stopped and stays retired.
func (ig *IstioGlobal) resume() error {
	if ig.lineage == "" || ig.stop == nil {
		return nil
	}
	lineages.Lock()
	defer lineages.Unlock()
	if cur := lineages.live[ig.lineage]; cur == nil || cur == ig.successor {
		ig.successor = nil
		lineages.live[ig.lineage] = ig
	}
	return nil
}
