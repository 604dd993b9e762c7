package istioglobal

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/hostname"
	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/miekg/dns"
)

// tableConfig is what the engine takes besides the entries: the plugin's configuration.
type tableConfig struct {
	zones  []string // lower-case FQDNs
	ttl    uint32
	ns     nameServer
	alloc  allocFunc               // nil: autoallocate off
	pool   func(netip.Prefix) bool // whether a prefix overlaps the autoallocate ranges; nil: any may
	export exportPolicy
	// namespaces are the only ones served (empty: all). The files source reads every namespace:
	// the others' entries only reserve their addresses, so that no VIP equals one of them.
	namespaces []string
	now        func() time.Time // nil: time.Now
}

// pendingLimit is how long a host waits for its persisted VIP with SERVFAIL, the answer that no
// resolver caches: longer than a leader failover (a 15 s lease) and its write. After that it
// answers NODATA, counted as skipped{reason="no_vip"}, until the VIP appears: a full range, or
// an allocations ConfigMap that cannot be read or written, must not fail every lookup forever.
const pendingLimit = 30 * time.Second

// nameServer is the target of every zone's NS record and SOA MNAME. With addresses, it is a
// name of ours and answers them (and rides along as glue); without, it resolves elsewhere.
type nameServer struct {
	name  string // FQDN
	addrs []netip.Addr
}

// allocFunc gives VIPs to the hosts that want them (in priority order), never a reserved
// address; it returns the hosts it could not serve. vip.Allocator.Deterministic is one; the
// persisted allocations are another.
type allocFunc func(hosts []string, reserved vip.Reserved) (map[string]vip.VIPs, []string)

// optOutLabel is Istio's label for an entry that must not get an auto-allocated address.
const optOutLabel = "networking.istio.io/enable-autoallocate-ip"

// entryID names an entry across sources: files may list one namespace/name twice.
type entryID struct {
	key    string // namespace/name
	source int32
	dup    int32 // the how-manieth of its namespace/name in its source, from 0
}

// change is one entry as a source now has it; nil when it is gone.
type change struct {
	id    entryID
	entry *Entry
}

// entryRec is an entry as the engine holds it.
type entryRec struct {
	id       entryID
	e        *Entry
	hosts    []*hostState   // its hosts in the zones, each once, in the order it lists them
	status   [][]netip.Addr // by host: its status.addresses, when spec has no usable one
	problems []Problem
	scope    scope
	hasSpec  bool // spec.addresses has a usable address
	served   bool // contributes at least one name
	other    bool // has no host in the zones
	gone     bool // removed: its hosts drop it at the next commit
}

// indexOf is the place of h among the entry's hosts.
func (e *engine) indexOf(r *entryRec, h *hostState) int {
	if index, ok := e.wide[r]; ok {
		return int(index[h])
	}
	return slices.Index(r.hosts, h)
}

// hostKey is a host's place in host order: its oldest entry, and its place in that entry.
type hostKey struct {
	rec *entryRec
	idx int
}

// hostState is what the engine knows of one host beyond what it publishes.
type hostState struct {
	name     string
	holders  []*entryRec // the entries that serve it, in entry order
	key      hostKey     // where it stands in the address holder lists
	info     *hostInfo   // published; nil before the first
	problems []Problem
	vip      *hostVIP // while it wants a VIP
	zone     uint8
	wildcard bool
}

// hostVIP is the allocation of a host that wants a VIP.
type hostVIP struct {
	vips    vip.VIPs
	pending bool      // the persisted allocations do not hold it yet
	overdue bool      // pending for longer than pendingLimit: NODATA
	since   time.Time // when it began to wait
	full    bool      // the ranges have no room for it
}

// draft is a host derived from its entries in this commit, before VIPs.
type draft struct {
	info     *hostInfo // nil: no entry holds the host any more
	dropped  int       // addresses beyond maxAddressesPerHost
	shadowed []*entryRec
}

