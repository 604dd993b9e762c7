package istioglobal

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// maxAddressesPerHost bounds one host's A (and AAAA) RRset. Istio allows 256 addresses per
// ServiceEntry; several entries for one host could otherwise build an answer that no longer
// fits a 64 KiB TCP message.
const maxAddressesPerHost = 256

// Table is an immutable snapshot of every name the plugin serves. It is built once per change
// by build and never modified after it is published, so readers need no lock.
type Table struct {
	names    map[string]*node // lower-case FQDN → node; holds hosts, wildcards, ENTs and apexes
	zones    []*zone
	built    time.Time
	problems []Problem
	entries  int // ServiceEntries that contribute at least one name
	hosts    int // names from ServiceEntries, wildcards included

	reverse   bool        // a zone is under .arpa: addresses get PTR records
	wants     []string    // hosts that need a VIP, oldest entry first: they declare no usable address
	reserved  reservation // what no VIP may ever be
	allocated [2]int      // hosts served an allocated IPv4, IPv6 VIP
}

// allocFunc gives VIPs to the hosts that want them (in priority order), never a reserved
// address; it returns the hosts it could not serve. allocator.deterministic is one; the
// persisted allocations are another.
type allocFunc func(hosts []string, reserved func(netip.Addr) bool) (map[string]VIPs, []string)

// optOutLabel is Istio's label for an entry that must not get an auto-allocated address.
const optOutLabel = "networking.istio.io/enable-autoallocate-ip"

// reservation is every address a ServiceEntry declares in spec or status, whether or not it is
// served here (another zone, not exported, a range): none of them may become a VIP.
type reservation struct {
	addrs    map[netip.Addr]struct{}
	prefixes []netip.Prefix
}

