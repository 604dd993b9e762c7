package istioglobal

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/debounce"
	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/plugin/transfer"
	"github.com/miekg/dns"
)

// IstioGlobal is the plugin handler.
type IstioGlobal struct {
	Next  plugin.Handler
	Zones []string // lower-case FQDNs
	Fall  fall.F

	ttl        uint32
	txt        bool // answer TXT with what serves a name
	export     exportPolicy
	namespaces []string // empty: all
	sources    []source
	allocator  *vip.Allocator // nil: autoallocate off
	store      *vip.Store     // nil: VIPs are deterministic, not persisted

	ns nameServer

	xfer     *transfer.Transfer // the server block's transfer plugin; nil: none
	notifier *notifier          // NOTIFYs its secondaries; nil without xfer

	table   atomic.Pointer[Table] // nil until every source has synced, or a predecessor's
	changed *debounce.Burst       // a pending rebuild
	wake    *time.Timer           // a rebuild when a host waiting for its VIP becomes overdue
	wakeAt  time.Time
	stop    chan struct{}
	done    chan struct{}
	// Owned by the builder goroutine:
	engine       *engine
	live         map[string]vip.VIPs // the persisted allocations the engine allocates from
	storeChanged atomic.Bool

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
	// changes returns the entries that changed since the last call (every entry, at the first),
	// nil for one that is gone, and all the input that could not even be read as an entry.
	changes() ([]change, []Problem)
}

func newIstioGlobal() *IstioGlobal {
	return &IstioGlobal{ttl: defaultTTL}
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

	rp.msg.Answer, rp.msg.Extra = rp.answer(t, n, q, exact && !folded, ig.txt)
	if len(rp.msg.Answer) == 0 {
		if n.host != nil && n.host.pending && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY) {
			return dns.RcodeServerFailure, nil
		}
		rp.msg.Ns = rp.authority(t.zones[n.zone].soa)
	}
	return rp.write(w)
}
