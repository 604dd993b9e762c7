package istioglobal

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/plugin/test"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

var (
	epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// The zone SOA every negative answer carries, at the default TTL.
	soa = test.SOA(fmt.Sprintf("global. 30 IN SOA ns.dns.global. hostmaster.global. %d 7200 1800 86400 30", epoch.Unix()))
)

// se is a ServiceEntry with hosts and addresses, created at epoch plus age seconds.
func se(ns, name string, age int, hosts []string, addrs ...string) Entry {
	return Entry{Namespace: ns, Name: name, Created: epoch.Add(time.Duration(age) * time.Second), Hosts: hosts, Addresses: addrs}
}

func hosts(h ...string) []string { return h }

// seeds are the ServiceEntries of the Istio multicluster guides, plus the shapes the
// semantics below need: a wildcard, a dual-stack host, a host under another host.
var seeds = []Entry{
	se("foo", "httpbin-bar", 0, hosts("httpbin.bar.global"), "127.255.0.2"),
	se("hello", "helloworld", 1, hosts("helloworld.hello.global"), "127.255.0.8"),
	se("foo", "ratings", 2, hosts("ratings.bookinfo.global"), "240.0.0.4", "fd00:255::4"),
	se("foo", "v6only", 3, hosts("v6.bookinfo.global"), "fd00:255::6"),
	se("foo", "wild", 4, hosts("*.wild.global"), "240.0.0.10"),
	se("foo", "exact-in-wild", 5, hosts("exact.wild.global"), "240.0.0.11"),
	se("foo", "deep", 6, hosts("a.b.deep.global"), "240.0.0.12"),
	se("foo", "api", 7, hosts("api.example.com", "api.partner.global"), "240.0.0.13"),
}

// buildAt builds the table the tests query: serial epoch, the default name server of zones.
func buildAt(entries []Entry, zones []string, ttl uint32, alloc allocFunc) *Table {
	return build(entries, tableConfig{zones: zones, ttl: ttl, ns: defaultNameServer(zones, nil), alloc: alloc}, uint32(epoch.Unix()))
}

func newTestPlugin(entries []Entry, zones ...string) *IstioGlobal {
	if len(zones) == 0 {
		zones = []string{"global."}
	}
	ig := newIstioGlobal()
	ig.Zones, ig.txt = zones, true // tests read the TXT facts
	ig.Next = test.NextHandler(dns.RcodeRefused, nil)
	ig.table.Store(buildAt(entries, zones, ig.ttl, nil))
	return ig
}

func runCases(t *testing.T, ig *IstioGlobal, cases []test.Case) {
	t.Helper()
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%s", tc.Qname, dns.TypeToString[tc.Qtype]), func(t *testing.T) {
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			if _, err := ig.ServeDNS(context.Background(), rec, tc.Msg()); err != nil {
				t.Fatalf("ServeDNS: %v", err)
			}
			if rec.Msg == nil {
				t.Fatalf("no response written (rcode %s)", dns.RcodeToString[rec.Rcode])
			}
			if err := test.SortAndCheck(rec.Msg, tc); err != nil {
				t.Fatal(err)
			}
			if !rec.Msg.Authoritative {
				t.Error("AA bit not set")
			}
			for _, rr := range rec.Msg.Answer {
				if rr.Header().Name != tc.Qname {
					t.Errorf("answer owner %q, want the question's spelling %q", rr.Header().Name, tc.Qname)
				}
			}
		})
	}
}

