package istioglobal

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

func pluginWithNameServer(ns nameServer, entries []Entry, zones ...string) *IstioGlobal {
	ig := newTestPlugin(nil, zones...)
	ig.table.Store(build(entries, tableConfig{zones: zones, ttl: ig.ttl, ns: ns}, uint32(epoch.Unix())))
	return ig
}

func TestNameServerResolves(t *testing.T) {
	ns := nameServer{name: "ns.dns.global.", addrs: []netip.Addr{netip.MustParseAddr("10.96.0.53"), netip.MustParseAddr("fd00::53")}}
	ig := pluginWithNameServer(ns, seeds, "global.", "in-addr.arpa.")
	glue := []dns.RR{test.A("ns.dns.global. 30 IN A 10.96.0.53"), test.AAAA("ns.dns.global. 30 IN AAAA fd00::53")}
	runCases(t, ig, []test.Case{
		{Qname: "global.", Qtype: dns.TypeNS, Answer: []dns.RR{test.NS("global. 30 IN NS ns.dns.global.")}, Extra: glue},
		{Qname: "in-addr.arpa.", Qtype: dns.TypeNS, Answer: []dns.RR{test.NS("in-addr.arpa. 30 IN NS ns.dns.global.")}, Extra: glue},
		{Qname: "ns.dns.global.", Qtype: dns.TypeA, Answer: glue[:1]},
		{Qname: "NS.dns.Global.", Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("NS.dns.Global. 30 IN AAAA fd00::53")}},
		{Qname: "dns.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
	})
}

func TestNameServerElsewhere(t *testing.T) {
	ig := pluginWithNameServer(nameServer{name: "istiocoredns.istio-system.svc.cluster.local."}, seeds, "global.")
	runCases(t, ig, []test.Case{
		{Qname: "global.", Qtype: dns.TypeNS, Answer: []dns.RR{test.NS("global. 30 IN NS istiocoredns.istio-system.svc.cluster.local.")}},
		{Qname: "ns.dns.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError,
			Ns: []dns.RR{test.SOA("global. 30 IN SOA istiocoredns.istio-system.svc.cluster.local. hostmaster.global. 1767225600 7200 1800 86400 30")}},
	})
}

// Without addresses (no nameserver, no bind) the NS target is no name of the table's, so that a
// wildcard of the zone still covers it (RFC 4592); setup warns about it.
func TestNameServerWithoutAddresses(t *testing.T) {
	ig := newTestPlugin(seeds)
	runCases(t, ig, []test.Case{{Qname: "ns.dns.global.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}}})
	ig = newTestPlugin(append(slices.Clone(seeds), se("foo", "all", 9, hosts("*.global"), "240.0.0.99")))
	runCases(t, ig, []test.Case{{Qname: "ns.dns.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("ns.dns.global. 30 IN A 240.0.0.99")}}})
}

func TestServiceEntryCannotTakeTheNameServer(t *testing.T) {
	ns := nameServer{name: "ns.dns.global.", addrs: []netip.Addr{netip.MustParseAddr("10.96.0.53")}}
	ig := pluginWithNameServer(ns, append(seeds, se("evil", "ns", 99, hosts("ns.dns.global"), "240.0.0.66")), "global.")
	runCases(t, ig, []test.Case{{Qname: "ns.dns.global.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("ns.dns.global. 30 IN A 10.96.0.53")}}})
	assertProblems(t, igProblems(ig), "host/invalid_host")
}

func TestAnyReturnsAnRRset(t *testing.T) {
	optOut := se("foo", "noaddr", 9, hosts("noaddr.bar.global"))
	optOut.Labels = map[string]string{optOutLabel: "false"}
	ig := newTestPlugin(append(seeds, optOut))
	runCases(t, ig, []test.Case{
		{Qname: "noaddr.bar.global.", Qtype: dns.TypeANY, Answer: []dns.RR{test.TXT(`noaddr.bar.global. 30 IN TXT "serviceentry=foo/noaddr"`)}},
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeANY, Answer: []dns.RR{test.A("httpbin.bar.global. 30 IN A 127.255.0.2")}},
		{Qname: "bar.global.", Qtype: dns.TypeANY, Ns: []dns.RR{soa}}, // an empty non-terminal has none
	})
	ig.txt = false
	runCases(t, ig, []test.Case{{Qname: "noaddr.bar.global.", Qtype: dns.TypeANY, Ns: []dns.RR{soa}}})
}

// NOTIFY, and any other opcode the server passes on, is not implemented; zone transfers are
// refused until they are. Both are left to the server to write, without AA.
func TestOpcodesAndTransfers(t *testing.T) {
	ig := newTestPlugin(seeds)
	for _, tc := range []struct {
		name  string
		msg   *dns.Msg
		rcode int
	}{
		{"NOTIFY", func() *dns.Msg { m := new(dns.Msg).SetNotify("global."); return m }(), dns.RcodeNotImplemented},
		{"NOTIFY for a name", func() *dns.Msg { m := new(dns.Msg).SetNotify("httpbin.bar.global."); return m }(), dns.RcodeNotImplemented},
		{"AXFR", new(dns.Msg).SetAxfr("global."), dns.RcodeRefused},
		{"IXFR", new(dns.Msg).SetIxfr("global.", 1, "ns.dns.global.", "hostmaster.global."), dns.RcodeRefused},
	} {
		rec := dnstest.NewRecorder(&test.ResponseWriter{TCP: true})
		rc, err := ig.ServeDNS(context.Background(), rec, tc.msg)
		if err != nil || rc != tc.rcode || rec.Msg != nil {
			t.Errorf("%s: rcode %s, err %v, written %v; want %s left to the server", tc.name, dns.RcodeToString[rc], err, rec.Msg, dns.RcodeToString[tc.rcode])
		}
	}
	// Another zone's transfer is not ours to refuse.
	ig.Next = test.NextHandler(dns.RcodeNotAuth, nil)
	rec := dnstest.NewRecorder(&test.ResponseWriter{TCP: true})
	if rc, _ := ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetAxfr("example.com.")); rc != dns.RcodeNotAuth {
		t.Errorf("AXFR of another zone: %s, want the next plugin's answer", dns.RcodeToString[rc])
	}
}
