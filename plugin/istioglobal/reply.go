package istioglobal

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

// reply is a response and the storage its sections usually need, so that a reply costs one
// allocation. RRs from the table are shared read-only, as the file plugin shares its zone's:
// CoreDNS plugins that modify a response (cache, rewrite) copy it first. What this plugin
// changes, the owner name, it changes on a copy; and every reply gets its own slices, which
// plugins such as loadbalance reorder in place.
type reply struct {
	msg      dns.Msg
	question [1]dns.Question
	section  [1]dns.RR
	a        dns.A // the record of an answer of one IPv4 address
	ip       [4]byte
}

// answer builds the records of node n that answer q, owned by the question's name, and those
// of the additional section. same says that the question's spelling is the table's.
func (rp *reply) answer(t *Table, n *node, q dns.Question, same, txt bool) (answer, extra []dns.RR) {
	switch q.Qtype {
	case dns.TypeA:
		if n.v4 {
			return rp.addresses(q.Name, n.host, true, t.ttl), nil
		}
	case dns.TypeAAAA:
		if n.v6 {
			return rp.addresses(q.Name, n.host, false, t.ttl), nil
		}
	case dns.TypeSRV:
		return srvRecords(q.Name, n.srv, t.ttl), glue(n.srv, t.ttl)
	case dns.TypePTR:
		return ptrRecords(q.Name, n.ptr, t.ttl), nil
	case dns.TypeTXT:
		if txt {
			return t.txt(q.Name, n.host), nil
		}
	case dns.TypeSOA:
		if n.apex {
			return rp.renamed(t.zones[n.zone].soa, q.Name, same), nil
		}
	case dns.TypeNS:
		if n.apex {
			var extra []dns.RR
			if t.glue != nil {
				extra = appendAddresses(appendAddresses(nil, t.glue.name, t.glue.addrs, true, t.ttl), t.glue.name, t.glue.addrs, false, t.ttl)
			}
			return rp.renamed(t.zones[n.zone].ns, q.Name, same), extra
		}
	case dns.TypeANY:
		// RFC 8482: one RRset is a complete answer to ANY.
		if n.apex {
			return rp.renamed(t.zones[n.zone].soa, q.Name, same), nil
		}
		if rrs := rp.addresses(q.Name, n.host, true, t.ttl); len(rrs) > 0 {
			return rrs, nil
		}
		if rrs := rp.addresses(q.Name, n.host, false, t.ttl); len(rrs) > 0 {
			return rrs, nil
		}
		if rrs := srvRecords(q.Name, n.srv, t.ttl); len(rrs) > 0 {
			return rrs, nil
		}
		if rrs := ptrRecords(q.Name, n.ptr, t.ttl); len(rrs) > 0 {
			return rrs, nil
		}
		if txt && n.host != nil && !n.host.pending {
			return t.txt(q.Name, n.host), nil
		}
	}
	return nil, nil
}

// addresses returns the host's addresses of one family as records owned by name; a single one
// is built in the reply itself.
func (rp *reply) addresses(name string, h *hostInfo, v4 bool, ttl uint32) []dns.RR {
	if h == nil {
		return nil
	}
	n, first := 0, -1
	for i, a := range h.addrs {
		if a.Is4() == v4 {
			if n++; first < 0 {
				first = i
			}
		}
	}
	switch {
	case n == 0:
		return nil
	case n > 1 || !v4: // IPv6 answers are the rarer: they cost an allocation more
		return appendAddresses(make([]dns.RR, 0, n), name, h.addrs, v4, ttl)
	}
	rp.ip = h.addrs[first].As4()
	rp.a = dns.A{Hdr: header(name, dns.TypeA, ttl), A: rp.ip[:]}
	rp.section[0] = &rp.a
	return rp.section[:]
}

type aRecord struct {
	rr dns.A
	ip [4]byte
}

type aaaaRecord struct {
	rr dns.AAAA
	ip [16]byte
}

// appendAddresses appends the addresses of one family as records owned by name.
func appendAddresses(out []dns.RR, name string, addrs []netip.Addr, v4 bool, ttl uint32) []dns.RR {
	if v4 {
		return appendRecords(out, addrs, v4, func(r *aRecord, a netip.Addr) dns.RR {
			r.ip = a.As4()
			r.rr = dns.A{Hdr: header(name, dns.TypeA, ttl), A: r.ip[:]}
			return &r.rr
		})
	}
	return appendRecords(out, addrs, v4, func(r *aaaaRecord, a netip.Addr) dns.RR {
		r.ip = a.As16()
		r.rr = dns.AAAA{Hdr: header(name, dns.TypeAAAA, ttl), AAAA: r.ip[:]}
		return &r.rr
	})
}

// appendRecords builds a record of type R for each address of one family, all in one slab.
func appendRecords[R any](out []dns.RR, addrs []netip.Addr, v4 bool, build func(*R, netip.Addr) dns.RR) []dns.RR {
	n := 0
	for _, a := range addrs {
		if a.Is4() == v4 {
			n++
		}
	}
	if n == 0 {
		return out
	}
	recs := make([]R, 0, n)
	for _, a := range addrs {
		if a.Is4() == v4 {
			recs = recs[:len(recs)+1]
			out = append(out, build(&recs[len(recs)-1], a))
		}
	}
	return out
}

// srvRecords are the SRV records of a name, each pointing at the host.
func srvRecords(name string, s *srvSet, ttl uint32) []dns.RR {
	if s == nil {
		return nil
	}
	return records(s.ports, func(r *dns.SRV, port uint16) {
		*r = dns.SRV{Hdr: header(name, dns.TypeSRV, ttl), Priority: 0, Weight: 100, Port: port, Target: s.target.name}
	})
}

