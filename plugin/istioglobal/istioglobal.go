// Package istioglobal is a CoreDNS plugin that answers Istio's multicluster names
// (name.namespace.global) from ServiceEntries.
package istioglobal

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/miekg/dns"
)

// coalesceDelay is how long the builder waits after a change for the rest of its burst, so
// that a burst of N events costs one or two rebuilds, not N.
const coalesceDelay = 50 * time.Millisecond

// IstioGlobal is the plugin handler.
type IstioGlobal struct {
	Next  plugin.Handler
	Zones []string // lower-case FQDNs
	Fall  fall.F

	ttl        uint32
	debug      bool     // answer TXT with what serves a name
	namespaces []string // empty: all
	sources    []source
	allocator  *allocator       // nil: autoallocate off
	store      *allocationStore // nil: VIPs are deterministic, not persisted

	table   atomic.Pointer[Table] // nil until every source has synced
	changed chan struct{}         // capacity 1: a pending rebuild
	stop    chan struct{}
	done    chan struct{}
	logged  map[string]bool // problems already logged; owned by the builder goroutine
}

// A source turns its world (the Kubernetes API, YAML files) into entries.
type source interface {
	// start begins watching and calls notify, which never blocks, whenever entries may have
	// changed, including once when the source has synced.
	start(notify func()) error
	stop()
	synced() bool
	// entries returns a snapshot, and the input that could not even be read as an entry.
	entries() ([]Entry, []Problem)
}

func newIstioGlobal() *IstioGlobal {
	return &IstioGlobal{ttl: defaultTTL, debug: true}
}

// Name implements plugin.Handler.
func (ig *IstioGlobal) Name() string { return "istioglobal" }

// ServeDNS implements plugin.Handler.
func (ig *IstioGlobal) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if len(r.Question) != 1 {
		return plugin.NextOrFailure(ig.Name(), ig.Next, ctx, w, r)
	}
	q := r.Question[0]
	var buf [nameBufSize]byte
	qname, folded := lower(&buf, q.Name)
	zi := matchZone(ig.Zones, qname)
	if zi < 0 || q.Qclass != dns.ClassINET {
		return plugin.NextOrFailure(ig.Name(), ig.Next, ctx, w, r)
	}
	t := ig.table.Load()
	if t == nil {
		// Not synced: a negative answer now would be cached by resolvers for names that exist.
		return dns.RcodeServerFailure, nil
	}

	rp := new(reply)
	rp.setReply(r)
	n, z, exact := t.lookup(qname)
	if n == nil {
		if ig.Fall.Through(q.Name) {
			return plugin.NextOrFailure(ig.Name(), ig.Next, ctx, w, r)
		}
		if z == nil {
			z = t.zones[zi]
		}
		rp.msg.Rcode = dns.RcodeNameError
		rp.msg.Ns = rp.authority(z.soa)
		return rp.write(w)
	}

	var rrs []dns.RR
	switch q.Qtype {
	case dns.TypeA:
		rrs = n.a
	case dns.TypeAAAA:
		rrs = n.aaaa
	case dns.TypeSRV:
		rrs = n.srv
	case dns.TypePTR:
		rrs = n.ptr
	case dns.TypeTXT:
		if ig.debug {
			rrs = n.txt
		}
	case dns.TypeSOA:
		if n == n.zone.apex {
			rrs = n.zone.soa
		}
	case dns.TypeNS:
		if n == n.zone.apex {
			rrs = n.zone.ns
		}
	case dns.TypeANY:
		// RFC 8482: one RRset is a complete answer to ANY.
		switch {
		case n == n.zone.apex:
			rrs = n.zone.soa
		case len(n.a) > 0:
			rrs = n.a
		case len(n.aaaa) > 0:
			rrs = n.aaaa
		case len(n.srv) > 0:
			rrs = n.srv
		default:
			rrs = n.ptr
		}
	}
	if len(rrs) == 0 {
		if n.pending && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY) {
			return dns.RcodeServerFailure, nil
		}
		rp.msg.Ns = rp.authority(n.zone.soa)
		return rp.write(w)
	}
	// The table's owner names are lower case: an exact match of an unfolded question has the
	// question's spelling already, and comparing would touch the RR for nothing.
	rp.msg.Answer = rp.renamed(rrs, q.Name, exact && !folded)
	if q.Qtype == dns.TypeSRV && len(n.extra) > 0 {
		rp.msg.Extra = slices.Clone(n.extra)
	}
	return rp.write(w)
}