// engine is the writer of tables. It is not safe for concurrent use: the builder owns it.
type engine struct {
	cfg        tableConfig
	allocating bool
	reverse    bool // a zone is under .arpa: addresses get PTR records
	glue       *hostInfo

	entries  map[entryID]*entryRec
	wide     map[*entryRec]map[*hostState]int32 // for entries with many hosts: the place of each
	hosts    map[string]*hostState
	holders  map[netip.Addr][]*hostState // in host order
	reserved reservation
	wants    map[*hostState]struct{}
	lastWant []string // the hosts that wanted VIPs at the last allocation, in priority order

	names     *cowWriter[string, *node]
	conflicts *cowWriter[netip.Addr, *holderList]
	gen       uint64 // of the generation being built
	published bool
	stats     tableStats

	dirty            map[*hostState]struct{}
	drafts           map[*hostState]draft
	joined           map[*hostState][]*entryRec // entries that came to hold a host in this commit
	addrOps          map[netip.Addr]*holderChanges
	changed          []nameChange // names the generation changed, with their last published node
	conflictsChanged bool
	wantsChanged     bool
	allocChanged     bool
	demandChanged    bool

	problems   problemSet
	unreadable map[int][]Problem // by source
	journal    journal
	serial     uint32    // of the last published generation
	deadline   time.Time // when the first pending host becomes overdue; zero: none waits
}

func newEngine(c tableConfig) *engine {
	e := &engine{
		cfg:        c,
		allocating: c.alloc != nil,
		entries:    make(map[entryID]*entryRec),
		wide:       make(map[*entryRec]map[*hostState]int32),
		hosts:      make(map[string]*hostState),
		holders:    make(map[netip.Addr][]*hostState),
		wants:      make(map[*hostState]struct{}),
		names:      newCOWWriter[string, *node](hashName),
		conflicts:  newCOWWriter[netip.Addr, *holderList](hashAddr),
		dirty:      make(map[*hostState]struct{}),
		drafts:     make(map[*hostState]draft),
		joined:     make(map[*hostState][]*entryRec),
		addrOps:    make(map[netip.Addr]*holderChanges),
		problems:   newProblemSet(),
		gen:        1,
	}
	e.allocChanged = true // allocate once, even for no host
	if e.allocating {
		e.reserved.inPool = c.pool
		if e.reserved.inPool == nil {
			e.reserved.inPool = func(netip.Prefix) bool { return true }
		}
	}
	for i, z := range c.zones {
		e.reverse = e.reverse || dns.IsSubDomain("arpa.", z)
		e.names.set(z, &node{zone: uint8(i), apex: true, gen: e.gen})
	}
	if zi, ok := e.zoneOf(c.ns.name); ok && len(c.ns.addrs) > 0 {
		e.glue = &hostInfo{name: c.ns.name}
		for _, a := range c.ns.addrs {
			e.glue.addrs = append(e.glue.addrs, a)
			e.glue.origins = append(e.glue.origins, fromSpec)
		}
		e.ref(c.ns.name, zi, 1)
		e.edit(c.ns.name, zi).setHost(e.glue)
	}
	return e
}

// setUnreadable replaces the input of one source that is not even an entry.
func (e *engine) setUnreadable(source int, problems []Problem) {
	if e.unreadable == nil {
		e.unreadable = make(map[int][]Problem)
	}
	owner := e.unreadable[source]
	if slices.Equal(owner, problems) {
		return
	}
	e.problems.replace(&owner, problems)
	e.unreadable[source] = owner
}

// apply records changes; commit derives what they change.
func (e *engine) apply(changes []change) {
	for _, c := range changes {
		old := e.entries[c.id]
		if old != nil && c.entry != nil && old.e.same(c.entry) {
			old.e = c.entry // the source's latest object: the old one can go
			continue
		}
		if old != nil {
			e.removeEntry(old)
		}
		if c.entry != nil {
			e.addEntry(c.id, c.entry)
		}
	}
}

// statistics are the counts the metrics report.
func (e *engine) statistics() tableStats {
	s := e.stats
	s.hosts = len(e.hosts)
	return s
}

// setAlloc replaces the allocation (the persisted allocations changed).
func (e *engine) setAlloc(alloc allocFunc) {
	e.cfg.alloc = alloc
	e.allocChanged = true
}

