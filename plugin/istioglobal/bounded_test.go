package istioglobal

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// reply serves one question and returns the reply, checking that it packs into one TCP message.
func packedReply(t *testing.T, ig *IstioGlobal, name string, qtype uint16) *dns.Msg {
	t.Helper()
	rec := dnstest.NewRecorder(&test.ResponseWriter{TCP: true})
	if _, err := ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion(name, qtype)); err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	if rec.Msg == nil {
		t.Fatalf("%s %s: nothing written", name, dns.TypeToString[qtype])
	}
	m := rec.Msg.Copy()
	m.Compress = true // as CoreDNS's server does for a reply that needs it
	wire, err := m.Pack()
	if err != nil {
		t.Fatalf("%s %s: the reply does not pack: %v", name, dns.TypeToString[qtype], err)
	}
	if len(wire) > dns.MaxMsgSize {
		t.Fatalf("%s %s: %d octets, more than one TCP message holds", name, dns.TypeToString[qtype], len(wire))
	}
	return rec.Msg
}

func txtFacts(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, txt.Txt...)
		}
	}
	return out
}

func hasFact(facts []string, want string) bool {
	for _, f := range facts {
		if f == want {
			return true
		}
	}
	return false
}

// 10k entries share one address (a copy-pasted VIP, or an adversary): each answer stays
// bounded and says how much it left out.
func TestSharedAddressIsBounded(t *testing.T) {
	const n = 10_000
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = se("foo", fmt.Sprintf("e%d", i), i, hosts(fmt.Sprintf("h%d.x.global", i)), "240.0.0.1")
	}
	ig := newTestPlugin(entries, "global.", "in-addr.arpa.")
	tb := ig.table.Load()

	if a := packedReply(t, ig, "h0.x.global.", dns.TypeA); len(a.Answer) != 1 {
		t.Errorf("A: %d records, want 1", len(a.Answer))
	}
	facts := txtFacts(packedReply(t, ig, "h0.x.global.", dns.TypeTXT))
	if !hasFact(facts, "conflict=240.0.0.1 also h1.x.global") || !hasFact(facts, fmt.Sprintf("conflict=+%d more", n-1-maxFactsPerKind)) {
		t.Errorf("TXT of h0 (%d strings) does not name the first conflicts and count the rest: %q", len(facts), facts)
	}
	ptr := packedReply(t, ig, "1.0.0.240.in-addr.arpa.", dns.TypePTR)
	if len(ptr.Answer) != maxPTRPerAddress || ptr.Answer[0].(*dns.PTR).Ptr != "h0.x.global." {
		t.Errorf("PTR: %d records starting %v, want the %d oldest holders", len(ptr.Answer), ptr.Answer[0], maxPTRPerAddress)
	}
	// The address is counted once for its PTR holders and once for the conflicts every holder's
	// facts leave out: not once per holder, which would cost each change O(holders).
	if statsOf(tb).capped[cappedPTR] != 1 || statsOf(tb).capped[cappedTXT] != 1 {
		t.Errorf("capped %v, want ptr 1 and txt 1 (the address)", statsOf(tb).capped)
	}
}

// 10k entries for one host, each with its own address and port: the A RRset, the SRV RRset
// and the TXT facts are bounded.
func TestManyEntriesForOneHostAreBounded(t *testing.T) {
	const n = 10_000
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = withPorts(se("foo", fmt.Sprintf("e%d", i), i, hosts("h.x.global"), benchAddr(i)),
			Port{Name: "http", Number: uint32(1000 + i), Protocol: "HTTP"})
	}
	ig := newTestPlugin(entries, "global.", "in-addr.arpa.")
	tb := ig.table.Load()
	if a := packedReply(t, ig, "h.x.global.", dns.TypeA); len(a.Answer) != maxAddressesPerHost {
		t.Errorf("A: %d records, want %d", len(a.Answer), maxAddressesPerHost)
	}
	if srv := packedReply(t, ig, "_http._tcp.h.x.global.", dns.TypeSRV); len(srv.Answer) != maxPortsPerHost {
		t.Errorf("SRV: %d records, want %d", len(srv.Answer), maxPortsPerHost)
	}
	facts := txtFacts(packedReply(t, ig, "h.x.global.", dns.TypeTXT))
	for _, want := range []string{"serviceentry=foo/e0", fmt.Sprintf("serviceentry=+%d more", n-maxFactsPerKind),
		fmt.Sprintf("address=+%d more", maxAddressesPerHost-maxFactsPerKind), fmt.Sprintf("port=+%d more", n-maxPortsPerHost)} {
		if !hasFact(facts, want) {
			t.Errorf("TXT lacks %q: %q", want, facts)
		}
	}
	if statsOf(tb).capped[cappedSRV] != 1 || statsOf(tb).capped[cappedTXT] != 1 {
		t.Errorf("capped %v, want srv 1 and txt 1", statsOf(tb).capped)
	}
	assertProblems(t, problemsOf(tb), "address/too_many")
}

