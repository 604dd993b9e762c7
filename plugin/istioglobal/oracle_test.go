package istioglobal

// The oracle: the from-scratch build the plugin used before its incremental engine, as the
// semantics the engine must answer exactly as (property_test.go). It is kept as it was but for
// its names and two deliberate changes that the engine makes too: a host listed twice in one
// entry counts once (its ports were counted twice towards "+N more", its status problems
// logged twice), and two entries of one namespace/name (from two sources, or twice in the
// files) are each named in the host's TXT and problems (one was dropped when they sorted next
// to each other).

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/hostname"
	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/miekg/dns"
)

// by oracleBuild and never modified after it is published, so readers need no lock.
type oTable struct {
	names    map[string]*oNode // lower-case FQDN → oNode; holds hosts, wildcards, ENTs and apexes
	zones    []*oZone
	serial   uint32
	problems []Problem
	entries  int            // ServiceEntries that contribute at least one name
	hosts    int            // names from ServiceEntries, wildcards included
	other    int            // ServiceEntries with no host in the zones: read, reserved, otherwise ignored
	capped   map[string]int // record type → names whose answer left records out

	reverse   bool         // a oZone is under .arpa: addresses get PTR records
	wants     []string     // hosts that need a VIP, oldest entry first: they declare no usable address
	reserved  oReservation // what no VIP may ever be
	allocated [2]int       // hosts served an allocated IPv4, IPv6 VIP
}

// oReservation is every address a ServiceEntry declares in spec or status, whether or not it is
// served here (another oZone, not exported, a range): none of them may become a VIP.
type oReservation struct {
	addrs    map[netip.Addr]struct{}
	prefixes []netip.Prefix // once sealed: sorted and disjoint, so has is a binary search
}

func (r *oReservation) add(values ...string) {
	for _, s := range values {
		if p, err := netip.ParsePrefix(s); err == nil {
			if !p.IsSingleIP() {
				r.prefixes = append(r.prefixes, p.Masked())
				continue
			}
			s = p.Addr().String()
		}
		if a, err := netip.ParseAddr(s); err == nil {
			if r.addrs == nil {
				r.addrs = make(map[netip.Addr]struct{})
			}
			r.addrs[a.Unmap().WithZone("")] = struct{}{}
		}
	}
}