func (e *engine) addEntry(id entryID, ent *Entry) {
	rec := &entryRec{id: id, e: ent}
	key := id.key
	e.entries[id] = rec
	e.reserve(ent, 1)
	if !inNamespaces(ent.Namespace, e.cfg.namespaces) {
		return
	}
	var problems []Problem
	defer func() { e.problems.replace(&rec.problems, problems) }()
	if len(ent.Hosts) == 0 {
		problems = append(problems, Problem{kindEntry, reasonNoHosts, key, "spec.hosts (empty)"})
		return
	}
	names, claimed, ps := e.ourHosts(ent, key)
	problems = ps
	if !claimed {
		rec.other = true
		e.stats.other++
		return
	}
	sc, p := e.cfg.export.scopeOf(ent)
	if p != nil {
		problems = append(problems, *p)
		return
	}
	rec.scope = sc
	spec, problems := parseAddresses(key, "spec.addresses", ent.Addresses, problems)
	rec.hasSpec = len(spec) > 0
	var status map[string][]string // canonical host → its status.addresses, read once per entry
	if !rec.hasSpec && len(ent.StatusAddresses) > 0 {
		status = make(map[string][]string)
		for _, sa := range ent.StatusAddresses {
			if n, err := hostname.Canonical(sa.Host); err == nil {
				status[n] = append(status[n], sa.Value)
			}
		}
		rec.status = make([][]netip.Addr, len(names))
	}
	for i, name := range names {
		if status != nil {
			rec.status[i], problems = parseAddresses(key, "status.addresses", status[name], problems)
		}
		h := e.hosts[name]
		if h == nil {
			zi, _ := e.zoneOf(name)
			h = &hostState{name: name, zone: zi, wildcard: strings.HasPrefix(name, "*.")}
			e.hosts[name] = h
		}
		// Sorted in once per commit (settleHolders): entries arrive in any order, and a host
		// shared by N entries must not cost N² to fill.
		e.joined[h] = append(e.joined[h], rec)
		rec.hosts = append(rec.hosts, h)
		e.dirty[h] = struct{}{}
	}
	if len(rec.hosts) > 16 {
		index := make(map[*hostState]int32, len(rec.hosts))
		for i, h := range rec.hosts {
			index[h] = int32(i)
		}
		e.wide[rec] = index
	}
	if len(names) > 0 {
		rec.served = true
		e.stats.entries++
	}
}

func (e *engine) removeEntry(rec *entryRec) {
	delete(e.entries, rec.id)
	e.reserve(rec.e, -1)
	e.problems.replace(&rec.problems, nil)
	if rec.other {
		e.stats.other--
	}
	if rec.served {
		e.stats.entries--
	}
	rec.gone = true
	delete(e.wide, rec)
	for _, h := range rec.hosts {
		e.dirty[h] = struct{}{}
	}
}

// reserve counts (or, d < 0, takes back) every address an entry declares.
func (e *engine) reserve(ent *Entry, d int32) {
	if !e.allocating {
		return
	}
	for _, a := range ent.Addresses {
		e.reserved.add(a, d)
	}
	for _, sa := range ent.StatusAddresses {
		e.reserved.add(sa.Value, d)
	}
}

// ourHosts returns the entry's hosts that lie in the zones, canonical, each once. An entry with
// a host in the zones is ours to judge: a problem is recorded for each of its hosts that cannot
// be served (invalid names too, whatever zone they meant). Valid hosts of other zones, such as
// an external API, are simply not ours; an entry with nothing else is not ours at all (claimed
// is false).
func (e *engine) ourHosts(ent *Entry, key string) (names []string, claimed bool, problems []Problem) {
	var invalid []Problem
	var seen map[string]struct{} // for entries with many hosts
	for _, raw := range ent.Hosts {
		name, err := hostname.Canonical(raw)
		if err != nil {
			invalid = append(invalid, Problem{kindHost, reasonInvalidHost, key, fmt.Sprintf("%q: %v", raw, err)})
			_, in := e.zoneOf(dns.Fqdn(raw))
			claimed = claimed || in
			continue
		}
		zi, ok := e.zoneOf(name)
		if !ok {
			continue
		}
		claimed = true
		switch name {
		case e.cfg.zones[zi]:
			problems = append(problems, Problem{kindHost, reasonInvalidHost, key, fmt.Sprintf("%q: is the zone apex", raw)})
		case e.cfg.ns.name:
			problems = append(problems, Problem{kindHost, reasonInvalidHost, key, fmt.Sprintf("%q: is the zones' name server", raw)})
		default:
			if len(names) > 16 && seen == nil {
				seen = make(map[string]struct{}, len(ent.Hosts))
				for _, n := range names {
					seen[n] = struct{}{}
				}
			}
			if _, dup := seen[name]; dup || seen == nil && slices.Contains(names, name) {
				continue
			}
			names = append(names, name)
			if seen != nil {
				seen[name] = struct{}{}
			}
		}
	}
	if claimed {
		problems = append(problems, invalid...)
	}
	return names, claimed, problems
}