// The largest names and RRsets an entry can hold still pack: 253-character hosts with 63-octet
// labels, 256 addresses of each family, the longest port names.
func TestLargestAnswersPack(t *testing.T) {
	label := strings.Repeat("a", 63)
	long := func(i int) string { // 253 characters, ending in .x.global
		name := fmt.Sprintf("%d%s.%s.%s.", i, label[:62], label, label)
		return name + strings.Repeat("b", 253-len(name)-len(".x.global")) + ".x.global"
	}
	var addrs []string
	for i := range maxAddressesPerHost {
		addrs = append(addrs, benchAddr(i), fmt.Sprintf("fd00:ffff:ffff:ffff:ffff:ffff:ffff:%x", i+1))
	}
	var entries []Entry
	for i := range 40 {
		e := se("foo", fmt.Sprintf("%s-%d", label[:60], i), i, hosts(long(i)), addrs...)
		e = withPorts(e, Port{Name: label[:15], Number: 80, Protocol: "TCP"}, Port{Name: label[:14] + "b", Number: 81, Protocol: "UDP"})
		entries = append(entries, e)
	}
	// And the longest SRV name there can be (254 characters with the dot), with more ports
	// than one SRV RRset holds and every address in the additional section.
	srvHost := long(99)[253-231:]
	srvName := "_" + label[:15] + "._tcp." + srvHost + "."
	srvEntry := se("foo", "srv", 99, hosts(srvHost), addrs...)
	for p := range 40 {
		srvEntry.Ports = append(srvEntry.Ports, Port{Name: label[:15], Number: uint32(p + 1), Protocol: "TCP"})
	}
	entries = append(entries, srvEntry)
	ig := newTestPlugin(entries, "global.", "in-addr.arpa.", "ip6.arpa.")
	if len(srvName) != 254 {
		t.Fatalf("test SRV name has %d characters", len(srvName))
	}
	if m := packedReply(t, ig, srvName, dns.TypeSRV); len(m.Answer) != maxPortsPerHost || len(m.Extra) != 2*maxAddressesPerHost {
		t.Errorf("longest SRV: %d answers, %d additional, want %d and %d", len(m.Answer), len(m.Extra), maxPortsPerHost, 2*maxAddressesPerHost)
	}
	if len(long(0)) != 253 {
		t.Fatalf("test host has %d characters", len(long(0)))
	}
	host := long(0) + "."
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{host, dns.TypeA}, {host, dns.TypeAAAA}, {host, dns.TypeTXT}, {host, dns.TypeANY},
		{"_" + label[:15] + "._tcp." + host, dns.TypeSRV},
		{"1.0.0.240.in-addr.arpa.", dns.TypePTR},
		{must(dns.ReverseAddr("fd00:ffff:ffff:ffff:ffff:ffff:ffff:1")), dns.TypePTR},
	} {
		packedReply(t, ig, q.name, q.qtype)
	}
	// The SRV names of these hosts would be longer than a name can be: skipped, reported.
	if rc := rcode(t, ig, "_"+label[:15]+"._tcp."+host, dns.TypeSRV); rc != dns.RcodeNameError {
		t.Errorf("SRV beyond 255 octets: %s, want NXDOMAIN", dns.RcodeToString[rc])
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// One entry with many hosts, each taking all of the entry's addresses and ports: each host
// keeps at most the caps, so the table grows with hosts × caps, not hosts × declarations, and
// the problems stay few and short.
func TestOneEntryWithManyHostsIsBounded(t *testing.T) {
	const nHosts, nDecl = 2_000, 2_000
	e := se("foo", "wide", 0, nil)
	for i := range nHosts {
		e.Hosts = append(e.Hosts, fmt.Sprintf("h%d.x.global", i))
	}
	for i := range nDecl {
		e.Addresses = append(e.Addresses, benchAddr(i))
		e.Ports = append(e.Ports, Port{Name: fmt.Sprintf("p%d", i), Number: uint32(1000 + i), Protocol: "TCP"})
	}
	ig := newTestPlugin([]Entry{e}, "global.", "in-addr.arpa.")
	tb := ig.table.Load()
	// Per host: the host, _tcp.HOST and maxPortsPerHost SRV names; per served address its
	// reverse name and the ENTs above it (few).
	if max := nHosts*(2+maxPortsPerHost) + maxAddressesPerHost*4 + 16; tb.names.len > max {
		t.Errorf("%d names, want at most %d", tb.names.len, max)
	}
	if a := packedReply(t, ig, "h0.x.global.", dns.TypeA); len(a.Answer) != maxAddressesPerHost {
		t.Errorf("A: %d records, want %d", len(a.Answer), maxAddressesPerHost)
	}
	facts := txtFacts(packedReply(t, ig, "h1.x.global.", dns.TypeTXT))
	if !hasFact(facts, fmt.Sprintf("port=+%d more", nDecl-maxPortsPerHost)) {
		t.Errorf("TXT does not count the ports left out: %q", facts)
	}
	if ptr := packedReply(t, ig, "0.0.0.240.in-addr.arpa.", dns.TypePTR); len(ptr.Answer) != maxPTRPerAddress {
		t.Errorf("PTR: %d records, want %d", len(ptr.Answer), maxPTRPerAddress)
	}
	if len(problemsOf(tb)) != nHosts { // too_many once per host
		t.Errorf("%d problems, want one per host", len(problemsOf(tb)))
	}
	for _, p := range problemsOf(tb) {
		if len(p.String()) > 300 {
			t.Fatalf("a problem of %d bytes: %.300s", len(p.String()), p)
		}
	}
}

// Many entries for one host, each with a port whose SRV name is too long: one short problem.
func TestTooLongSRVNamesAreOneProblem(t *testing.T) {
	host := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 50) + ".global"
	var entries []Entry
	for i := range 1000 {
		entries = append(entries, withPorts(se("foo", fmt.Sprintf("e%d", i), i, hosts(host), benchAddr(i)),
			Port{Name: "averylongportname", Number: uint32(1000 + i), Protocol: "TCP"}))
	}
	tb := newTestPlugin(entries).table.Load()
	var srv []Problem
	for _, p := range problemsOf(tb) {
		if p.Kind == kindPort {
			srv = append(srv, p)
		}
	}
	if len(srv) != 1 || len(srv[0].String()) > 400 || !strings.Contains(srv[0].Entry, "and 997 more") {
		t.Errorf("SRV problems %v, want one naming a few entries", srv)
	}
}