// reply is a response and the storage its sections usually need, so that a reply costs one
// allocation. RRs from the table are shared read-only, as the file plugin shares its zone's:
// CoreDNS plugins that modify a response (cache, rewrite) copy it first. What this plugin
// changes, the owner name, it changes on a copy; and every reply gets its own slices, which
// plugins such as loadbalance reorder in place.
type reply struct {
	msg      dns.Msg
	question [1]dns.Question
	section  [1]dns.RR
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

// nameBufSize holds a name of the longest wire length (255 octets) in presentation format
// unless it is full of escapes; a longer one simply grows onto the heap.
const nameBufSize = 256

// lower returns name lower-cased (ASCII only, as DNS compares names) in buf, or on the heap
// when it does not fit, and whether any letter changed.
func lower(buf *[nameBufSize]byte, name string) (b []byte, folded bool) {
	b = buf[:0]
	if len(name) > len(buf) {
		b = make([]byte, 0, len(name))
	}
	b = append(b, name...)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
			folded = true
		}
	}
	return b, folded
}

// matchZone returns the index of the most specific of zones that contains qname, or -1.
func matchZone(zones []string, qname []byte) int {
	best := -1
	for i, z := range zones {
		if inZone(qname, z) && (best < 0 || len(z) > len(zones[best])) {
			best = i
		}
	}
	return best
}

// inZone reports whether qname (lower case) is zone or below it, on label boundaries.
func inZone(qname []byte, zone string) bool {
	if zone == "." {
		return true
	}
	if len(qname) < len(zone) || string(qname[len(qname)-len(zone):]) != zone {
		return false
	}
	rest := qname[:len(qname)-len(zone)]
	return len(rest) == 0 || rest[len(rest)-1] == '.' && !escaped(rest, len(rest)-1)
}

// nextLabel returns the offset of the label after the one at off in a presentation-format
// name, honouring escapes (a\.b is one label), and whether off was the last label.
func nextLabel(name []byte, off int) (int, bool) {
	for i := off; i < len(name); i++ {
		switch name[i] {
		case '\\':
			i++ // the escaped character (or the first of \DDD's digits) is not a separator
		case '.':
			if i+1 >= len(name) {
				return len(name), true
			}
			return i + 1, false
		}
	}
	return len(name), true
}

// escaped reports whether the byte at i is preceded by an odd number of backslashes.
func escaped(name []byte, i int) bool {
	n := 0
	for j := i - 1; j >= 0 && name[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}

// start launches the sources and the builder that publishes a table once all have synced.
func (ig *IstioGlobal) start() error {
	ig.changed = make(chan struct{}, 1)
	ig.logged = make(map[string]bool)
	for i, s := range ig.sources {
		if err := s.start(ig.notify); err != nil {
			for _, started := range ig.sources[:i] {
				started.stop()
			}
			return plugin.Error(ig.Name(), err)
		}
	}
	ig.stop = make(chan struct{})
	ig.done = make(chan struct{})
	go ig.run()
	return nil
}

// shutdown stops the sources and the builder; nothing of this instance survives a reload.
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
	coalesce := time.NewTimer(0)
	<-coalesce.C
	for {
		select {
		case <-ig.stop:
			return
		case <-ig.changed:
		}
		coalesce.Reset(coalesceDelay)
		select {
		case <-ig.stop:
			coalesce.Stop()
			return
		case <-coalesce.C:
		}
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

// rebuild builds a table from every source's entries and publishes it.
func (ig *IstioGlobal) rebuild() {
	start := time.Now()
	var entries []Entry
	var unreadable []Problem
	for _, s := range ig.sources {
		e, p := s.entries()
		entries = append(entries, e...)
		unreadable = append(unreadable, p...)
	}
	entries = inNamespaces(entries, ig.namespaces)
	var alloc allocFunc
	switch {
	case ig.store != nil:
		live, problems := ig.store.current()
		unreadable = append(unreadable, problems...)
		alloc = func([]string, func(netip.Addr) bool) (map[string]VIPs, []string) { return live, nil }
	case ig.allocator != nil:
		alloc = ig.allocator.deterministic
	}
	t := build(entries, ig.Zones, ig.ttl, start, alloc)
	t.problems = append(unreadable, t.problems...)
	if ig.store != nil {
		ig.store.demand(t.wants, t.reserved.has)
	}
	ig.table.Store(t)
	observe(t, time.Since(start), ig.allocator)
	ig.logNew(t.problems)
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