// seal sorts the prefixes and drops those inside another: two prefixes either nest or are
// disjoint, so what remains is a sorted list of disjoint ranges.
func (r *oReservation) seal() {
	slices.SortFunc(r.prefixes, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	kept := r.prefixes[:0]
	for _, p := range r.prefixes {
		if len(kept) == 0 || !kept[len(kept)-1].Overlaps(p) {
			kept = append(kept, p)
		}
	}
	r.prefixes = kept
}

// run is vip.Reserved: the addresses from a on through the end of the range holding it, 1 for
// a reserved address, 0 for a free one; the oReservation must be sealed.
func (r *oReservation) run(a netip.Addr) uint64 {
	// The last range that starts at or before a is the only one that can hold it.
	i, _ := slices.BinarySearchFunc(r.prefixes, a, func(p netip.Prefix, a netip.Addr) int {
		if p.Addr().Compare(a) <= 0 {
			return -1
		}
		return 1
	})
	if i > 0 && r.prefixes[i-1].Contains(a) {
		return vip.Through(a, r.prefixes[i-1])
	}
	if _, ok := r.addrs[a]; ok {
		return 1
	}
	return 0
}

// oNode is a name that exists in a oZone. A oNode without records is an empty non-terminal, or
// a host whose entries carry no usable address: both answer NODATA.
type oNode struct {
	oZone    *oZone
	a, aaaa  []dns.RR // prebuilt; the owner is rewritten to the question's spelling
	srv      []dns.RR // at _PORT._tcp|_udp.HOST
	extra    []dns.RR // the SRV targets' or NS target's A and AAAA, for the additional section
	ptr      []dns.RR // at the reverse name of an address: the hosts that hold it
	txt      []dns.RR // what served the name: entries, addresses and their origin, ports
	wildcard *oNode   // the "*.<this name>" child, the source of synthesis below this name
	pending  bool     // wants a VIP that is not known yet: SERVFAIL, not a negative answer
	capped   uint8    // oCappedPTR | oCappedSRV | oCappedTXT: what its answers left out
}

type oZone struct {
	name    string
	apex    *oNode
	soa, ns []dns.RR
}

const (
	oCappedPTR uint8 = 1 << iota
	oCappedSRV
	oCappedTXT
)

// oHost accumulates what all entries say about one host while building.
type oHost struct {
	name     string
	oZone    *oZone
	addrs    []netip.Addr          // at most maxAddressesPerHost of each family, first come
	origin   map[netip.Addr]string // where each address came from: spec, status or allocated
	v4, v6   int                   // addresses of each family in addrs
	dropped  int                   // addresses beyond maxAddressesPerHost
	ports    []Port                // the named ports of its entries, without duplicates, at most maxPortsPerHost
	portSeen map[Port]bool
	morePort int      // port declarations beyond maxPortsPerHost
	entries  []string // namespace/name of every entry that serves the host, oldest first
	optOut   bool     // an entry carries the opt-out label: never allocate
	pending  bool     // wants a VIP that the allocator neither gave nor found no room for
	claims   []oClaim // what each entry says of the host, oldest first, until merged
	answered scope    // with shadowed: the scope whose addresses are answered
	shadowed []string // "namespace/name (exportTo ...)" of the entries of other scopes and addresses
}

// oClaim is what one entry says about one host.
type oClaim struct {
	key    string
	scope  scope
	addrs  []netip.Addr
	origin string
	ports  []Port
	optOut bool
}

// oracleBuild turns entries into a oTable for the zones of c, whose SOA records carry serial. Hosts
// that declare no usable address get the VIPs c.alloc gives them. It is a pure function of its
// arguments: the same entries always give the same table, whichever source they came from.
func oracleBuild(entries []Entry, c tableConfig, serial uint32) *oTable {
	t := &oTable{names: make(map[string]*oNode), serial: serial}
	for _, z := range c.zones {
		zn := &oZone{name: z}
		nz := newZone(z, c.ttl, serial, c.ns.name)
		zn.soa, zn.ns = nz.soa, nz.ns
		zn.apex = &oNode{oZone: zn}
		t.reverse = t.reverse || dns.IsSubDomain("arpa.", z)
		t.zones = append(t.zones, zn)
		t.names[z] = zn.apex
	}
	t.addNameServer(c.ns, c.ttl)

	sorted := entries
	if !slices.IsSortedFunc(sorted, compareEntries) {
		sorted = slices.Clone(entries)
		sortEntries(sorted)
	}

	hosts := make(map[string]*oHost)
	var order []*oHost
	for i := range sorted {
		e := &sorted[i]
		t.reserved.add(e.Addresses...)
		for _, sa := range e.StatusAddresses {
			t.reserved.add(sa.Value)
		}
		if !inNamespaces(e.Namespace, c.namespaces) {
			continue // reserves its addresses, serves nothing
		}
		if t.addEntry(e, hosts, &order, c) {
			t.entries++
		}
	}
	t.reserved.seal()
	for _, h := range order {
		t.merge(h)
	}

	t.allocate(order, c.alloc)
	holders := make(map[netip.Addr][]string)
	for _, h := range order {
		for _, a := range h.addrs {
			holders[a] = append(holders[a], h.name)
		}
	}
	for _, h := range order {
		t.addHost(h, c.ttl, holders)
	}
	t.hosts = len(order)
	for _, n := range t.names {
		for record, bit := range map[string]uint8{"ptr": oCappedPTR, "srv": oCappedSRV, "txt": oCappedTXT} {
			if n.capped&bit != 0 {
				if t.capped == nil {
					t.capped = make(map[string]int)
				}
				t.capped[record]++
			}
		}
	}
	return t
}

// addNameServer creates the NS target's oNode with its addresses, when it is a name of ours
// that has some, and gives every apex its glue. Without addresses it creates nothing, so that
// a wildcard of the oZone still covers the name.
func (t *oTable) addNameServer(ns nameServer, ttl uint32) {
	z := t.zoneOf(ns.name)
	if z == nil || len(ns.addrs) == 0 {
		return
	}
	n := t.ensure(ns.name, z)
	for _, a := range ns.addrs {
		if a.Is4() {
			n.a = append(n.a, &dns.A{Hdr: header(ns.name, dns.TypeA, ttl), A: a.AsSlice()})
		} else {
			n.aaaa = append(n.aaaa, &dns.AAAA{Hdr: header(ns.name, dns.TypeAAAA, ttl), AAAA: a.AsSlice()})
		}
	}
	glue := slices.Concat(n.a, n.aaaa)
	for _, zn := range t.zones {
		zn.apex.extra = glue
	}
}

// ourHosts returns the entry's hosts that lie in the zones, canonical. An entry with a host in
// the zones is ours to judge: a problem is recorded for each of its hosts that cannot be served
// (invalid names too, whatever oZone they meant). Valid hosts of other zones, such as an external
// API, are simply not ours; an entry with nothing else is not ours at all (claimed is false).
func (t *oTable) ourHosts(e *Entry, key, nsName string) (names []string, claimed bool) {
	var invalid []Problem
	for _, raw := range e.Hosts {
		name, err := hostname.Canonical(raw)
		if err != nil {
			p := Problem{Kind: kindHost, Reason: reasonInvalidHost, Entry: key, Detail: fmt.Sprintf("%q: %v", raw, err)}
			invalid = append(invalid, p)
			claimed = claimed || t.zoneOf(dns.Fqdn(raw)) != nil
			continue
		}
		z := t.zoneOf(name)
		if z == nil {
			continue
		}
		claimed = true
		switch name {
		case z.name:
			t.problem(kindHost, reasonInvalidHost, key, fmt.Sprintf("%q: is the zone apex", raw))
		case nsName:
			t.problem(kindHost, reasonInvalidHost, key, fmt.Sprintf("%q: is the zones' name server", raw))
		default:
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	if claimed {
		t.problems = append(t.problems, invalid...)
	}
	return names, claimed
}

// addEntry validates one entry and merges its hosts and addresses into hosts. It reports
// whether the entry contributes at least one name. An entry with no host in the zones costs
// only its reading: no problem is recorded for it, it is merely counted.
func (t *oTable) addEntry(e *Entry, hosts map[string]*oHost, order *[]*oHost, c tableConfig) bool {
	nsName := c.ns.name
	key := e.key()
	if len(e.Hosts) == 0 {
		t.problem(kindEntry, reasonNoHosts, key, "spec.hosts (empty)")
		return false
	}
	names, claimed := t.ourHosts(e, key, nsName)
	if !claimed {
		t.other++
		return false
	}
	sc, p := c.export.scopeOf(e)
	if p != nil {
		t.problems = append(t.problems, *p)
		return false
	}

	specAddrs := t.oParseAddresses(key, "spec.addresses", e.Addresses)
	var status map[string][]string // canonical host → its status.addresses, read once per entry
	if len(specAddrs) == 0 && len(e.StatusAddresses) > 0 {
		status = make(map[string][]string)
		for _, sa := range e.StatusAddresses {
			if n, err := hostname.Canonical(sa.Host); err == nil {
				status[n] = append(status[n], sa.Value)
			}
		}
	}
	for _, name := range names {
		h := hosts[name]
		if h == nil {
			h = &oHost{name: name, oZone: t.zoneOf(name), origin: make(map[netip.Addr]string)}
			hosts[name] = h
			*order = append(*order, h)
		}
		addrs, origin := specAddrs, "spec"
		if len(addrs) == 0 {
			addrs, origin = t.oParseAddresses(key, "status.addresses", status[name]), "status"
		}
		// Names are each once in an entry: see ourHosts.
		h.claims = append(h.claims, oClaim{key, sc, addrs, origin, e.Ports, e.Labels[optOutLabel] == "false"})
	}
	return len(names) > 0
}

// merge settles what the entries of a host say. Entries of one scope add up. Where scopes
// differ and declare different address sets, the mesh-wide scope's addresses are answered if
// it declares any, else those of the oldest entry's scope that declares some; the entries of
// every other scope with another address set are shadowed.
func (t *oTable) merge(h *oHost) {
	sets := map[scope][]netip.Addr{}
	var order []scope
	for _, c := range h.claims {
		if len(c.addrs) == 0 {
			continue
		}
		if _, ok := sets[c.scope]; !ok {
			order = append(order, c.scope)
		}
		for _, a := range c.addrs {
			if !slices.Contains(sets[c.scope], a) {
				sets[c.scope] = append(sets[c.scope], a)
			}
		}
	}
	if len(order) > 0 {
		h.answered = order[0]
		if _, ok := sets[meshScope]; ok {
			h.answered = meshScope
		}
	}
	same := func(a, b []netip.Addr) bool {
		if len(a) != len(b) {
			return false
		}
		for _, x := range a {
			if !slices.Contains(b, x) {
				return false
			}
		}
		return true
	}
	var shadowedKeys []string
	for _, c := range h.claims {
		if set, ok := sets[c.scope]; ok && c.scope != h.answered && !same(set, sets[h.answered]) {
			h.shadowed = append(h.shadowed, c.key+" (exportTo "+c.scope.String()+")")
			shadowedKeys = append(shadowedKeys, c.key)
			continue
		}
		h.entries = append(h.entries, c.key)
		h.optOut = h.optOut || c.optOut
		for _, a := range c.addrs {
			h.add(a, c.origin)
		}
		for i, p := range c.ports {
			if len(h.ports) == maxPortsPerHost {
				h.morePort += len(c.ports) - i
				break
			}
			h.addPort(p)
		}
	}
	if len(h.shadowed) > 0 {
		t.problem(kindHost, reasonScopeConflict, oEntryList(shadowedKeys),
			fmt.Sprintf("%s: declared with other addresses than the entries exported to %s, whose addresses are answered", h.name, h.answered))
	}
	h.claims = nil
}

// addPort adds a named port once, in the order the entries declare them.
func (h *oHost) addPort(p Port) {
	if p.Name == "" {
		return
	}
	if h.portSeen == nil {
		h.portSeen = make(map[Port]bool)
	}
	if !h.portSeen[p] {
		h.portSeen[p] = true
		h.ports = append(h.ports, p)
	}
}

// allocate adds VIPs to the hosts that declare no usable address, are no wildcard and have not
// opted out.
func (t *oTable) allocate(order []*oHost, alloc allocFunc) {
	byName := make(map[string]*oHost)
	for _, h := range order {
		if len(h.addrs) == 0 && !h.optOut && !strings.HasPrefix(h.name, "*.") {
			t.wants = append(t.wants, h.name)
			byName[h.name] = h
		}
	}
	if alloc == nil || len(t.wants) == 0 {
		return
	}
	vips, exhausted := alloc(t.wants, t.reserved.run)
	full := make(map[string]bool, len(exhausted))
	for _, name := range exhausted {
		full[name] = true
	}
	for _, name := range t.wants {
		v, ok := vips[name]
		h := byName[name]
		// Persisted VIPs appear once the leader has written them: until then the answer is
		// unknown, and a negative one would be cached.
		h.pending = !ok && !full[name]
		for i, a := range []netip.Addr{v.V4, v.V6} {
			if a.IsValid() {
				h.add(a, "allocated")
				t.allocated[i]++
			}
		}
	}
	for _, name := range exhausted {
		t.problem(kindAddress, reasonExhausted, oEntryList(byName[name].entries),
			fmt.Sprintf("no VIP for %s: the autoallocate ranges are full", name))
	}
}

// oParseAddresses keeps the single addresses among raw (IPs and /32 or /128 CIDRs) and
// records a problem for every other value.
func (t *oTable) oParseAddresses(key, field string, raw []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range raw {
		a, reason, err := parseAddress(s)
		if err != nil {
			t.problem(kindAddress, reason, key, fmt.Sprintf("%s %q: %v", field, s, err))
			continue
		}
		out = append(out, a)
	}
	return out
}

// add adds an address once, unless the host has maxAddressesPerHost of its family already.
func (h *oHost) add(a netip.Addr, origin string) {
	if _, dup := h.origin[a]; dup {
		return
	}
	family := &h.v6
	if a.Is4() {
		family = &h.v4
	}
	if *family == maxAddressesPerHost {
		h.dropped++
		return
	}
	*family++
	h.origin[a] = origin
	h.addrs = append(h.addrs, a)
}

// addHost creates the oNode for a host, its ancestors up to the apex as empty non-terminals,
// and, for a wildcard, the link from its parent that lookups synthesize from; then its SRV,
// PTR and TXT records. holders are the hosts that hold each address, oldest first.
func (t *oTable) addHost(h *oHost, ttl uint32, holders map[netip.Addr][]string) {
	n := t.ensure(h.name, h.oZone)
	n.pending = h.pending
	for _, a := range h.addrs {
		if a.Is4() {
			n.a = append(n.a, &dns.A{Hdr: header(h.name, dns.TypeA, ttl), A: a.AsSlice()})
		} else {
			n.aaaa = append(n.aaaa, &dns.AAAA{Hdr: header(h.name, dns.TypeAAAA, ttl), AAAA: a.AsSlice()})
		}
	}
	if h.dropped > 0 {
		t.problem(kindAddress, reasonTooMany, oEntryList(h.entries),
			fmt.Sprintf("%d of %d addresses of %s (limit %d per family)", h.dropped, len(h.addrs)+h.dropped, h.name, maxAddressesPerHost))
	}
	if parent, ok := strings.CutPrefix(h.name, "*."); ok {
		t.ensure(parent, h.oZone).wildcard = n
	} else {
		t.addSRV(h, n, ttl)
		if t.reverse {
			t.addPTR(h, ttl, holders)
		}
	}
	if h.morePort > 0 {
		n.capped |= oCappedSRV // ports beyond maxPortsPerHost have no SRV record
	}
	txt, capped := oFacts(h, holders)
	if capped {
		n.capped |= oCappedTXT
	}
	n.txt = []dns.RR{&dns.TXT{Hdr: header(h.name, dns.TypeTXT, ttl), Txt: txt}}
}

// addSRV adds _NAME._tcp.HOST (or _udp) for each named port, pointing at the host, whose
// addresses ride along in the additional section. A wildcard has no name to put them under.
func (t *oTable) addSRV(h *oHost, n *oNode, ttl uint32) {
	if len(h.ports) == 0 {
		return
	}
	extra := slices.Concat(n.a, n.aaaa)
	tooLong := 0
	for _, p := range h.ports {
		label := "_" + strings.ToLower(p.Name)
		if hostname.CheckLabel(label) != nil || p.Number == 0 || p.Number > 65535 {
			continue // Istio validates both; a file may not have
		}
		proto := "._tcp."
		if strings.EqualFold(p.Protocol, "UDP") {
			proto = "._udp."
		}
		name := label + proto + h.name
		if _, ok := dns.IsDomainName(name); !ok {
			tooLong++
			continue
		}
		sn := t.ensure(name, h.oZone)
		sn.srv = append(sn.srv, &dns.SRV{Hdr: header(name, dns.TypeSRV, ttl), Priority: 0, Weight: 100, Port: uint16(p.Number), Target: h.name})
		sn.extra = extra
	}
	if tooLong > 0 {
		t.problem(kindPort, reasonInvalidHost, oEntryList(h.entries),
			fmt.Sprintf("%d SRV names for ports of %s: longer than a DNS name can be", tooLong, h.name))
	}
}

// addPTR adds the reverse name of each of the host's addresses that lies in one of the zones.
// Hosts are added oldest first; the first maxPTRPerAddress holders of an address are named.
func (t *oTable) addPTR(h *oHost, ttl uint32, holders map[netip.Addr][]string) {
	for _, a := range h.addrs {
		rev, err := dns.ReverseAddr(a.String())
		if err != nil {
			continue
		}
		z := t.zoneOf(rev)
		if z == nil {
			continue
		}
		pn := t.ensure(rev, z)
		if len(pn.ptr) == maxPTRPerAddress {
			pn.capped |= oCappedPTR
			continue
		}
		pn.ptr = append(pn.ptr, &dns.PTR{Hdr: header(rev, dns.TypePTR, ttl), Ptr: h.name})
	}
}

// oEntryList names the entries of a problem: the first few, and how many more.
func oEntryList(entries []string) string {
	if len(entries) <= maxEntriesNamed {
		return strings.Join(entries, ",")
	}
	return strings.Join(entries[:maxEntriesNamed], ",") + fmt.Sprintf(" and %d more", len(entries)-maxEntriesNamed)
}

// oFacts are the TXT strings that tell who serves a name, one fact a string: the entries, each
// address and where it came from, the ports, and addresses another host holds too. Each kind
// lists at most maxFactsPerKind, then "KIND=+N more"; capped reports whether any did.
func oFacts(h *oHost, holders map[netip.Addr][]string) (out []string, capped bool) {
	var f oFactList
	f.kind("serviceentry", len(h.entries), func(i int) string { return h.entries[i] })
	f.kind("address", len(h.addrs), func(i int) string { return h.addrs[i].String() + " (" + h.origin[h.addrs[i]] + ")" })
	f.kind("port", len(h.ports), func(i int) string {
		p := h.ports[i]
		return p.Name + "/" + strconv.FormatUint(uint64(p.Number), 10) + "/" + strings.ToUpper(p.Protocol)
	})
	f.more("port", h.morePort)
	if len(h.shadowed) > 0 {
		f.add("scope=" + h.answered.String() + " answered")
		f.kind("shadowed", len(h.shadowed), func(i int) string { return h.shadowed[i] })
	}
	// Conflicts: for each address, the other hosts holding it, in holder order. Only the
	// first few of each address are looked at, whatever the number of holders.
	listed, total := 0, 0
	for _, a := range h.addrs {
		others := holders[a]
		total += len(others) - 1
		for _, other := range others {
			if listed == maxFactsPerKind {
				break
			}
			if other != h.name {
				f.add("conflict=" + a.String() + " also " + strings.TrimSuffix(other, "."))
				listed++
			}
		}
	}
	f.more("conflict", total-listed)
	return f.out, f.capped
}

// oFactList collects TXT strings, each at most the 255 octets one string holds.
type oFactList struct {
	out    []string
	capped bool
}

func (f *oFactList) add(s string) {
	if len(s) > 255 {
		s = s[:255]
	}
	f.out = append(f.out, s)
}

// kind adds "KIND=VALUE" for the first maxFactsPerKind of n values, then how many more exist.
func (f *oFactList) kind(kind string, n int, value func(int) string) {
	for i := range min(n, maxFactsPerKind) {
		f.add(kind + "=" + value(i))
	}
	f.more(kind, n-maxFactsPerKind)
}

func (f *oFactList) more(kind string, n int) {
	if n > 0 {
		f.add(kind + "=+" + strconv.Itoa(n) + " more")
		f.capped = true
	}
}

// ensure returns the oNode for name, creating it and every missing ancestor below the apex.
func (t *oTable) ensure(name string, z *oZone) *oNode {
	n, ok := t.names[name]
	if ok {
		return n
	}
	n = &oNode{oZone: z}
	t.names[name] = n
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		ancestor := name[off:]
		if _, ok := t.names[ancestor]; ok {
			break // it, and so its ancestors, exist already
		}
		t.names[ancestor] = &oNode{oZone: z}
	}
	return n
}

// zoneOf returns the most specific oZone that contains name (either case), or nil.
func (t *oTable) zoneOf(name string) *oZone {
	var best *oZone
	for _, z := range t.zones {
		if inZone(name, z.name) && (best == nil || len(z.name) > len(best.name)) {
			best = z
		}
	}
	return best
}

func (t *oTable) problem(kind, reason, entry, detail string) {
	t.problems = append(t.problems, Problem{Kind: kind, Reason: reason, Entry: entry, Detail: detail})
}

// find is lookup of a name in any case. It lower-cases the name on its own frame, which is
// gone before the reply is written: see ServeDNS.
//
//go:noinline
func (t *oTable) find(name string) (n *oNode, z *oZone, exact, folded bool) {
	var buf [nameBufSize]byte
	qname, folded := lower(&buf, name)
	n, z, exact = t.lookup(qname)
	return n, z, exact, folded
}

// lookup finds the oNode that answers qname (lower case, inside a oZone of the table): the name
// itself (exact), else the wildcard child of its closest encloser (RFC 4592). When the name
// does not exist it returns a nil oNode and the closest encloser's oZone.
func (t *oTable) lookup(qname []byte) (n *oNode, z *oZone, exact bool) {
	if n, ok := t.names[string(qname)]; ok {
		return n, n.oZone, true
	}
	for off, end := nextLabel(qname, 0); !end; off, end = nextLabel(qname, off) {
		if ce, ok := t.names[string(qname[off:])]; ok {
			return ce.wildcard, ce.oZone, false
		}
	}
	return nil, nil, false
}

// sortEntries orders entries as the engine does (compareEntryPtrs); stable, so that entries of
// one namespace/name keep their sources' order.
func sortEntries(entries []Entry) { slices.SortStableFunc(entries, compareEntries) }

func compareEntries(a, b Entry) int { return compareEntryPtrs(&a, &b) }