func TestServeSemantics(t *testing.T) {
	runCases(t, newTestPlugin(seeds), []test.Case{
		// A and AAAA.
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("httpbin.bar.global. 30 IN A 127.255.0.2")}},
		{Qname: "helloworld.hello.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("helloworld.hello.global. 30 IN A 127.255.0.8")}},
		{Qname: "ratings.bookinfo.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("ratings.bookinfo.global. 30 IN A 240.0.0.4")}},
		{Qname: "ratings.bookinfo.global.", Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("ratings.bookinfo.global. 30 IN AAAA fd00:255::4")}},
		// NODATA: a known name without a record of the type.
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa}},
		{Qname: "v6.bookinfo.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeMX, Ns: []dns.RR{soa}},
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeSOA, Ns: []dns.RR{soa}},
		// NXDOMAIN with the SOA.
		{Qname: "nothere.bar.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		{Qname: "httpbin.nothere.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		{Qname: "below.httpbin.bar.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		{Qname: "httpbin.bar.global.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		// Empty non-terminals exist: NODATA, not NXDOMAIN.
		{Qname: "bar.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
		{Qname: "deep.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
		{Qname: "b.deep.global.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa}},
		{Qname: "a.b.deep.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("a.b.deep.global. 30 IN A 240.0.0.12")}},
		// Apex: SOA and NS; nothing else.
		{Qname: "global.", Qtype: dns.TypeSOA, Answer: []dns.RR{soa}},
		{Qname: "global.", Qtype: dns.TypeNS, Answer: []dns.RR{test.NS("global. 30 IN NS ns.dns.global.")}},
		{Qname: "global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
		// Wildcards synthesize with the question as owner; an exact name wins.
		{Qname: "anything.wild.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("anything.wild.global. 30 IN A 240.0.0.10")}},
		{Qname: "two.labels.wild.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("two.labels.wild.global. 30 IN A 240.0.0.10")}},
		{Qname: "exact.wild.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("exact.wild.global. 30 IN A 240.0.0.11")}},
		{Qname: "*.wild.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("*.wild.global. 30 IN A 240.0.0.10")}},
		{Qname: "anything.wild.global.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa}},
		{Qname: "wild.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
		// RFC 4592: below an existing name the wildcard does not apply.
		{Qname: "x.exact.wild.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		// Case-insensitive, answered in the question's spelling.
		{Qname: "HttpBin.BAR.Global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("HttpBin.BAR.Global. 30 IN A 127.255.0.2")}},
		{Qname: "ANY.Wild.GLOBAL.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("ANY.Wild.GLOBAL. 30 IN A 240.0.0.10")}},
		{Qname: "NOTHERE.bar.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		// A host among others outside the zone is served; the others are not ours.
		{Qname: "api.partner.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("api.partner.global. 30 IN A 240.0.0.13")}},
		// ANY: one RRset is a complete answer (RFC 8482).
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeANY, Answer: []dns.RR{test.A("httpbin.bar.global. 30 IN A 127.255.0.2")}},
		{Qname: "v6.bookinfo.global.", Qtype: dns.TypeANY, Answer: []dns.RR{test.AAAA("v6.bookinfo.global. 30 IN AAAA fd00:255::6")}},
	})
}

func TestWildcardClosestEncloser(t *testing.T) {
	ig := newTestPlugin([]Entry{
		se("foo", "all", 0, hosts("*.global"), "240.0.0.1"),
		se("foo", "httpbin", 1, hosts("httpbin.bar.global"), "240.0.0.2"),
	})
	runCases(t, ig, []test.Case{
		{Qname: "anything.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("anything.global. 30 IN A 240.0.0.1")}},
		{Qname: "x.y.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("x.y.global. 30 IN A 240.0.0.1")}},
		// bar.global exists (an empty non-terminal), so it, not the apex, is the closest
		// encloser, and it has no wildcard.
		{Qname: "other.bar.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		{Qname: "bar.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
		// An escaped dot is part of a label: a\.bar is one label below the apex.
		{Qname: `a\.bar.global.`, Qtype: dns.TypeA, Answer: []dns.RR{test.A(`a\.bar.global. 30 IN A 240.0.0.1`)}},
	})
}

func TestTTL(t *testing.T) {
	ig := newIstioGlobal()
	ig.ttl = 5
	ig.Zones = []string{"global."}
	ig.table.Store(buildAt(seeds, ig.Zones, ig.ttl, nil))
	soa5 := test.SOA(fmt.Sprintf("global. 5 IN SOA ns.dns.global. hostmaster.global. %d 7200 1800 86400 5", epoch.Unix()))
	runCases(t, ig, []test.Case{
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("httpbin.bar.global. 5 IN A 127.255.0.2")}},
		{Qname: "nothere.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa5}},
	})
}

func TestSeveralEntriesPerHost(t *testing.T) {
	// Listed newest first: the union must still come oldest first, without duplicates.
	ig := newTestPlugin([]Entry{
		se("zzz", "newest", 30, hosts("shared.x.global"), "240.0.0.3", "240.0.0.1"),
		se("bbb", "same-age-b", 20, hosts("shared.x.global"), "240.0.0.2"),
		se("aaa", "same-age-a", 20, hosts("shared.x.global", "Shared.X.Global."), "240.0.0.4"),
		se("foo", "oldest", 10, hosts("shared.x.global"), "240.0.0.1", "fd00::1"),
	})
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion("shared.x.global.", dns.TypeA))
	var got []string
	for _, rr := range rec.Msg.Answer {
		got = append(got, rr.(*dns.A).A.String())
	}
	if want := []string{"240.0.0.1", "240.0.0.4", "240.0.0.2", "240.0.0.3"}; !slices.Equal(got, want) {
		t.Errorf("answer order %v, want %v (oldest entry first, then namespace/name)", got, want)
	}
	if s := statsOf(ig.table.Load()); s.entries != 4 || s.hosts != 1 {
		t.Errorf("entries=%d hosts=%d, want 4 and 1", s.entries, s.hosts)
	}
}

func TestStatusAddresses(t *testing.T) {
	withStatus := func(e Entry, sa ...StatusAddress) Entry {
		e.StatusAddresses = sa
		return e
	}
	ig := newTestPlugin([]Entry{
		// No spec address: Istio's allocation for each host, and only that host's.
		withStatus(se("foo", "auto", 0, hosts("a.auto.global", "b.auto.global")),
			StatusAddress{Host: "a.auto.global", Value: "240.240.0.1"},
			StatusAddress{Host: "a.auto.global", Value: "2001:2::1"},
			StatusAddress{Host: "B.Auto.Global", Value: "240.240.0.2"},
			StatusAddress{Host: "other.global", Value: "240.240.0.3"}),
		// A usable spec address wins over the status.
		withStatus(se("foo", "spec", 1, hosts("spec.auto.global"), "127.255.0.5"),
			StatusAddress{Host: "spec.auto.global", Value: "240.240.0.5"}),
		// Spec addresses that are all unusable fall back to the status.
		withStatus(se("foo", "garbage", 2, hosts("garbage.auto.global"), "hello"),
			StatusAddress{Host: "garbage.auto.global", Value: "240.240.0.6"}),
		// A bad status value is skipped like a bad spec value; the name still exists.
		withStatus(se("foo", "badstatus", 3, hosts("bad.auto.global")),
			StatusAddress{Host: "bad.auto.global", Value: "999.1.1.1"}),
	})
	runCases(t, ig, []test.Case{
		{Qname: "a.auto.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("a.auto.global. 30 IN A 240.240.0.1")}},
		{Qname: "a.auto.global.", Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("a.auto.global. 30 IN AAAA 2001:2::1")}},
		{Qname: "b.auto.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("b.auto.global. 30 IN A 240.240.0.2")}},
		{Qname: "other.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		{Qname: "spec.auto.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("spec.auto.global. 30 IN A 127.255.0.5")}},
		{Qname: "garbage.auto.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("garbage.auto.global. 30 IN A 240.240.0.6")}},
		{Qname: "bad.auto.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
	})
}

func TestOutsideZonesAndClasses(t *testing.T) {
	ig := newTestPlugin(seeds)
	for _, m := range []*dns.Msg{
		new(dns.Msg).SetQuestion("api.example.com.", dns.TypeA),
		new(dns.Msg).SetQuestion("xglobal.", dns.TypeA),
		{Question: []dns.Question{{Name: "httpbin.bar.global.", Qtype: dns.TypeA, Qclass: dns.ClassCHAOS}}},
		{Question: []dns.Question{}},
	} {
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		rcode, _ := ig.ServeDNS(context.Background(), rec, m)
		if rcode != dns.RcodeRefused || rec.Msg != nil {
			t.Errorf("%v: rcode %s, wrote %v; want it passed to the next plugin", m.Question, dns.RcodeToString[rcode], rec.Msg != nil)
		}
	}
}

func TestFallthrough(t *testing.T) {
	ig := newTestPlugin(seeds)
	ig.Fall = fall.F{Zones: []string{"bar.global."}}
	for _, tc := range []struct {
		name   string
		qtype  uint16
		toNext bool
	}{
		{"nothere.bar.global.", dns.TypeA, true},       // NXDOMAIN in a fallthrough zone
		{"nothere.hello.global.", dns.TypeA, false},    // NXDOMAIN elsewhere: answered
		{"httpbin.bar.global.", dns.TypeAAAA, false},   // NODATA never falls through
		{"httpbin.bar.global.", dns.TypeA, false},      // an answer
		{"NotHere.Bar.Global.", dns.TypeA, true},       // whatever the case
		{"x.exact.wild.global.", dns.TypeA, false},     // not in the fallthrough zone
		{"missing.x.bar.global.", dns.TypeAAAA, true},  // deeper
		{"helloworld.hello.global.", dns.TypeA, false}, // an answer
	} {
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		rcode, _ := ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion(tc.name, tc.qtype))
		if got := rcode == dns.RcodeRefused && rec.Msg == nil; got != tc.toNext {
			t.Errorf("%s %s: passed to next = %v, want %v", tc.name, dns.TypeToString[tc.qtype], got, tc.toNext)
		}
	}
}

func TestServfailBeforeSync(t *testing.T) {
	ig := newIstioGlobal()
	ig.Zones = []string{"global."}
	ig.Next = test.NextHandler(dns.RcodeRefused, nil)
	if ig.Ready() {
		t.Fatal("ready before any table was built")
	}
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rcode, err := ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion("httpbin.bar.global.", dns.TypeA))
	if rcode != dns.RcodeServerFailure || err != nil || rec.Msg != nil {
		t.Errorf("before sync: rcode %s err %v wrote %v; want SERVFAIL for the server to write", dns.RcodeToString[rcode], err, rec.Msg != nil)
	}
	// Names outside the zones are still passed on.
	rcode, _ = ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion("example.com.", dns.TypeA))
	if rcode != dns.RcodeRefused {
		t.Errorf("outside the zone before sync: rcode %s, want the next plugin's", dns.RcodeToString[rcode])
	}
	ig.table.Store(buildAt(nil, ig.Zones, ig.ttl, nil))
	if !ig.Ready() {
		t.Error("not ready after a table was stored")
	}
}

func TestSeveralZones(t *testing.T) {
	ig := newTestPlugin([]Entry{
		se("foo", "a", 0, hosts("a.global", "a.mesh", "x.sub.global"), "240.0.0.1"),
	}, "global.", "mesh.", "sub.global.")
	meshSOA := test.SOA(fmt.Sprintf("mesh. 30 IN SOA ns.dns.global. hostmaster.mesh. %d 7200 1800 86400 30", epoch.Unix()))
	subSOA := test.SOA(fmt.Sprintf("sub.global. 30 IN SOA ns.dns.global. hostmaster.sub.global. %d 7200 1800 86400 30", epoch.Unix()))
	runCases(t, ig, []test.Case{
		{Qname: "a.mesh.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("a.mesh. 30 IN A 240.0.0.1")}},
		{Qname: "b.mesh.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{meshSOA}},
		{Qname: "a.global.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa}},
		{Qname: "x.sub.global.", Qtype: dns.TypeAAAA, Ns: []dns.RR{subSOA}},
		{Qname: "y.sub.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{subSOA}},
		{Qname: "sub.global.", Qtype: dns.TypeSOA, Answer: []dns.RR{subSOA}},
	})
}

func TestTruncation(t *testing.T) {
	var addrs []string
	for i := range 200 {
		addrs = append(addrs, fmt.Sprintf("240.0.%d.%d", i/250, i%250+1))
	}
	ig := newTestPlugin([]Entry{se("foo", "big", 0, hosts("big.bar.global"), addrs...)})
	query := func(tcp bool, bufsize uint16) *dns.Msg {
		m := new(dns.Msg).SetQuestion("big.bar.global.", dns.TypeA)
		if bufsize > 0 {
			m.SetEdns0(bufsize, false)
		}
		rec := dnstest.NewRecorder(&test.ResponseWriter{TCP: tcp})
		// The server wraps every writer so: it truncates to the client's buffer.
		ig.ServeDNS(context.Background(), request.NewScrubWriter(m, rec), m)
		return rec.Msg
	}
	if udp := query(false, 0); !udp.Truncated || len(udp.Answer) >= 200 {
		t.Errorf("UDP without EDNS: TC=%v with %d answers, want TC and fewer than 200", udp.Truncated, len(udp.Answer))
	}
	if edns := query(false, 4096); edns.Truncated || len(edns.Answer) != 200 {
		t.Errorf("UDP with a 4096 buffer: TC=%v with %d answers, want all 200", edns.Truncated, len(edns.Answer))
	}
	if tcp := query(true, 0); tcp.Truncated || len(tcp.Answer) != 200 {
		t.Errorf("TCP: TC=%v with %d answers, want all 200", tcp.Truncated, len(tcp.Answer))
	}
}

// TestRepliesDoNotAliasTheTable guards the shared table: a later plugin may reorder a reply's
// sections in place (loadbalance) and the plugin itself renames owners (wildcards, case);
// neither may ever reach the table.
func TestRepliesDoNotAliasTheTable(t *testing.T) {
	ig := newTestPlugin([]Entry{
		se("foo", "two", 0, hosts("two.bar.global"), "240.0.0.1", "240.0.0.2"),
		se("foo", "wild", 1, hosts("*.w.global"), "240.0.0.3", "240.0.0.4"),
		seeds[0],
	})
	for _, name := range []string{"two.bar.global.", "Two.Bar.Global.", "x.w.global.", "httpbin.bar.global.", "nothere.global."} {
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion(name, dns.TypeA))
		for _, section := range [][]dns.RR{rec.Msg.Answer, rec.Msg.Ns} {
			slices.Reverse(section)
			for i := range section {
				section[i] = test.A("mutated. 1 IN A 192.0.2.1")
			}
		}
	}
	runCases(t, ig, []test.Case{
		{Qname: "two.bar.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("two.bar.global. 30 IN A 240.0.0.1"), test.A("two.bar.global. 30 IN A 240.0.0.2")}},
		{Qname: "y.w.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("y.w.global. 30 IN A 240.0.0.3"), test.A("y.w.global. 30 IN A 240.0.0.4")}},
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("httpbin.bar.global. 30 IN A 127.255.0.2")}},
		{Qname: "nothere.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
	})
	tb := ig.table.Load()
	if got := tb.node("two.bar.global.").host.addrs[0].String(); got != "240.0.0.1" {
		t.Errorf("the table's first address became %s", got)
	}
}

// TestServeAllocations keeps the hot path allocation-light: one allocation for an answer of
// one record or a negative answer, two when the owner must be renamed.
func TestServeAllocations(t *testing.T) {
	ig := newTestPlugin(seeds)
	w := &discardWriter{}
	for _, q := range []struct {
		name   string
		qtype  uint16
		allocs float64
	}{
		{"httpbin.bar.global.", dns.TypeA, 1},
		{"httpbin.bar.global.", dns.TypeAAAA, 1},
		{"nothere.bar.global.", dns.TypeA, 1},
		{"bar.global.", dns.TypeA, 1},
		{"HTTPBIN.bar.global.", dns.TypeA, 2},
		{"x.wild.global.", dns.TypeA, 2},
	} {
		m := new(dns.Msg).SetQuestion(q.name, q.qtype)
		allocs := testing.AllocsPerRun(100, func() { ig.ServeDNS(context.Background(), w, m) })
		if allocs > q.allocs {
			t.Errorf("%s %s: %.0f allocations per query, want %.0f", q.name, dns.TypeToString[q.qtype], allocs, q.allocs)
		}
	}
}

// discardWriter drops what it is given, as a server does once the reply is on the wire.
type discardWriter struct{ test.ResponseWriter }

func (*discardWriter) WriteMsg(*dns.Msg) error { return nil }

func assertProblems(t *testing.T, problems []Problem, want ...string) {
	t.Helper()
	var got []string
	for _, p := range problems {
		got = append(got, p.Kind+"/"+p.Reason)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("problems %v, want %v\n%s", got, want, problemLines(problems))
	}
}

func problemLines(problems []Problem) string {
	var b strings.Builder
	for _, p := range problems {
		b.WriteString("  " + p.String() + "\n")
	}
	return b.String()
}
