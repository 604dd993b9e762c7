package istioglobal

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// recordingAlloc gives the i-th wanted host 240.241.0.i (and fd00::i), never a reserved one,
// and records what build asked for.
type recordingAlloc struct {
	hosts    []string
	reserved func(netip.Addr) bool
	full     bool // exhausted: nothing for anyone
}

func (r *recordingAlloc) alloc(hosts []string, reserved func(netip.Addr) bool) (map[string]vip.VIPs, []string) {
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
		if got := r.reserved(netip.MustParseAddr(addr)); got != want {
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
	persisted := func([]string, func(netip.Addr) bool) (map[string]vip.VIPs, []string) {
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