// glue is the SRV target's addresses, for the additional section.
func glue(s *srvSet, ttl uint32) []dns.RR {
	if s == nil {
		return nil
	}
	h := s.target
	return appendAddresses(appendAddresses(nil, h.name, h.addrs, true, ttl), h.name, h.addrs, false, ttl)
}

func ptrRecords(name string, l *holderList, ttl uint32) []dns.RR {
	if l == nil {
		return nil
	}
	return records(l.names, func(r *dns.PTR, host string) {
		*r = dns.PTR{Hdr: header(name, dns.TypePTR, ttl), Ptr: host}
	})
}

// records builds one record of type R for each item, all in one slab.
func records[R any, PR interface {
	*R
	dns.RR
}, T any](items []T, build func(PR, T)) []dns.RR {
	recs := make([]R, len(items))
	out := make([]dns.RR, len(items))
	for i, item := range items {
		build(&recs[i], item)
		out[i] = PR(&recs[i])
	}
	return out
}

// txt is the record that tells what serves a host.
func (t *Table) txt(name string, h *hostInfo) []dns.RR {
	if h == nil || h.nEntries == 0 {
		return nil
	}
	return []dns.RR{&dns.TXT{Hdr: header(name, dns.TypeTXT, t.ttl), Txt: t.facts(h)}}
}

// facts are the TXT strings that tell who serves a host, one fact a string: the entries, each
// address and where it came from, the ports, and addresses other hosts hold too. Each kind
// lists at most maxFactsPerKind, then "KIND=+N more".
func (t *Table) facts(h *hostInfo) []string {
	var f factList
	f.kind("serviceentry", h.nEntries, func(i int) string { return h.entries[i] })
	f.kind("address", len(h.addrs), func(i int) string { return h.addrs[i].String() + " (" + originNames[h.origins[i]] + ")" })
	f.kind("port", len(h.ports), func(i int) string {
		p := h.ports[i]
		return p.Name + "/" + strconv.FormatUint(uint64(p.Number), 10) + "/" + strings.ToUpper(p.Protocol)
	})
	f.more("port", h.morePort)
	if c := h.conflict; c != nil {
		f.add("scope=" + c.answered.String() + " answered")
		f.kind("shadowed", c.n, func(i int) string { return c.entries[i] })
	}
	// Conflicts: for each address, the other hosts holding it, in host order.
	listed, total := 0, 0
	for _, a := range h.addrs {
		l := t.conflicts.shards[shardOf(hashAddr(a))][a]
		if l == nil {
			continue
		}
		total += l.count - 1
		for _, other := range l.names {
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
	return f.out
}

// factList collects TXT strings, each at most the 255 octets one string holds.
type factList struct{ out []string }

func (f *factList) add(s string) {
	if len(s) > 255 {
		s = s[:255]
	}
	f.out = append(f.out, s)
}

// kind adds "KIND=VALUE" for the first maxFactsPerKind of n values, then how many more exist.
func (f *factList) kind(kind string, n int, value func(int) string) {
	for i := range min(n, maxFactsPerKind) {
		f.add(kind + "=" + value(i))
	}
	f.more(kind, n-maxFactsPerKind)
}

func (f *factList) more(kind string, n int) {
	if n > 0 {
		f.add(kind + "=+" + strconv.Itoa(n) + " more")
	}
}

// setReply is dns.Msg.SetReply without the allocation of a question slice.
func (rp *reply) setReply(r *dns.Msg) {
	m := &rp.msg
	m.Id = r.Id
	m.Response = true
	m.Authoritative = true
	m.Opcode = r.Opcode
	if m.Opcode == dns.OpcodeQuery {
		m.RecursionDesired = r.RecursionDesired
		m.CheckingDisabled = r.CheckingDisabled
	}
	rp.question[0] = r.Question[0]
	m.Question = rp.question[:]
}

func (rp *reply) write(w dns.ResponseWriter) (int, error) {
	if err := w.WriteMsg(&rp.msg); err != nil {
		return dns.RcodeServerFailure, plugin.Error("istioglobal", err)
	}
	return rp.msg.Rcode, nil
}

// authority returns the zone's SOA for the authority section of a negative answer.
func (rp *reply) authority(soa []dns.RR) []dns.RR {
	rp.section[0] = soa[0]
	return rp.section[:]
}

// renamed returns src owned by name, the question's own spelling: the table's RRs when they
// already are (same says so, or the names compare equal), copies when the name differs (a
// wildcard, or another case).
func (rp *reply) renamed(src []dns.RR, name string, same bool) []dns.RR {
	if same || src[0].Header().Name == name {
		if len(src) == 1 {
			rp.section[0] = src[0]
			return rp.section[:]
		}
		return slices.Clone(src)
	}
	out := rp.section[:]
	if len(src) > 1 {
		out = make([]dns.RR, len(src))
	}
	switch src[0].(type) {
	case *dns.A:
		cp := make([]dns.A, len(src))
		for i, rr := range src {
			cp[i] = *rr.(*dns.A)
			cp[i].Hdr.Name = name
			out[i] = &cp[i]
		}
	case *dns.AAAA:
		cp := make([]dns.AAAA, len(src))
		for i, rr := range src {
			cp[i] = *rr.(*dns.AAAA)
			cp[i].Hdr.Name = name
			out[i] = &cp[i]
		}
	default:
		for i, rr := range src {
			out[i] = dns.Copy(rr)
			out[i].Header().Name = name
		}
	}
	return out
}
