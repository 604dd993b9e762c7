package istioglobal

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/hostname"
	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/miekg/dns"
)

// The engine keeps the table up to date one change at a time: an event costs work in
// proportion to the entry and the names it touches, never to the table.
//
// Structure, and why: the names of a generation live in a sharded copy-on-write map (cowmap.go):
// Go maps, 2048 of them, each copied the first time a generation changes it. A query costs
// what a Go map lookup costs (one hash of the name, one probe), which a persistent trie or
// HAMT from a library would not match (several pointer hops and an interface per level), and
// a change copies a few shards of ~200 entries at 100k ServiceEntries. Nodes are immutable
// once published; the engine copies the node it changes (edit) and the generation shares the
// rest. What only the engine needs (which entries hold a host, which hosts hold an address,
// the reservations) lives in plain maps it alone touches.
//
// What an event derives, and from what:
//   - an entry's hosts are recomputed from all the entries that hold them, in entry order
//     (oldest first): a host's cost is the number of its entries;
//   - an address's holders are kept in host order (the order of each host's oldest entry), so a
//     reverse name and the conflicts of its holders are recomputed from one list;
//   - ENTs are reference counts on every ancestor of a name that is more than an ENT;
//   - TXT facts are built when asked for, from the host and the generation's conflicts, so a
//     host joining a shared address changes one list, not every holder's record;
//   - VIPs: see allocate.

// tableConfig is what the engine takes besides the entries: the plugin's configuration.
type tableConfig struct {
	zones []string // lower-case FQDNs
	ttl   uint32
	ns    nameServer
	alloc allocFunc               // nil: autoallocate off
	pool  func(netip.Prefix) bool // whether a prefix overlaps the autoallocate ranges; nil: any may
}

// nameServer is the target of every zone's NS record and SOA MNAME. With addresses, it is a
// name of ours and answers them (and rides along as glue); without, it resolves elsewhere.
type nameServer struct {
	name  string // FQDN
	addrs []netip.Addr
}

// allocFunc gives VIPs to the hosts that want them (in priority order), never a reserved
// address; it returns the hosts it could not serve. vip.Allocator.Deterministic is one; the
// persisted allocations are another.
type allocFunc func(hosts []string, reserved func(netip.Addr) bool) (map[string]vip.VIPs, []string)

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
	hasSpec  bool // spec.addresses has a usable address
	served   bool // contributes at least one name
	other    bool // has no host in the zones
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
	pending bool // the persisted allocations do not hold it yet
	full    bool // the ranges have no room for it
}

// draft is a host derived from its entries in this commit, before VIPs.
type draft struct {
	info    *hostInfo // nil: no entry holds the host any more
	dropped int       // addresses beyond maxAddressesPerHost
}

// engine is the writer of tables. It is not safe for concurrent use: the builder owns it.
type engine struct {
	cfg        tableConfig
	allocating bool
	reverse    bool // a zone is under .arpa: addresses get PTR records
	glue       *hostInfo

	entries  map[entryID]*entryRec
	hosts    map[string]*hostState
	holders  map[netip.Addr][]*hostState // in host order
	reserved reservation
	wants    map[*hostState]struct{}
	lastWant []string // the hosts that wanted VIPs at the last allocation, in priority order

	names     *cowWriter[string, *node]
	conflicts *cowWriter[netip.Addr, *holderList]
	gen       uint32 // of the generation being built
	published bool
	stats     tableStats

	dirty            map[*hostState]struct{}
	drafts           map[*hostState]draft
	dirtyAddrs       map[netip.Addr]struct{}
	changed          []nameChange // names the generation changed, with their last published node
	conflictsChanged bool
	wantsChanged     bool
	allocChanged     bool
	demandChanged    bool

	problems   problemSet
	unreadable map[int][]Problem // by source
	journal    journal
}

