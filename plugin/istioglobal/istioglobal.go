// Package istioglobal is a CoreDNS plugin that answers Istio's multicluster names
// (name.namespace.global) from ServiceEntries.
package istioglobal

import (
	"context"
	"slices"
	"sync/atomic"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/miekg/dns"
)

// IstioGlobal is the plugin handler.
type IstioGlobal struct {
	Next  plugin.Handler
	Zones []string // lower-case FQDNs
	Fall  fall.F

	ttl        uint32
	debug      bool     // answer TXT with what serves a name
	namespaces []string // empty: all
	sources    []source
	allocator  *vip.Allocator // nil: autoallocate off
	store      *vip.Store     // nil: VIPs are deterministic, not persisted

	ns nameServer

	table   atomic.Pointer[Table] // nil until every source has synced, or a predecessor's
	changed chan struct{}         // capacity 1: a pending rebuild
	stop    chan struct{}
	done    chan struct{}
	// Owned by the builder goroutine:
	logged map[string]bool // problems already logged
	last   *builtFrom      // what the last table of this instance was built from

	// Reload handover (handover.go); successor is guarded by the lineages lock.
	identity  func() string // the lineage key, once every plugin of the server is set up
	lineage   string
	inherited atomic.Pointer[Table] // the predecessor's table this instance serves, until its own
	successor *IstioGlobal
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
	zi := matchZone(ig.Zones, q.Name)
	if zi < 0 || q.Qclass != dns.ClassINET {
		return plugin.NextOrFailure(ig.Name(), ig.Next, ctx, w, r)
	}
	switch {
	case r.Opcode != dns.OpcodeQuery:
		// A NOTIFY (we are the primary, no one's secondary), or any other opcode the server
		// let through: not a question for the table.
		return dns.RcodeNotImplemented, nil
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		return dns.RcodeRefused, nil
	}
	t := ig.table.Load()
	if t == nil {
		// Not synced: a negative answer now would be cached by resolvers for names that exist.
		return dns.RcodeServerFailure, nil
	}

	rp := new(reply)
	rp.setReply(r)
	// The lower-cased name is built in find's frame, not this one: the write below runs on top
	// of this frame, and a frame that pushes the goroutine past its starting stack costs a
	// stack copy per query (a quarter of the server's throughput behind a few other plugins).
	n, z, exact, folded := t.find(q.Name)
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

	var rrs, extra []dns.RR
	switch q.Qtype {
	case dns.TypeA:
		rrs = n.a
	case dns.TypeAAAA:
		rrs = n.aaaa
	case dns.TypeSRV:
		rrs, extra = n.srv, n.extra
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
			extra = n.extra
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
		case len(n.ptr) > 0:
			rrs = n.ptr
		case ig.debug && !n.pending:
			rrs = n.txt
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
	if len(extra) > 0 {
		rp.msg.Extra = slices.Clone(extra)
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
