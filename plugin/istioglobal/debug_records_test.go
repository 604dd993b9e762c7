package istioglobal

import (
	"context"
	"fmt"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

func withPorts(e Entry, ports ...Port) Entry {
	e.Ports = ports
	return e
}

// debugEntries: the seeds' httpbin with a TCP and a UDP port, a dual-stack host, a VIP held by
// two hosts, and an entry without addresses that gets an allocated VIP.
var debugEntries = []Entry{
	withPorts(se("foo", "httpbin-bar", 0, hosts("httpbin.bar.global"), "127.255.0.2"),
		Port{Name: "http1", Number: 8000, Protocol: "http"}, Port{Name: "DNS", Number: 53, Protocol: "UDP"}, Port{Number: 9000, Protocol: "TCP"}),
	withPorts(se("foo", "ratings", 1, hosts("ratings.bookinfo.global"), "240.0.0.4", "fd00:255::4"),
		Port{Name: "http", Number: 9080, Protocol: "HTTP"}),
	se("foo", "one", 2, hosts("one.x.global"), "240.0.0.9"),
	se("bar", "two", 3, hosts("two.x.global"), "240.0.0.9"),
	se("foo", "auto", 4, hosts("auto.x.global")),
	withPorts(se("foo", "wild", 5, hosts("*.wild.global"), "240.0.0.10"), Port{Name: "http", Number: 80, Protocol: "HTTP"}),
}

func debugPlugin(t *testing.T, zones ...string) *IstioGlobal {
	t.Helper()
	ig := newTestPlugin(nil, zones...)
	ig.table.Store(buildAt(debugEntries, ig.Zones, ig.ttl, (&recordingAlloc{}).alloc))
	return ig
}

func TestSRV(t *testing.T) {
	ig := debugPlugin(t)
	runCases(t, ig, []test.Case{
		{Qname: "_http1._tcp.httpbin.bar.global.", Qtype: dns.TypeSRV,
			Answer: []dns.RR{test.SRV("_http1._tcp.httpbin.bar.global. 30 IN SRV 0 100 8000 httpbin.bar.global.")},
			Extra:  []dns.RR{test.A("httpbin.bar.global. 30 IN A 127.255.0.2")}},
		{Qname: "_dns._udp.httpbin.bar.global.", Qtype: dns.TypeSRV,
			Answer: []dns.RR{test.SRV("_dns._udp.httpbin.bar.global. 30 IN SRV 0 100 53 httpbin.bar.global.")},
			Extra:  []dns.RR{test.A("httpbin.bar.global. 30 IN A 127.255.0.2")}},
		{Qname: "_HTTP1._TCP.HttpBin.bar.global.", Qtype: dns.TypeSRV,
			Answer: []dns.RR{test.SRV("_HTTP1._TCP.HttpBin.bar.global. 30 IN SRV 0 100 8000 httpbin.bar.global.")},
			Extra:  []dns.RR{test.A("httpbin.bar.global. 30 IN A 127.255.0.2")}},
		{Qname: "_http._tcp.ratings.bookinfo.global.", Qtype: dns.TypeSRV,
			Answer: []dns.RR{test.SRV("_http._tcp.ratings.bookinfo.global. 30 IN SRV 0 100 9080 ratings.bookinfo.global.")},
			Extra:  []dns.RR{test.A("ratings.bookinfo.global. 30 IN A 240.0.0.4"), test.AAAA("ratings.bookinfo.global. 30 IN AAAA fd00:255::4")}},
		// Negative answers follow the A/AAAA rules.
		{Qname: "_nope._tcp.httpbin.bar.global.", Qtype: dns.TypeSRV, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		{Qname: "_http1._udp.httpbin.bar.global.", Qtype: dns.TypeSRV, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		{Qname: "_http1._tcp.nothere.bar.global.", Qtype: dns.TypeSRV, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
		{Qname: "_tcp.httpbin.bar.global.", Qtype: dns.TypeSRV, Ns: []dns.RR{soa}},
		{Qname: "_http1._tcp.httpbin.bar.global.", Qtype: dns.TypeA, Ns: []dns.RR{soa}},
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeSRV, Ns: []dns.RR{soa}},
		// A wildcard host has no name to hang SRV under: below it, the wildcard answers.
		{Qname: "_http._tcp.x.wild.global.", Qtype: dns.TypeSRV, Ns: []dns.RR{soa}},
	})
}

func TestPTR(t *testing.T) {
	ig := debugPlugin(t, "global.", "in-addr.arpa.", "ip6.arpa.")
	revSOA := func(z string) dns.RR {
		// One name server for every zone: ns.dns. and the forward zone.
		return test.SOA(fmt.Sprintf("%s 30 IN SOA ns.dns.global. hostmaster.%s %d 7200 1800 86400 30", z, z, epoch.Unix()))
	}
	runCases(t, ig, []test.Case{
		{Qname: "2.0.255.127.in-addr.arpa.", Qtype: dns.TypePTR, Answer: []dns.RR{test.PTR("2.0.255.127.in-addr.arpa. 30 IN PTR httpbin.bar.global.")}},
		{Qname: "4.0.0.240.in-addr.arpa.", Qtype: dns.TypePTR, Answer: []dns.RR{test.PTR("4.0.0.240.in-addr.arpa. 30 IN PTR ratings.bookinfo.global.")}},
		{Qname: "4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.5.2.0.0.0.d.f.ip6.arpa.", Qtype: dns.TypePTR,
			Answer: []dns.RR{test.PTR("4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.5.2.0.0.0.d.f.ip6.arpa. 30 IN PTR ratings.bookinfo.global.")}},
		// Every host that holds a VIP, oldest first; allocated VIPs too.
		{Qname: "9.0.0.240.in-addr.arpa.", Qtype: dns.TypePTR, Answer: []dns.RR{
			test.PTR("9.0.0.240.in-addr.arpa. 30 IN PTR one.x.global."), test.PTR("9.0.0.240.in-addr.arpa. 30 IN PTR two.x.global.")}},
		{Qname: "1.0.241.240.in-addr.arpa.", Qtype: dns.TypePTR, Answer: []dns.RR{test.PTR("1.0.241.240.in-addr.arpa. 30 IN PTR auto.x.global.")}},
		{Qname: "2.0.255.127.IN-ADDR.ARPA.", Qtype: dns.TypePTR, Answer: []dns.RR{test.PTR("2.0.255.127.IN-ADDR.ARPA. 30 IN PTR httpbin.bar.global.")}},
		// Other addresses: NXDOMAIN with the reverse zone's SOA; parents exist.
		{Qname: "3.0.255.127.in-addr.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeNameError, Ns: []dns.RR{revSOA("in-addr.arpa.")}},
		{Qname: "1.1.1.1.in-addr.arpa.", Qtype: dns.TypePTR, Rcode: dns.RcodeNameError, Ns: []dns.RR{revSOA("in-addr.arpa.")}},
		{Qname: "0.255.127.in-addr.arpa.", Qtype: dns.TypePTR, Ns: []dns.RR{revSOA("in-addr.arpa.")}},
		{Qname: "2.0.255.127.in-addr.arpa.", Qtype: dns.TypeA, Ns: []dns.RR{revSOA("in-addr.arpa.")}},
	})
	// Without the reverse zones there are no PTRs, and the queries are not ours.
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rcode, _ := debugPlugin(t).ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion("2.0.255.127.in-addr.arpa.", dns.TypePTR))
	if rcode != dns.RcodeRefused || rec.Msg != nil {
		t.Errorf("PTR without reverse zones: rcode %s, want it passed on", dns.RcodeToString[rcode])
	}
}

func TestTXT(t *testing.T) {
	ig := debugPlugin(t)
	txt := func(name string, facts ...string) dns.RR {
		return &dns.TXT{Hdr: header(name, dns.TypeTXT, 30), Txt: facts}
	}
	runCases(t, ig, []test.Case{
		{Qname: "httpbin.bar.global.", Qtype: dns.TypeTXT, Answer: []dns.RR{txt("httpbin.bar.global.",
			"serviceentry=foo/httpbin-bar", "address=127.255.0.2 (spec)", "port=http1/8000/HTTP", "port=DNS/53/UDP")}},
		{Qname: "one.x.global.", Qtype: dns.TypeTXT, Answer: []dns.RR{txt("one.x.global.",
			"serviceentry=foo/one", "address=240.0.0.9 (spec)", "conflict=240.0.0.9 also two.x.global")}},
		{Qname: "auto.x.global.", Qtype: dns.TypeTXT, Answer: []dns.RR{txt("auto.x.global.",
			"serviceentry=foo/auto", "address=240.241.0.1 (allocated)", "address=fd00::1 (allocated)")}},
		{Qname: "any.wild.global.", Qtype: dns.TypeTXT, Answer: []dns.RR{txt("any.wild.global.",
			"serviceentry=foo/wild", "address=240.0.0.10 (spec)", "port=http/80/HTTP")}},
		{Qname: "bar.global.", Qtype: dns.TypeTXT, Ns: []dns.RR{soa}},
		{Qname: "global.", Qtype: dns.TypeTXT, Ns: []dns.RR{soa}},
		{Qname: "nothere.global.", Qtype: dns.TypeTXT, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}},
	})
	ig.txt = false
	runCases(t, ig, []test.Case{{Qname: "httpbin.bar.global.", Qtype: dns.TypeTXT, Ns: []dns.RR{soa}}})
}

func TestStatusOrigin(t *testing.T) {
	e := se("foo", "st", 0, hosts("st.x.global"))
	e.StatusAddresses = []StatusAddress{{Host: "st.x.global", Value: "240.240.0.3"}}
	ig := newTestPlugin([]Entry{e})
	runCases(t, ig, []test.Case{{Qname: "st.x.global.", Qtype: dns.TypeTXT, Answer: []dns.RR{
		&dns.TXT{Hdr: header("st.x.global.", dns.TypeTXT, 30), Txt: []string{"serviceentry=foo/st", "address=240.240.0.3 (status)"}}}}})
}