func (r *reservation) add(values ...string) {
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

func (r *reservation) has(a netip.Addr) bool {
	if _, ok := r.addrs[a]; ok {
		return true
	}
	for _, p := range r.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// node is a name that exists in a zone. A node without records is an empty non-terminal, or
// a host whose entries carry no usable address: both answer NODATA.
type node struct {
	zone     *zone
	a, aaaa  []dns.RR // prebuilt; the owner is rewritten to the question's spelling
	srv      []dns.RR // at _PORT._tcp|_udp.HOST
	extra    []dns.RR // the SRV targets' A and AAAA, for the additional section
	ptr      []dns.RR // at the reverse name of an address: every host that holds it
	txt      []dns.RR // what served the name: entries, addresses and their origin, ports
	wildcard *node    // the "*.<this name>" child, the source of synthesis below this name
	pending  bool     // wants a VIP that is not known yet: SERVFAIL, not a negative answer
}

type zone struct {
	name    string
	apex    *node
	soa, ns []dns.RR
}

// hostData accumulates what all entries say about one host while building.
type hostData struct {
	name    string
	zone    *zone
	addrs   []netip.Addr
	origin  map[netip.Addr]string // where each address came from: spec, status or allocated
	ports   []Port                // the named ports of its entries, without duplicates
	entries []string              // namespace/name of every entry that serves the host, oldest first
	optOut  bool                  // an entry carries the opt-out label: never allocate
	pending bool                  // wants a VIP that the allocator neither gave nor found no room for
}

// build turns entries into a Table for zones (lower-case FQDNs). Hosts that declare no usable
// address get the VIPs alloc gives them (none when alloc is nil). It is a pure function of its
// arguments: the same entries always give the same table, whichever source they came from.
func build(entries []Entry, zoneNames []string, ttl uint32, now time.Time, alloc allocFunc) *Table {
	t := &Table{names: make(map[string]*node), built: now}
	for _, z := range zoneNames {
		zn := newZone(z, ttl, now)
		zn.apex = &node{zone: zn}
		t.reverse = t.reverse || dns.IsSubDomain("arpa.", z)
		t.zones = append(t.zones, zn)
		t.names[z] = zn.apex
	}

	sorted := slices.Clone(entries)
	sortEntries(sorted)

	hosts := make(map[string]*hostData)
	var order []*hostData
	for i := range sorted {
		e := &sorted[i]
		t.reserved.add(e.Addresses...)
		for _, sa := range e.StatusAddresses {
			t.reserved.add(sa.Value)
		}
		if t.addEntry(e, hosts, &order) {
			t.entries++
		}
	}

	t.allocate(order, alloc)
	holders := make(map[netip.Addr][]string)
	for _, h := range order {
		for _, a := range h.addrs {
			holders[a] = append(holders[a], h.name)
		}
	}
	for _, h := range order {
		t.addHost(h, ttl, holders)
	}
	t.hosts = len(order)
	return t
}

// addEntry validates one entry and merges its hosts and addresses into hosts. It reports
// whether the entry contributes at least one name.
func (t *Table) addEntry(e *Entry, hosts map[string]*hostData, order *[]*hostData) bool {
	key := e.key()
	if !e.exported() {
		t.problem(kindEntry, reasonNotExported, key, fmt.Sprintf("exportTo %q", e.ExportTo))
		return false
	}
	if len(e.Hosts) == 0 {
		t.problem(kindEntry, reasonNoHosts, key, "spec.hosts (empty)")
		return false
	}

	specAddrs := t.parseAddresses(key, "spec.addresses", e.Addresses)
	served := false
	for _, raw := range e.Hosts {
		name, err := canonicalHost(raw)
		if err != nil {
			t.problem(kindHost, reasonInvalidHost, key, fmt.Sprintf("%q: %v", raw, err))
			continue
		}
		z := t.zoneOf(name)
		if z == nil {
			continue // another zone's host, such as an external API: not ours to answer
		}
		if name == z.name {
			t.problem(kindHost, reasonInvalidHost, key, fmt.Sprintf("%q: is the zone apex", raw))
			continue
		}
		h := hosts[name]
		if h == nil {
			h = &hostData{name: name, zone: z, origin: make(map[netip.Addr]string)}
			hosts[name] = h
			*order = append(*order, h)
		}
		served = true
		if !slices.Contains(h.entries, key) {
			h.entries = append(h.entries, key)
		}
		h.optOut = h.optOut || e.Labels[optOutLabel] == "false"

		addrs, origin := specAddrs, "spec"
		if len(addrs) == 0 {
			addrs, origin = t.statusAddresses(e, key, name), "status"
		}
		for _, a := range addrs {
			h.add(a, origin)
		}
		for _, p := range e.Ports {
			if p.Name != "" && !slices.Contains(h.ports, p) {
				h.ports = append(h.ports, p)
			}
		}
	}
	return served
}

// allocate adds VIPs to the hosts that declare no usable address, are no wildcard and have not
// opted out.
func (t *Table) allocate(order []*hostData, alloc allocFunc) {
	byName := make(map[string]*hostData)
	for _, h := range order {
		if len(h.addrs) == 0 && !h.optOut && !strings.HasPrefix(h.name, "*.") {
			t.wants = append(t.wants, h.name)
			byName[h.name] = h
		}
	}
	if alloc == nil || len(t.wants) == 0 {
		return
	}
	vips, exhausted := alloc(t.wants, t.reserved.has)
	for _, name := range t.wants {
		v, ok := vips[name]
		h := byName[name]
		// Persisted VIPs appear once the leader has written them: until then the answer is
		// unknown, and a negative one would be cached.
		h.pending = !ok && !slices.Contains(exhausted, name)
		for i, a := range []netip.Addr{v.V4, v.V6} {
			if a.IsValid() {
				h.add(a, "allocated")
				t.allocated[i]++
			}
		}
	}
	for _, name := range exhausted {
		t.problem(kindAddress, reasonExhausted, strings.Join(byName[name].entries, ","),
			fmt.Sprintf("no VIP for %s: the autoallocate ranges are full", name))
	}
}

// statusAddresses returns the usable addresses Istio allocated to host in the entry's status.
func (t *Table) statusAddresses(e *Entry, key, host string) []netip.Addr {
	var raw []string
	for _, sa := range e.StatusAddresses {
		if n, err := canonicalHost(sa.Host); err == nil && n == host {
			raw = append(raw, sa.Value)
		}
	}
	return t.parseAddresses(key, "status.addresses", raw)
}

// parseAddresses keeps the single addresses among raw (IPs and /32 or /128 CIDRs) and
// records a problem for every other value.
func (t *Table) parseAddresses(key, field string, raw []string) []netip.Addr {
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

func (h *hostData) add(a netip.Addr, origin string) {
	if _, dup := h.origin[a]; dup {
		return
	}
	h.origin[a] = origin
	h.addrs = append(h.addrs, a)
}

// addHost creates the node for a host, its ancestors up to the apex as empty non-terminals,
// and, for a wildcard, the link from its parent that lookups synthesize from; then its SRV,
// PTR and TXT records. holders are the hosts that hold each address.
func (t *Table) addHost(h *hostData, ttl uint32, holders map[netip.Addr][]string) {
	n := t.ensure(h.name, h.zone)
	n.pending = h.pending
	var dropped4, dropped6 int
	for _, a := range h.addrs {
		switch {
		case a.Is4() && len(n.a) < maxAddressesPerHost:
			n.a = append(n.a, &dns.A{Hdr: header(h.name, dns.TypeA, ttl), A: a.AsSlice()})
		case a.Is4():
			dropped4++
		case len(n.aaaa) < maxAddressesPerHost:
			n.aaaa = append(n.aaaa, &dns.AAAA{Hdr: header(h.name, dns.TypeAAAA, ttl), AAAA: a.AsSlice()})
		default:
			dropped6++
		}
	}
	if dropped4+dropped6 > 0 {
		t.problem(kindAddress, reasonTooMany, strings.Join(h.entries, ","),
			fmt.Sprintf("%d of %d addresses of %s (limit %d per family)", dropped4+dropped6, len(h.addrs), h.name, maxAddressesPerHost))
	}
	if parent, ok := strings.CutPrefix(h.name, "*."); ok {
		t.ensure(parent, h.zone).wildcard = n
	} else {
		t.addSRV(h, n, ttl)
		if t.reverse {
			t.addPTR(h, ttl)
		}
	}
	n.txt = []dns.RR{&dns.TXT{Hdr: header(h.name, dns.TypeTXT, ttl), Txt: facts(h, holders)}}
}

// addSRV adds _NAME._tcp.HOST (or _udp) for each named port, pointing at the host, whose
// addresses ride along in the additional section. A wildcard has no name to put them under.
func (t *Table) addSRV(h *hostData, n *node, ttl uint32) {
	if len(h.ports) == 0 {
		return
	}
	extra := slices.Concat(n.a, n.aaaa)
	for _, p := range h.ports {
		label := "_" + strings.ToLower(p.Name)
		if checkLabel(label) != nil || p.Number == 0 || p.Number > 65535 {
			continue // Istio validates both; a file may not have
		}
		proto := "._tcp."
		if strings.EqualFold(p.Protocol, "UDP") {
			proto = "._udp."
		}
		name := label + proto + h.name
		sn := t.ensure(name, h.zone)
		sn.srv = append(sn.srv, &dns.SRV{Hdr: header(name, dns.TypeSRV, ttl), Priority: 0, Weight: 100, Port: uint16(p.Number), Target: h.name})
		sn.extra = extra
	}
}

// addPTR adds the reverse name of each of the host's addresses that lies in one of the zones.
func (t *Table) addPTR(h *hostData, ttl uint32) {
	for _, a := range h.addrs {
		rev, err := dns.ReverseAddr(a.String())
		if err != nil {
			continue
		}
		if z := t.zoneOf(rev); z != nil {
			pn := t.ensure(rev, z)
			pn.ptr = append(pn.ptr, &dns.PTR{Hdr: header(rev, dns.TypePTR, ttl), Ptr: h.name})
		}
	}
}

// facts are the TXT strings that tell who serves a name, one fact a string: the entries, each
// address and where it came from, the ports, and addresses another host holds too.
func facts(h *hostData, holders map[netip.Addr][]string) []string {
	var out []string
	for _, e := range h.entries {
		out = append(out, "serviceentry="+e)
	}
	for _, a := range h.addrs {
		out = append(out, "address="+a.String()+" ("+h.origin[a]+")")
	}
	for _, p := range h.ports {
		out = append(out, "port="+p.Name+"/"+strconv.FormatUint(uint64(p.Number), 10)+"/"+strings.ToUpper(p.Protocol))
	}
	for _, a := range h.addrs {
		for _, other := range holders[a] {
			if other != h.name {
				out = append(out, "conflict="+a.String()+" also "+strings.TrimSuffix(other, "."))
			}
		}
	}
	for i, s := range out {
		if len(s) > 255 { // the most one TXT string holds
			out[i] = s[:255]
		}
	}
	return out
}

// ensure returns the node for name, creating it and every missing ancestor below the apex.
func (t *Table) ensure(name string, z *zone) *node {
	n, ok := t.names[name]
	if ok {
		return n
	}
	n = &node{zone: z}
	t.names[name] = n
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		ancestor := name[off:]
		if _, ok := t.names[ancestor]; ok {
			break // it, and so its ancestors, exist already
		}
		t.names[ancestor] = &node{zone: z}
	}
	return n
}

// zoneOf returns the most specific zone that contains name, or nil.
func (t *Table) zoneOf(name string) *zone {
	var best *zone
	for _, z := range t.zones {
		if dns.IsSubDomain(z.name, name) && (best == nil || len(z.name) > len(best.name)) {
			best = z
		}
	}
	return best
}

func (t *Table) problem(kind, reason, entry, detail string) {
	t.problems = append(t.problems, Problem{Kind: kind, Reason: reason, Entry: entry, Detail: detail})
}

// lookup finds the node that answers qname (lower case, inside a zone of the table): the name
// itself (exact), else the wildcard child of its closest encloser (RFC 4592). When the name
// does not exist it returns a nil node and the closest encloser's zone.
func (t *Table) lookup(qname []byte) (n *node, z *zone, exact bool) {
	if n, ok := t.names[string(qname)]; ok {
		return n, n.zone, true
	}
	for off, end := nextLabel(qname, 0); !end; off, end = nextLabel(qname, off) {
		if ce, ok := t.names[string(qname[off:])]; ok {
			return ce.wildcard, ce.zone, false
		}
	}
	return nil, nil, false
}

func newZone(name string, ttl uint32, now time.Time) *zone {
	ns := dnsName(name)
	return &zone{
		name: name,
		soa: []dns.RR{&dns.SOA{
			Hdr:     header(name, dns.TypeSOA, ttl),
			Ns:      ns,
			Mbox:    dns.Fqdn("hostmaster." + strings.TrimSuffix(name, ".")),
			Serial:  uint32(now.Unix()),
			Refresh: 7200,
			Retry:   1800,
			Expire:  86400,
			Minttl:  ttl,
		}},
		ns: []dns.RR{&dns.NS{Hdr: header(name, dns.TypeNS, ttl), Ns: ns}},
	}
}

// dnsName is the name server the zone's SOA and NS records name, as the kubernetes plugin does.
func dnsName(zone string) string {
	if zone == "." {
		return "ns.dns."
	}
	return "ns.dns." + zone
}

func header(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// canonicalHost returns host as a lower-case FQDN, or why it is not a name we can serve.
// A single leading "*." label makes a wildcard; "*" anywhere else is an error.
func canonicalHost(host string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "" {
		return "", fmt.Errorf("empty")
	}
	if len(name) > 253 {
		return "", fmt.Errorf("longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if l == "*" && i == 0 && len(labels) > 1 {
			continue
		}
		if err := checkLabel(l); err != nil {
			return "", fmt.Errorf("label %q: %v", l, err)
		}
	}
	return name + ".", nil
}

func checkLabel(l string) error {
	if l == "" {
		return fmt.Errorf("empty label")
	}
	if len(l) > 63 {
		return fmt.Errorf("longer than 63 characters")
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			if c == '*' {
				return fmt.Errorf("a wildcard must be the whole first label")
			}
			return fmt.Errorf("character %s is not allowed", strconv.QuoteRune(rune(c)))
		}
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("starts or ends with a hyphen")
	}
	return nil
}

// parseAddress accepts an IPv4 or IPv6 address, or a CIDR of exactly one address. On error
// it also returns the reason the value is skipped.
func parseAddress(s string) (netip.Addr, string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			return netip.Addr{}, reasonInvalid, fmt.Errorf("not an IP address or CIDR")
		}
		if !p.IsSingleIP() {
			return netip.Addr{}, reasonCIDR, fmt.Errorf("a range, not one address")
		}
		a = p.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}, reasonInvalid, fmt.Errorf("has an IPv6 zone")
	}
	a = a.Unmap()
	if a.IsUnspecified() {
		return netip.Addr{}, reasonUnspecified, fmt.Errorf("the unspecified address")
	}
	return a, "", nil
}
