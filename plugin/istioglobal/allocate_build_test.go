package istioglobal

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// recordingAlloc gives the i-th wanted host 240.241.0.i (and fd00::i), never a reserved one,
// and records what build asked for.
type recordingAlloc struct {
	hosts    []string
	reserved vip.Reserved
	full     bool // exhausted: nothing for anyone
}

func (r *recordingAlloc) alloc(hosts []string, reserved vip.Reserved) (map[string]vip.VIPs, []string) {
	r.hosts, r.reserved = hosts, reserved
	if r.full {
		return nil, hosts
	}
	vips := make(map[string]vip.VIPs)
	for i, h := range hosts {
		vips[h] = vip.VIPs{V4: netip.MustParseAddr(fmt.Sprintf("240.241.0.%d", i+1)), V6: netip.MustParseAddr(fmt.Sprintf("fd00::%d", i+1))}
	}
	return vips, nil
}

func TestBuildAllocates(t *testing.T) {
	optOut := se("foo", "optout", 5, hosts("optout.x.global"))
	optOut.Labels = map[string]string{optOutLabel: "false"}
	optIn := se("foo", "optin", 6, hosts("optin.x.global"))
	optIn.Labels = map[string]string{optOutLabel: "true"}
	withStatus := se("foo", "status", 7, hosts("status.x.global"))
	withStatus.StatusAddresses = []StatusAddress{{Host: "status.x.global", Value: "240.240.0.9"}}
	private := se("foo", "private", 8, hosts("private.x.global"), "240.241.9.9")
	private.ExportTo = []string{"."}
	entries := []Entry{
		se("foo", "newer", 2, hosts("newer.x.global")),
		se("foo", "older", 1, hosts("older.x.global", "*.wild.x.global")),
		se("foo", "declared", 3, hosts("declared.x.global"), "127.255.0.2"),
		se("foo", "garbage", 4, hosts("garbage.x.global"), "hello"),
		optOut, optIn, withStatus, private,
		se("foo", "external", 9, hosts("api.example.com"), "240.241.8.0/24"),
	}
	r := &recordingAlloc{}
	ig := newTestPlugin(nil)
	ig.table.Store(buildAt(entries, ig.Zones, ig.ttl, r.alloc))

	// Oldest entry first; no wildcard, no host with a usable spec or status address, no opt-out.
	if want := []string{"older.x.global.", "newer.x.global.", "garbage.x.global.", "optin.x.global."}; !slices.Equal(r.hosts, want) {
		t.Errorf("hosts wanting vip.VIPs %v, want %v", r.hosts, want)
	}
	for addr, want := range map[string]bool{
		"127.255.0.2": true, "240.240.0.9": true, // declared in spec, in status
		"240.241.9.9": true, // by an entry not served here
		"240.241.8.7": true, // inside a declared range
		"240.241.0.1": false, "fd00::1": false,
	} {
		if got := r.reserved(netip.MustParseAddr(addr)) > 0; got != want {
			t.Errorf("reserved(%s) = %v, want %v", addr, got, want)
		}
	}
	runCases(t, ig, []test.Case{
		{Qname: "older.x.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("older.x.global. 30 IN A 240.241.0.1")}},
		{Qname: "older.x.global.", Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("older.x.global. 30 IN AAAA fd00::1")}},
		{Qname: "garbage.x.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("garbage.x.global. 30 IN A 240.241.0.3")}},
		{Qname: "declared.x.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("declared.x.global. 30 IN A 127.255.0.2")}},
		{Qname: "declared.x.global.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa}},
		{Qname: "status.x.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("status.x.global. 30 IN A 240.240.0.9")}},
		{Qname: "optout.x.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
		{Qname: "a.wild.x.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
	})
	if s := statsOf(ig.table.Load()); s.allocated != [2]int{4, 4} {
		t.Errorf("allocated %v, want 4 IPv4 and 4 IPv6", s.allocated)
	}
}

func TestBuildReportsExhaustion(t *testing.T) {
	tb := buildAt([]Entry{se("foo", "a", 0, hosts("a.x.global"))}, []string{"global."}, 30, (&recordingAlloc{full: true}).alloc)
	assertProblems(t, problemsOf(tb), "address/exhausted")
	if s := statsOf(tb); s.allocated != [2]int{} {
		t.Errorf("allocated %v, want none", s.allocated)
	}
}

// TestDefaultRangesAvoidIstio: Istio's own allocators use these ranges; a VIP of ours inside
// them could equal one Istio hands out.
func TestDefaultRangesAvoidIstio(t *testing.T) {
	for _, ours := range vip.DefaultRanges {
		for _, istio := range []string{"240.240.0.0/16", "2001:2::/48"} {
			if ours.Overlaps(netip.MustParsePrefix(istio)) {
				t.Errorf("default range %s overlaps Istio's %s", ours, istio)
			}
		}
	}
	if _, err := vip.New(vip.DefaultRanges, defaultGrace); err != nil {
		t.Error(err)
	}
}

// TestPendingVIPsServfail: a host whose persisted VIP has not been written yet answers SERVFAIL
// for addresses (resolvers would cache NODATA); an exhausted one answers NODATA.
func TestPendingVIPsServfail(t *testing.T) {
	persisted := func([]string, vip.Reserved) (map[string]vip.VIPs, []string) {
		return map[string]vip.VIPs{"done.x.global.": {V4: netip.MustParseAddr("240.241.0.1")}}, []string{"full.x.global."}
	}
	ig := newTestPlugin(nil)
	ig.table.Store(buildAt([]Entry{
		se("foo", "done", 0, hosts("done.x.global")),
		se("foo", "waiting", 1, hosts("waiting.x.global")),
		se("foo", "full", 2, hosts("full.x.global")),
	}, ig.Zones, ig.ttl, persisted))
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"waiting.x.global.", dns.TypeA, dns.RcodeServerFailure},
		{"waiting.x.global.", dns.TypeAAAA, dns.RcodeServerFailure},
		{"waiting.x.global.", dns.TypeANY, dns.RcodeServerFailure}, // not its TXT: its A is unknown
		{"waiting.x.global.", dns.TypeMX, dns.RcodeSuccess},        // the name is known to exist
		{"done.x.global.", dns.TypeA, dns.RcodeSuccess},
		{"done.x.global.", dns.TypeAAAA, dns.RcodeSuccess}, // NODATA: no IPv6 VIP, and none pending
		{"full.x.global.", dns.TypeA, dns.RcodeSuccess},    // NODATA
	} {
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		rcode, _ := ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion(tc.name, tc.qtype))
		if rec.Msg != nil {
			rcode = rec.Msg.Rcode
		}
		if rcode != tc.rcode {
			t.Errorf("%s %s: %s, want %s", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[rcode], dns.RcodeToString[tc.rcode])
		}
	}
}

// With `namespaces`, the files source still reads every namespace: an entry of another namespace
// is not served, but the addresses it declares are reserved, so no VIP equals one of them.
func TestUnservedNamespacesReserve(t *testing.T) {
	a, err := vip.New([]netip.Prefix{netip.MustParsePrefix("240.241.0.0/29")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	wants := se("foo", "wants", 0, hosts("wants.foo.global"))
	first, _ := a.Deterministic([]string{"wants.foo.global."}, func(netip.Addr) uint64 { return 0 })
	taken := first["wants.foo.global."].V4
	other := se("bar", "declares", 1, hosts("declares.bar.global"), taken.String())
	cfg := tableConfig{zones: []string{"global."}, ttl: 30, ns: defaultNameServer([]string{"global."}, nil),
		alloc: a.Deterministic, pool: a.Overlaps, namespaces: []string{"foo"}}
	ig := newIstioGlobal()
	ig.Zones = cfg.zones
	ig.table.Store(build([]Entry{wants, other}, cfg, 1))
	if got := answers(t, ig, "wants.foo.global."); got == taken.String() || got == "NXDOMAIN" {
		t.Errorf("wants.foo.global got %s: the address bar/declares declares, or nothing", got)
	}
	if got := answers(t, ig, "declares.bar.global."); got != "NXDOMAIN" {
		t.Errorf("an entry of an unserved namespace answers %s", got)
	}
}

// A host whose persisted VIP does not come (a full range, an allocations ConfigMap that cannot
// be written) answers SERVFAIL only for pendingLimit, then NODATA with a problem counted, and
// its VIP as soon as it appears.
func TestPendingVIPIsBounded(t *testing.T) {
	now := epoch
	var live map[string]vip.VIPs
	cfg := tableConfig{zones: []string{"global."}, ttl: 30, ns: defaultNameServer([]string{"global."}, nil),
		alloc: func([]string, vip.Reserved) (map[string]vip.VIPs, []string) { return live, nil },
		now:   func() time.Time { return now }}
	e := newEngine(cfg)
	var s snapshots
	e.apply(s.diff([]Entry{se("foo", "waits", 0, hosts("waits.foo.global"))}))
	ig := newIstioGlobal()
	ig.Zones = cfg.zones
	commit := func() {
		if tb := e.commit(func() uint32 { return uint32(now.Unix()) }); tb != nil {
			ig.table.Store(tb)
		}
	}
	rcode := func() string {
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		rc, _ := ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion("waits.foo.global.", dns.TypeA))
		if rec.Msg != nil {
			rc = rec.Msg.Rcode
			if len(rec.Msg.Answer) > 0 {
				return rec.Msg.Answer[0].(*dns.A).A.String()
			}
		}
		return dns.RcodeToString[rc]
	}
	commit()
	if got := rcode(); got != "SERVFAIL" {
		t.Fatalf("waiting for its VIP: %s, want SERVFAIL", got)
	}
	if want := epoch.Add(pendingLimit); !e.deadline.Equal(want) {
		t.Fatalf("deadline %v, want %v", e.deadline, want)
	}
	now = now.Add(pendingLimit - time.Second)
	commit()
	if got := rcode(); got != "SERVFAIL" {
		t.Fatalf("just before the limit: %s, want SERVFAIL", got)
	}
	now = now.Add(time.Second)
	commit() // the builder's wake-up timer
	if got := rcode(); got != "NOERROR" {
		t.Fatalf("after the limit: %s, want NODATA", got)
	}
	assertProblems(t, e.allProblems(), "address/no_vip")
	live = map[string]vip.VIPs{"waits.foo.global.": {V4: netip.MustParseAddr("240.241.0.7")}}
	e.setAlloc(cfg.alloc)
	commit()
	if got := rcode(); got != "240.241.0.7" {
		t.Fatalf("with its VIP: %s", got)
	}
	assertProblems(t, e.allProblems())
}
