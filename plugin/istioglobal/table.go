package istioglobal

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// What one answer may carry. Each bounds what an adversary who can write ServiceEntries can put
// into one RRset, so that every answer packs within a 64 KiB TCP message, and what one name
// keeps, so that N entries sharing an address or a host cost a change O(N) at most (the list
// it merges into) and a sync O(N log N), never O(N²). What is left out is counted in
// coredns_istioglobal_capped and, in the TXT facts, said with "+N more".
const (
	// maxAddressesPerHost bounds one host's A (and AAAA) RRset. Istio allows 256 addresses per
	// ServiceEntry; several entries for one host could otherwise build an answer that no longer
	// fits a 64 KiB TCP message.
	maxAddressesPerHost = 256
	maxPTRPerAddress    = 32 // hosts named by one reverse name, oldest first
	maxPortsPerHost     = 32 // named ports of one host: its SRV records, all its SRV names together
	maxFactsPerKind     = 32 // TXT strings of one kind (entries, addresses, ports, conflicts)
	maxEntriesNamed     = 3  // entries a logged problem names
)

// maxZones is what a node's zone index can name.
const maxZones = 255

// The records whose answers can leave some out, indexing tableStats.capped.
const (
	cappedPTR = iota // a reverse name held by more than maxPTRPerAddress hosts
	cappedSRV        // a host with more than maxPortsPerHost named ports
	cappedTXT        // a host whose facts left some out, or an address with more conflicts than they list
	cappedKinds
)

var cappedRecords = [cappedKinds]string{"ptr", "srv", "txt"}

// Table is one generation of every name the plugin serves. The engine publishes a new one for
// each change, sharing everything that did not change with the last; a published Table is
// never modified, so readers need no lock.
type Table struct {
	names     *cowMap[string, *node]           // lower-case FQDN → node: hosts, wildcards, ENTs, apexes
	conflicts *cowMap[netip.Addr, *holderList] // addresses held by several hosts: their holders
	zones     []*zone
	glue      *hostInfo // the NS target's addresses, when it is a name of ours that has some
	ttl       uint32
	serial    uint32
	journal   journal // the differences up to this generation, for IXFR
}

// tableStats is what the metrics report besides the problems.
type tableStats struct {
	entries   int // ServiceEntries that contribute at least one name
	hosts     int // names from ServiceEntries, wildcards included
	other     int // ServiceEntries with no host in the zones: read, reserved, otherwise ignored
	capped    [cappedKinds]int
	allocated [2]int // hosts served an allocated IPv4, IPv6 VIP
}

// node is a name that exists in a zone, with what answers for it: compact data from which the
// reply builds its records. A node with nothing is an empty non-terminal, or a host whose
// entries carry no usable address: both answer NODATA. One name can play several parts (a host
// that is also a reverse name, or an ENT above others).
type node struct {
	host     *hostInfo   // a host's (or the NS target's) addresses and what served them
	srv      *srvSet     // at _PORT._tcp|_udp.HOST
	ptr      *holderList // at the reverse name of an address: the hosts that hold it
	wildcard *node       // the "*.<this name>" child, the source of synthesis below this name
	gen      uint64      // the generation that made this copy; the engine changes only its own
	refs     int32       // names at or below this one that are more than an ENT (engine only)
	zone     uint8       // index in Table.zones
	apex     bool
	v4, v6   bool // host has addresses of the family: NODATA without reading host
}

// setHost makes h the node's host.
func (n *node) setHost(h *hostInfo) {
	n.host, n.v4, n.v6 = h, false, false
	if h != nil {
		for _, a := range h.addrs {
			n.v4, n.v6 = n.v4 || a.Is4(), n.v6 || !a.Is4()
		}
	}
}

// hostInfo is what the entries of one host say, merged: oldest entry first, bounded.
type hostInfo struct {
	name     string
	addrs    []netip.Addr // at most maxAddressesPerHost of each family, first come
	origins  []origin     // of each address
	entries  []string     // namespace/name of the first maxFactsPerKind entries, oldest first
	nEntries int
	ports    []Port // named, without duplicates, at most maxPortsPerHost
	morePort int    // port declarations beyond maxPortsPerHost
	pending  bool   // wants a VIP that is not known yet: SERVFAIL, not a negative answer
	conflict *scopeConflict
}

// scopeConflict is a host whose entries of other scopes declare other addresses than the ones
// answered (engine.scopes).
type scopeConflict struct {
	answered scope
	entries  []string // the first maxFactsPerKind shadowed entries, "namespace/name (exportTo ...)"
	n        int
}

type origin uint8

const (
	fromSpec origin = iota
	fromStatus
	fromAllocation
)

var originNames = [...]string{"spec", "status", "allocated"}

// srvSet is the SRV records of one name: the ports of one host that share a name and protocol.
type srvSet struct {
	target *hostInfo
	ports  []uint16
}

// holderList is the hosts that hold one address, in host order: the first few, and how many.
type holderList struct {
	names []string
	count int
}

type zone struct {
	name    string
	soa, ns []dns.RR
}

// find is lookup of a name in any case. It lower-cases the name on its own frame, which is
// gone before the reply is written: see ServeDNS.
//
//go:noinline
func (t *Table) find(name string) (n *node, z *zone, exact, folded bool) {
	var buf [nameBufSize]byte
	qname, folded := lower(&buf, name)
	n, z, exact = t.lookup(qname)
	return n, z, exact, folded
}

// lookup finds the node that answers qname (lower case, inside a zone of the table): the name
// itself (exact), else the wildcard child of its closest encloser (RFC 4592). When the name
// does not exist it returns a nil node and the closest encloser's zone.
func (t *Table) lookup(qname []byte) (n *node, z *zone, exact bool) {
	if n := t.get(qname); n != nil {
		return n, t.zones[n.zone], true
	}
	for off, end := nextLabel(qname, 0); !end; off, end = nextLabel(qname, off) {
		if ce := t.get(qname[off:]); ce != nil {
			return ce.wildcard, t.zones[ce.zone], false
		}
	}
	return nil, nil, false
}

func (t *Table) get(name []byte) *node {
	return t.names.shards[shardOf(hashNameBytes(name))][string(name)]
}

// node returns the node of a lower-case name.
func (t *Table) node(name string) *node {
	return t.names.shards[shardOf(hashName(name))][name]
}

func newZone(name string, ttl, serial uint32, ns string) *zone {
	return &zone{
		name: name,
		soa: []dns.RR{&dns.SOA{
			Hdr:     header(name, dns.TypeSOA, ttl),
			Ns:      ns,
			Mbox:    dns.Fqdn("hostmaster." + strings.TrimSuffix(name, ".")),
			Serial:  serial,
			Refresh: 7200,
			Retry:   1800,
			Expire:  86400,
			Minttl:  ttl,
		}},
		ns: []dns.RR{&dns.NS{Hdr: header(name, dns.TypeNS, ttl), Ns: ns}},
	}
}

func header(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}