func newEngine(c tableConfig) *engine {
	e := &engine{
		cfg:        c,
		allocating: c.alloc != nil,
		entries:    make(map[entryID]*entryRec),
		hosts:      make(map[string]*hostState),
		holders:    make(map[netip.Addr][]*hostState),
		wants:      make(map[*hostState]struct{}),
		names:      newCOWWriter[string, *node](hashName),
		conflicts:  newCOWWriter[netip.Addr, *holderList](hashAddr),
		dirty:      make(map[*hostState]struct{}),
		drafts:     make(map[*hostState]draft),
		dirtyAddrs: make(map[netip.Addr]struct{}),
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
		e.edit(c.ns.name, zi).host = e.glue
	}
	return e
}

// setUnreadable replaces the input of one source that is not even an entry.
func (e *engine) setUnreadable(source int, problems []Problem) {
	if e.unreadable == nil {
		e.unreadable = make(map[int][]Problem)
	}
	owner := e.unreadable[source]
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
	if !ent.exported() {
		problems = append(problems, Problem{kindEntry, reasonNotExported, key, fmt.Sprintf("exportTo %q", ent.ExportTo)})
		return
	}
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
		i, _ := slices.BinarySearchFunc(h.holders, rec, compareRecs)
		h.holders = slices.Insert(h.holders, i, rec)
		rec.hosts = append(rec.hosts, h)
		e.dirty[h] = struct{}{}
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
	for _, h := range rec.hosts {
		i, _ := slices.BinarySearchFunc(h.holders, rec, compareRecs)
		for h.holders[i] != rec {
			i++ // an update of rec sorts as rec does
		}
		h.holders = slices.Delete(h.holders, i, i+1)
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
			if !slices.Contains(names, name) {
				names = append(names, name)
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
	if e.allocating && (e.wantsChanged || e.reserved.changed || e.allocChanged) {
		e.allocate()
	}
	for h := range e.dirty {
		e.finish(h)
	}
	for a := range e.dirtyAddrs {
		e.settleAddress(a)
	}
	// Cleared maps keep their room: after a bulk load, start small again.
	e.dirty, e.drafts, e.dirtyAddrs = emptied(e.dirty), emptied(e.drafts), emptied(e.dirtyAddrs)
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
	var d draft
	wants := false
	if len(h.holders) > 0 {
		info := &hostInfo{name: h.name, nEntries: len(h.holders)}
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
		for _, rec := range h.holders {
			if len(info.entries) < maxFactsPerKind {
				info.entries = append(info.entries, rec.id.key)
			}
			optOut = optOut || rec.e.Labels[optOutLabel] == "false"
			switch {
			case rec.hasSpec:
				for _, s := range rec.e.Addresses {
					if a, _, err := parseAddress(s); err == nil {
						add(a, fromSpec)
					}
				}
			case rec.status != nil:
				for _, a := range rec.status[slices.Index(rec.hosts, h)] {
					add(a, fromStatus)
				}
			}
			info.addPorts(rec.e.Ports)
		}
		if len(h.holders) == 1 && slices.Equal(info.ports, h.holders[0].e.Ports) {
			info.ports = h.holders[0].e.Ports // share the cache's slice
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

func emptied[K comparable, V any](m map[K]V) map[K]V {
	if len(m) > 1024 {
		return make(map[K]V)
	}
	clear(m)
	return m
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
	e.wantsChanged, e.reserved.changed, e.allocChanged = false, false, false
	e.demandChanged = true
	hosts := make([]*hostState, 0, len(e.wants))
	for h := range e.wants {
		hosts = append(hosts, h)
	}
	slices.SortFunc(hosts, func(a, b *hostState) int { return compareKeys(e.keyOf(a), e.keyOf(b)) })
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.name
	}
	e.lastWant = names
	var vips map[string]vip.VIPs
	full := map[string]bool{}
	if len(names) > 0 {
		var exhausted []string
		vips, exhausted = e.cfg.alloc(names, e.reserved.has)
		for _, n := range exhausted {
			full[n] = true
		}
	}
	for _, h := range hosts {
		v, ok := vips[h.name]
		// Persisted VIPs appear once the leader has written them: until then the answer is
		// unknown, and a negative one would be cached.
		pending := !ok && !full[h.name]
		if next := (hostVIP{vips: v, pending: pending, full: full[h.name]}); next != *h.vip {
			*h.vip = next
			if _, ok := e.drafts[h]; !ok {
				e.derive(h)
			}
			e.dirty[h] = struct{}{}
		}
	}
}