// commit derives what the changes since the last commit change and returns the new
// generation, or nil when no answer changed (then the serial stays).
func (e *engine) commit(serial func() uint32) *Table {
	for h := range e.dirty {
		e.derive(h)
	}
	if !e.deadline.IsZero() && !e.clock().Before(e.deadline) {
		e.allocChanged = true // a pending host is overdue
	}
	if reservationsChanged := e.reserved.settle(); e.allocating && (e.wantsChanged || reservationsChanged || e.allocChanged) {
		e.allocate()
	}
	for h := range e.dirty {
		e.finish(h)
	}
	for a, c := range e.addrOps {
		e.settleAddress(a, c)
	}
	// Cleared maps keep their room: after a bulk load, start small again.
	e.dirty, e.drafts, e.joined, e.addrOps = emptied(e.dirty), emptied(e.drafts), emptied(e.joined), emptied(e.addrOps)
	e.linkWildcards()
	e.problems.logNew()
	if e.published && len(e.changed) == 0 && !e.conflictsChanged {
		return nil
	}
	return e.publish(serial())
}

// derive recomputes a host from its entries, oldest first: its addresses (the first entry's
// first), ports, and whether it wants a VIP.
func (e *engine) derive(h *hostState) {
	e.settleHolders(h)
	var d draft
	wants := false
	if len(h.holders) > 0 {
		info := &hostInfo{name: h.name}
		optOut := false
		var seen map[netip.Addr]struct{} // for hosts with many addresses
		v4, v6 := 0, 0
		add := func(a netip.Addr, org origin) {
			if seen == nil && len(info.addrs) >= 16 {
				seen = make(map[netip.Addr]struct{})
				for _, x := range info.addrs {
					seen[x] = struct{}{}
				}
			}
			if _, dup := seen[a]; dup || seen == nil && slices.Contains(info.addrs, a) {
				return
			}
			family := &v6
			if a.Is4() {
				family = &v4
			}
			if *family == maxAddressesPerHost {
				d.dropped++
				return
			}
			*family++
			info.addrs = append(info.addrs, a)
			info.origins = append(info.origins, org)
			if seen != nil {
				seen[a] = struct{}{}
			}
		}
		answered, shadowed := e.scopes(h)
		for _, rec := range h.holders {
			if shadowed[rec.scope] {
				d.shadowed = append(d.shadowed, rec)
				continue
			}
			if len(info.entries) < maxFactsPerKind {
				info.entries = append(info.entries, rec.id.key)
			}
			info.nEntries++
			optOut = optOut || rec.e.Labels[optOutLabel] == "false"
			e.declared(rec, h, add)
			info.addPorts(rec.e.Ports)
		}
		if len(h.holders) == 1 && slices.Equal(info.ports, h.holders[0].e.Ports) {
			info.ports = h.holders[0].e.Ports // share the cache's slice
		}
		if len(d.shadowed) > 0 {
			info.conflict = &scopeConflict{answered: answered, n: len(d.shadowed)}
			for _, rec := range d.shadowed[:min(len(d.shadowed), maxFactsPerKind)] {
				info.conflict.entries = append(info.conflict.entries, rec.id.key+" (exportTo "+rec.scope.String()+")")
			}
		}
		d.info = info
		wants = e.allocating && len(info.addrs) == 0 && !optOut && !h.wildcard
	}
	e.drafts[h] = d
	if wants != (h.vip != nil) || wants && e.keyOf(h) != h.key {
		e.wantsChanged = true
	}
	if wants {
		if h.vip == nil {
			h.vip = &hostVIP{}
		}
		e.wants[h] = struct{}{}
	} else {
		delete(e.wants, h)
		h.vip = nil
	}
}

// declared calls add with each address an entry declares for h: its spec.addresses, or else
// the status.addresses Istio wrote for h.
func (e *engine) declared(rec *entryRec, h *hostState, add func(netip.Addr, origin)) {
	switch {
	case rec.hasSpec:
		for _, s := range rec.e.Addresses {
			if a, _, err := parseAddress(s); err == nil {
				add(a, fromSpec)
			}
		}
	case rec.status != nil:
		for _, a := range rec.status[e.indexOf(rec, h)] {
			add(a, fromStatus)
		}
	}
}

// scopes settles a host whose entries have different scopes. Where they declare different
// addresses, one scope is answered: mesh-wide if an entry of that scope declares addresses,
// else the scope of the oldest entry that declares some. Every other scope that declares other
// addresses is shadowed: its entries add nothing to the host. Entries that declare no address
// never conflict. Hosts of one scope, the common case, cost one pass and no allocation.
func (e *engine) scopes(h *hostState) (answered scope, shadowed map[scope]bool) {
	first := h.holders[0].scope
	mixed := false
	for _, rec := range h.holders[1:] {
		if rec.scope != first {
			mixed = true
			break
		}
	}
	if !mixed {
		return first, nil
	}
	sets := make(map[scope]map[netip.Addr]struct{})
	var oldest, mesh *scope
	for _, rec := range h.holders {
		e.declared(rec, h, func(a netip.Addr, _ origin) {
			set := sets[rec.scope]
			if set == nil {
				set = make(map[netip.Addr]struct{})
				sets[rec.scope] = set
			}
			set[a] = struct{}{}
		})
		if sets[rec.scope] != nil {
			if oldest == nil {
				oldest = &rec.scope
			}
			if mesh == nil && rec.scope == meshScope {
				mesh = &rec.scope
			}
		}
	}
	if oldest == nil {
		return first, nil
	}
	answered = *cmp.Or(mesh, oldest)
	for sc, set := range sets {
		if sc != answered && !maps.EqualFunc(set, sets[answered], func(struct{}, struct{}) bool { return true }) {
			if shadowed == nil {
				shadowed = make(map[scope]bool)
			}
			shadowed[sc] = true
		}
	}
	return answered, shadowed
}

func (e *engine) clock() time.Time {
	if e.cfg.now != nil {
		return e.cfg.now()
	}
	return time.Now()
}

func emptied[K comparable, V any](m map[K]V) map[K]V {
	if len(m) > 1024 {
		return make(map[K]V)
	}
	clear(m)
	return m
}

// settleHolders brings a host's entries up to date: those removed since the last commit go, and
// those added are merged in, in entry order.
func (e *engine) settleHolders(h *hostState) {
	joined := e.joined[h]
	delete(e.joined, h)
	kept := h.holders[:0]
	for _, r := range h.holders {
		if !r.gone {
			kept = append(kept, r)
		}
	}
	added := joined[:0]
	for _, r := range joined {
		if !r.gone {
			added = append(added, r)
		}
	}
	slices.SortFunc(added, compareRecs)
	h.holders = merge(kept, added, compareRecs)
}

// merge merges sorted b into sorted a.
func merge[T any](a, b []T, cmp func(T, T) int) []T {
	if len(b) == 0 {
		return a
	}
	out := make([]T, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if cmp(b[0], a[0]) < 0 {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}

// addPorts adds an entry's named ports, once each, in the order the entries declare them.
func (d *hostInfo) addPorts(ports []Port) {
	for i, p := range ports {
		if len(d.ports) == maxPortsPerHost {
			d.morePort += len(ports) - i
			return
		}
		if p.Name != "" && !slices.Contains(d.ports, p) {
			d.ports = append(d.ports, p)
		}
	}
}

// allocate gives VIPs to the hosts that want one, in priority order. The allocation function
// sees every such host at once, so that what it gives is exactly what a table built from
// scratch gets (in deterministic mode, what every replica computes): an event costs
// O(hosts wanting a VIP) when it changes which hosts want one, their order, or a reservation
// inside the autoallocate ranges, and nothing otherwise. ServiceEntries with addresses, the
// common case, never pay it.
func (e *engine) allocate() {
	e.wantsChanged, e.allocChanged = false, false
	e.demandChanged = true
	type want struct {
		h   *hostState
		key hostKey
	}
	wants := make([]want, 0, len(e.wants))
	for h := range e.wants {
		wants = append(wants, want{h, e.keyOf(h)})
	}
	slices.SortFunc(wants, func(a, b want) int { return compareKeys(a.key, b.key) })
	hosts := make([]*hostState, len(wants))
	for i, w := range wants {
		hosts[i] = w.h
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.name
	}
	e.lastWant = names
	var vips map[string]vip.VIPs
	full := map[string]bool{}
	if len(names) > 0 {
		var exhausted []string
		vips, exhausted = e.cfg.alloc(names, e.reserved.run)
		for _, n := range exhausted {
			full[n] = true
		}
	}
	now := e.clock()
	e.deadline = time.Time{}
	for _, h := range hosts {
		v, ok := vips[h.name]
		// Persisted VIPs appear once the leader has written them: until then the answer is
		// unknown, and a negative one would be cached; but not for longer than pendingLimit.
		next := hostVIP{vips: v, pending: !ok && !full[h.name], full: full[h.name]}
		if next.pending {
			next.since = cmp.Or(h.vip.since, now)
			if deadline := next.since.Add(pendingLimit); !now.Before(deadline) {
				next.pending, next.overdue = false, true
			} else if e.deadline.IsZero() || deadline.Before(e.deadline) {
				e.deadline = deadline
			}
		}
		if next != *h.vip {
			*h.vip = next
			if _, ok := e.drafts[h]; !ok {
				e.derive(h)
			}
			e.dirty[h] = struct{}{}
		}
	}
}
