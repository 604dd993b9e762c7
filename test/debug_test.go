package test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// The records people debug with: SRV for the named ports, PTR for the served addresses, and a
// TXT record that says where a name came from. The TTL is not the default, to show that every
// record, and the SOA minimum, follows the plugin's ttl.
const debugTTL = 17

// debugCorefile serves the global zone and both reverse zones from the test API server, for
// the ServiceEntries of ns only; options go into the istioglobal block.
func debugCorefile(ns string, options ...string) string {
	return `global:{{.Port}} in-addr.arpa:{{.Port}} ip6.arpa:{{.Port}} {
    bind 127.0.0.1
    errors
    ready 127.0.0.1:{{.ReadyPort}}
    istioglobal global in-addr.arpa ip6.arpa {
        kubeconfig {{.Kubeconfig}}
        namespaces ` + ns + `
        ttl ` + fmt.Sprint(debugTTL) + `
        ` + strings.Join(options, "\n        ") + `
    }
}
`
}

// debugEntry is a v1 ServiceEntry of the guides' shape with the given ports instead of http1.
func debugEntry(ns, name string, hosts []string, ports []*networking.ServicePort, addrs ...string) *networkingv1.ServiceEntry {
	se := serviceEntryV1(ns, name, hosts, addrs...)
	se.Spec.Ports = ports
	se.Spec.Endpoints = []*networking.WorkloadEntry{{Address: "127.0.0.12"}}
	return se
}

// answer is a response reduced to what the tests compare; RRs are single-spaced strings.
type answer struct {
	rcode             string
	aa                bool
	answer, ns, extra []string
	txt               [][]string // the strings of each TXT answer
}

func (a answer) String() string {
	return fmt.Sprintf("%s aa=%v answer=%q authority=%q additional=%q", a.rcode, a.aa, a.answer, a.ns, a.extra)
}

func rrLines(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	return out
}

func ask(t *testing.T, c *coreDNS, name string, qtype uint16, tcp bool) answer {
	t.Helper()
	m := exchange(t, c.Addr, name, qtype, tcp)
	a := answer{rcode: dns.RcodeToString[m.Rcode], aa: m.Authoritative, answer: rrLines(m.Answer), ns: rrLines(m.Ns), extra: rrLines(m.Extra)}
	for _, rr := range m.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			a.txt = append(a.txt, txt.Txt)
		}
	}
	return a
}

// digLines are the records dig printed, single-spaced, without comments.
func digLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	return lines
}

func soaOf(zone string) *regexp.Regexp {
	z := regexp.QuoteMeta(zone)
	// Every zone names one name server, in the forward zone.
	return regexp.MustCompile(fmt.Sprintf(`^%s %d IN SOA ns\.dns\.global\. hostmaster\.%s \d+ 7200 1800 86400 %d$`, z, debugTTL, z, debugTTL))
}

func reverse(t *testing.T, addr string) string {
	t.Helper()
	r, err := dns.ReverseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDebugRecords creates ServiceEntries with TCP and UDP ports, dual-stack, shared, status
// and allocated addresses, and checks SRV, PTR and TXT with miekg/dns (UDP and TCP) and dig.
func TestDebugRecords(t *testing.T) {
	const ns = "debug"
	createNamespace(t, ns)
	tcpPort := &networking.ServicePort{Name: "http1", Number: 8000, Protocol: "http"}
	// The older of two entries for web.debug.global: dual-stack, a TCP port, and a port whose
	// name is not lower case (its SRV name is) and whose protocol is written in lower case.
	zz := applyServiceEntry(t, debugEntry(ns, "zz-web", []string{"web.debug.global"},
		[]*networking.ServicePort{tcpPort, {Name: "Admin", Number: 9090, Protocol: "grpc"}}, "127.255.0.2", "fd00:255::4"))
	// Creation times have a resolution of one second: make the second entry younger, though
	// its name sorts first. It adds a UDP port.
	time.Sleep(time.Until(zz.CreationTimestamp.Add(time.Second + 100*time.Millisecond)))
	aa := applyServiceEntry(t, debugEntry(ns, "aa-web", []string{"web.debug.global"},
		[]*networking.ServicePort{{Name: "dns", Number: 53, Protocol: "UDP"}, tcpPort}))
	if !aa.CreationTimestamp.After(zz.CreationTimestamp.Time) {
		t.Fatalf("aa-web (%v) is not younger than zz-web (%v)", aa.CreationTimestamp, zz.CreationTimestamp)
	}

	// Two hosts that share one address.
	applyServiceEntry(t, debugEntry(ns, "shared-a", []string{"shared-a.debug.global"}, []*networking.ServicePort{tcpPort}, "127.255.0.9"))
	applyServiceEntry(t, debugEntry(ns, "shared-b", []string{"shared-b.debug.global"}, []*networking.ServicePort{tcpPort}, "127.255.0.9"))
	// No address at all: a VIP of ours in each family (autoallocate is on by default).
	applyServiceEntry(t, debugEntry(ns, "auto", []string{"auto.debug.global"}, []*networking.ServicePort{tcpPort}))
	// No spec address, but one that Istio's allocator wrote in status.
	applyServiceEntry(t, debugEntry(ns, "st", []string{"st.debug.global"}, []*networking.ServicePort{tcpPort}))
	setServiceEntryAddresses(t, ns, "st", &networking.ServiceEntryAddress{Host: "st.debug.global", Value: "240.240.0.7"})

	c := startCoreDNS(t, debugCorefile(ns, "txt on"))
	c.waitReady(t, 20*time.Second)
	// One server block with three zones is one plugin instance: one informer, not three.
	eventually(t, 10*time.Second, func() error {
		if n := serviceEntryWatches(t); n != 1 {
			return fmt.Errorf("%d ServiceEntry watches open, want 1", n)
		}
		return nil
	})
	eventually(t, 5*time.Second, func() error {
		if got := aValues(t, c, "st.debug.global"); got != "240.240.0.7" {
			return fmt.Errorf("st.debug.global: %s, want its status address", got)
		}
		return nil
	})
	var autoV4, autoV6 string
	if vips := strings.Split(aValues(t, c, "auto.debug.global"), ","); len(vips) == 2 &&
		strings.HasPrefix(vips[0], "240.241.") && strings.HasPrefix(vips[1], "100::") {
		autoV4, autoV6 = vips[0], vips[1]
	} else {
		t.Fatalf("auto.debug.global: %v, want a VIP from 240.241.0.0/16 and one from 100::/64", vips)
	}

	ttl := fmt.Sprint(debugTTL)
	global, inAddr, ip6 := soaOf("global."), soaOf("in-addr.arpa."), soaOf("ip6.arpa.")
	webAddrs := []string{"web.debug.global. " + ttl + " IN A 127.255.0.2", "web.debug.global. " + ttl + " IN AAAA fd00:255::4"}
	webTXT := []string{"serviceentry=debug/zz-web", "serviceentry=debug/aa-web",
		"address=127.255.0.2 (spec)", "address=fd00:255::4 (spec)",
		"port=http1/8000/HTTP", "port=Admin/9090/GRPC", "port=dns/53/UDP"}
	ptr := func(addr, host string) string { return reverse(t, addr) + " " + ttl + " IN PTR " + host }
	for _, tcp := range []bool{false, true} {
		for _, tc := range []struct {
			name   string
			qtype  uint16
			rcode  int
			answer []string
			extra  []string       // for SRV: the target's A and AAAA, in any order
			soa    *regexp.Regexp // the SOA expected alone in the authority section
			txt    [][]string     // the strings of each TXT answer, in order
			sorted bool           // compare the answer in any order
		}{
			// SRV: one per named port, _udp for UDP and _tcp for every other protocol.
			{name: "_http1._tcp.web.debug.global.", qtype: dns.TypeSRV,
				answer: []string{"_http1._tcp.web.debug.global. " + ttl + " IN SRV 0 100 8000 web.debug.global."}, extra: webAddrs},
			{name: "_dns._udp.web.debug.global.", qtype: dns.TypeSRV,
				answer: []string{"_dns._udp.web.debug.global. " + ttl + " IN SRV 0 100 53 web.debug.global."}, extra: webAddrs},
			{name: "_admin._tcp.web.debug.global.", qtype: dns.TypeSRV,
				answer: []string{"_admin._tcp.web.debug.global. " + ttl + " IN SRV 0 100 9090 web.debug.global."}, extra: webAddrs},
			// Any case; the answer in the question's spelling.
			{name: "_ADMIN._Tcp.Web.DEBUG.global.", qtype: dns.TypeSRV,
				answer: []string{"_ADMIN._Tcp.Web.DEBUG.global. " + ttl + " IN SRV 0 100 9090 web.debug.global."}, extra: webAddrs},
			{name: "_http1._tcp.auto.debug.global.", qtype: dns.TypeSRV,
				answer: []string{"_http1._tcp.auto.debug.global. " + ttl + " IN SRV 0 100 8000 auto.debug.global."},
				extra:  []string{"auto.debug.global. " + ttl + " IN A " + autoV4, "auto.debug.global. " + ttl + " IN AAAA " + autoV6}},
			// A port name, protocol or host that is not there: NXDOMAIN.
			{name: "_nosuch._tcp.web.debug.global.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, soa: global},
			{name: "_dns._tcp.web.debug.global.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, soa: global},
			{name: "_http1._udp.web.debug.global.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, soa: global},
			{name: "_http1._tcp.nosuch.debug.global.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, soa: global},
			// _tcp.HOST exists as the parent of the SRV names; the host has no SRV of its own;
			// an SRV name has no A.
			{name: "_tcp.web.debug.global.", qtype: dns.TypeSRV, soa: global},
			{name: "web.debug.global.", qtype: dns.TypeSRV, soa: global},
			{name: "_http1._tcp.web.debug.global.", qtype: dns.TypeA, soa: global},

			// PTR: every host that holds a served address, from spec, status or allocation.
			{name: reverse(t, "127.255.0.2"), qtype: dns.TypePTR, answer: []string{ptr("127.255.0.2", "web.debug.global.")}},
			{name: reverse(t, "fd00:255::4"), qtype: dns.TypePTR, answer: []string{ptr("fd00:255::4", "web.debug.global.")}},
			{name: reverse(t, "127.255.0.9"), qtype: dns.TypePTR, sorted: true,
				answer: []string{ptr("127.255.0.9", "shared-a.debug.global."), ptr("127.255.0.9", "shared-b.debug.global.")}},
			{name: reverse(t, "240.240.0.7"), qtype: dns.TypePTR, answer: []string{ptr("240.240.0.7", "st.debug.global.")}},
			{name: reverse(t, autoV4), qtype: dns.TypePTR, answer: []string{ptr(autoV4, "auto.debug.global.")}},
			{name: reverse(t, autoV6), qtype: dns.TypePTR, answer: []string{ptr(autoV6, "auto.debug.global.")}},
			{name: "2.0.255.127.IN-ADDR.Arpa.", qtype: dns.TypePTR, answer: []string{"2.0.255.127.IN-ADDR.Arpa. " + ttl + " IN PTR web.debug.global."}},
			// Addresses nobody serves: NXDOMAIN with the reverse zone's SOA; a parent of served
			// reverse names: NODATA.
			{name: reverse(t, "127.255.0.99"), qtype: dns.TypePTR, rcode: dns.RcodeNameError, soa: inAddr},
			{name: reverse(t, "fd00:255::99"), qtype: dns.TypePTR, rcode: dns.RcodeNameError, soa: ip6},
			{name: "255.127.in-addr.arpa.", qtype: dns.TypePTR, soa: inAddr},
			// A served address asked as A, and a host asked as PTR: NODATA.
			{name: reverse(t, "127.255.0.2"), qtype: dns.TypeA, soa: inAddr},
			{name: "web.debug.global.", qtype: dns.TypePTR, soa: global},

			// TXT: the owning entries oldest first, the addresses and their origin, the ports,
			// the conflicts.
			{name: "web.debug.global.", qtype: dns.TypeTXT, txt: [][]string{webTXT}},
			{name: "WEB.Debug.global.", qtype: dns.TypeTXT, txt: [][]string{webTXT}},
			{name: "shared-a.debug.global.", qtype: dns.TypeTXT, txt: [][]string{{"serviceentry=debug/shared-a",
				"address=127.255.0.9 (spec)", "port=http1/8000/HTTP", "conflict=127.255.0.9 also shared-b.debug.global"}}},
			{name: "shared-b.debug.global.", qtype: dns.TypeTXT, txt: [][]string{{"serviceentry=debug/shared-b",
				"address=127.255.0.9 (spec)", "port=http1/8000/HTTP", "conflict=127.255.0.9 also shared-a.debug.global"}}},
			{name: "st.debug.global.", qtype: dns.TypeTXT, txt: [][]string{{"serviceentry=debug/st",
				"address=240.240.0.7 (status)", "port=http1/8000/HTTP"}}},
			{name: "auto.debug.global.", qtype: dns.TypeTXT, txt: [][]string{{"serviceentry=debug/auto",
				"address=" + autoV4 + " (allocated)", "address=" + autoV6 + " (allocated)", "port=http1/8000/HTTP"}}},
			// No TXT on the apex, an empty non-terminal, an SRV name or a reverse name.
			{name: "global.", qtype: dns.TypeTXT, soa: global},
			{name: "debug.global.", qtype: dns.TypeTXT, soa: global},
			{name: "_http1._tcp.web.debug.global.", qtype: dns.TypeTXT, soa: global},
			{name: reverse(t, "127.255.0.2"), qtype: dns.TypeTXT, soa: inAddr},
			{name: "nosuch.debug.global.", qtype: dns.TypeTXT, rcode: dns.RcodeNameError, soa: global},
		} {
			where := fmt.Sprintf("%s %s (tcp=%v)", tc.name, dns.TypeToString[tc.qtype], tcp)
			got := ask(t, c, tc.name, tc.qtype, tcp)
			wantAnswer, gotAnswer := tc.answer, got.answer
			if tc.txt != nil {
				// TXT strings hold spaces: compare the owner, TTL and type here, the strings next.
				wantAnswer, gotAnswer = nil, nil
				for range tc.txt {
					wantAnswer = append(wantAnswer, tc.name+" "+ttl+" IN TXT")
				}
				for _, l := range got.answer {
					f := strings.Fields(l)
					gotAnswer = append(gotAnswer, strings.Join(f[:min(4, len(f))], " "))
				}
				if !slices.EqualFunc(got.txt, tc.txt, slices.Equal) {
					t.Errorf("%s: TXT strings\n got %q\nwant %q", where, got.txt, tc.txt)
				}
			}
			if tc.sorted {
				gotAnswer, wantAnswer = slices.Sorted(slices.Values(gotAnswer)), slices.Sorted(slices.Values(wantAnswer))
			}
			if got.rcode != dns.RcodeToString[tc.rcode] || !got.aa || !slices.Equal(gotAnswer, wantAnswer) {
				t.Errorf("%s: %v\nwant %s aa=true answer=%q", where, got, dns.RcodeToString[tc.rcode], wantAnswer)
			}
			if !slices.Equal(slices.Sorted(slices.Values(got.extra)), slices.Sorted(slices.Values(tc.extra))) {
				t.Errorf("%s: additional %q, want %q", where, got.extra, tc.extra)
			}
			if tc.soa == nil && len(got.ns) > 0 || tc.soa != nil && (len(got.ns) != 1 || !tc.soa.MatchString(got.ns[0])) {
				t.Errorf("%s: authority %q, want %v", where, got.ns, tc.soa)
			}
		}
	}

	// The real dig, as the README shows it.
	out := dig(t, c.Addr, "SRV", "_http1._tcp.web.debug.global", "+noall", "+answer", "+additional")
	if got, want := digLines(out), append([]string{"_http1._tcp.web.debug.global. " + ttl + " IN SRV 0 100 8000 web.debug.global."}, webAddrs...); !slices.Equal(got, want) {
		t.Errorf("dig SRV _http1._tcp.web.debug.global:\n got %q\nwant %q", got, want)
	}
	out = dig(t, c.Addr, "SRV", "_dns._udp.web.debug.global", "+noall", "+answer")
	if got, want := digLines(out), []string{"_dns._udp.web.debug.global. " + ttl + " IN SRV 0 100 53 web.debug.global."}; !slices.Equal(got, want) {
		t.Errorf("dig SRV _dns._udp.web.debug.global:\n got %q\nwant %q", got, want)
	}
	out = dig(t, c.Addr, "SRV", "_nosuch._tcp.web.debug.global")
	if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "flags: qr aa") || !strings.Contains(out, "IN\tSOA\tns.dns.global.") {
		t.Errorf("dig SRV _nosuch._tcp.web.debug.global: want NXDOMAIN, aa and the SOA:\n%s", out)
	}
	for _, tc := range []struct{ addr, host string }{
		{"127.255.0.2", "web.debug.global."},
		{"fd00:255::4", "web.debug.global."},
		{autoV4, "auto.debug.global."},
	} {
		out := dig(t, c.Addr, "-x", tc.addr, "+noall", "+answer")
		if got, want := digLines(out), []string{ptr(tc.addr, tc.host)}; !slices.Equal(got, want) {
			t.Errorf("dig -x %s:\n got %q\nwant %q", tc.addr, got, want)
		}
	}
	out = dig(t, c.Addr, "-x", "127.255.0.99")
	if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "flags: qr aa") || !strings.Contains(out, "in-addr.arpa.\t\t"+ttl+"\tIN\tSOA\tns.dns.global.") {
		t.Errorf("dig -x 127.255.0.99: want NXDOMAIN, aa and the in-addr.arpa SOA:\n%s", out)
	}
	out = dig(t, c.Addr, "TXT", "web.debug.global", "+noall", "+answer")
	if got, want := digLines(out), []string{"web.debug.global. " + ttl + ` IN TXT "` + strings.Join(webTXT, `" "`) + `"`}; !slices.Equal(got, want) {
		t.Errorf("dig TXT web.debug.global:\n got %q\nwant %q", got, want)
	}
	out = dig(t, c.Addr, "TXT", "auto.debug.global", "+short")
	if !strings.Contains(out, `"address=`+autoV4+` (allocated)"`) {
		t.Errorf("dig TXT auto.debug.global +short: no allocated VIP:\n%s", out)
	}

	// A change shows in every record: shared-b moves to its own address, and the conflict, the
	// shared PTR and its old TXT are gone.
	applyServiceEntry(t, debugEntry(ns, "shared-b", []string{"shared-b.debug.global"}, []*networking.ServicePort{tcpPort}, "127.255.0.10"))
	eventually(t, 2*time.Second, func() error {
		got := ask(t, c, "shared-a.debug.global.", dns.TypeTXT, false)
		want := [][]string{{"serviceentry=debug/shared-a", "address=127.255.0.9 (spec)", "port=http1/8000/HTTP"}}
		if !slices.EqualFunc(got.txt, want, slices.Equal) {
			return fmt.Errorf("shared-a.debug.global TXT after the change: %q, want %q", got.txt, want)
		}
		if got := ask(t, c, reverse(t, "127.255.0.10"), dns.TypePTR, false); !slices.Equal(got.answer, []string{ptr("127.255.0.10", "shared-b.debug.global.")}) {
			return fmt.Errorf("PTR of 127.255.0.10 after the change: %v", got)
		}
		return nil
	})
	if got := ask(t, c, reverse(t, "127.255.0.9"), dns.TypePTR, false); !slices.Equal(got.answer, []string{ptr("127.255.0.9", "shared-a.debug.global.")}) {
		t.Errorf("PTR of 127.255.0.9 after the change: %v", got)
	}
}

// TestTXTOffByDefault: without `txt on`, TXT is NODATA (the facts would tell any client the
// mesh's namespaces and names) and SRV and PTR are as ever; reverse zones not given to the
// plugin are not answered; `fallthrough` passes unserved reverse names on.
func TestTXTOffByDefault(t *testing.T) {
	const ns = "debug-off"
	createNamespace(t, ns)
	applyServiceEntry(t, debugEntry(ns, "web", []string{"web.debug-off.global"},
		[]*networking.ServicePort{{Name: "http1", Number: 8000, Protocol: "HTTP"}}, "127.255.0.2", "fd00:255::4"))
	// Only in-addr.arpa besides global; whoami, after istioglobal, answers what falls through.
	c := startCoreDNS(t, `global:{{.Port}} in-addr.arpa:{{.Port}} {
    bind 127.0.0.1
    errors
    ready 127.0.0.1:{{.ReadyPort}}
    istioglobal global in-addr.arpa {
        kubeconfig {{.Kubeconfig}}
        namespaces `+ns+`
        ttl `+fmt.Sprint(debugTTL)+`
        fallthrough in-addr.arpa
    }
    whoami
}
`)
	c.waitReady(t, 20*time.Second)
	ttl := fmt.Sprint(debugTTL)
	global := soaOf("global.")

	for _, tcp := range []bool{false, true} {
		got := ask(t, c, "web.debug-off.global.", dns.TypeTXT, tcp)
		if got.rcode != "NOERROR" || len(got.answer) != 0 || len(got.ns) != 1 || !global.MatchString(got.ns[0]) {
			t.Errorf("TXT with TXT off (tcp=%v): %v, want NODATA with the SOA", tcp, got)
		}
	}
	out := dig(t, c.Addr, "TXT", "web.debug-off.global", "+noall", "+comments", "+answer", "+authority")
	if !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "ANSWER: 0,") || !strings.Contains(out, "IN\tSOA\tns.dns.global.") {
		t.Errorf("dig TXT with TXT off: want NODATA with the SOA:\n%s", out)
	}
	if got := ask(t, c, "_http1._tcp.web.debug-off.global.", dns.TypeSRV, false); !slices.Equal(got.answer,
		[]string{"_http1._tcp.web.debug-off.global. " + ttl + " IN SRV 0 100 8000 web.debug-off.global."}) {
		t.Errorf("SRV with TXT off: %v", got)
	}
	out = dig(t, c.Addr, "-x", "127.255.0.2", "+noall", "+answer")
	if got, want := digLines(out), []string{"2.0.255.127.in-addr.arpa. " + ttl + " IN PTR web.debug-off.global."}; !slices.Equal(got, want) {
		t.Errorf("dig -x 127.255.0.2 with TXT off:\n got %q\nwant %q", got, want)
	}
	// An unserved address falls through to whoami, which answers with the client's address.
	rev := reverse(t, "127.255.0.99")
	got := ask(t, c, rev, dns.TypePTR, false)
	if got.rcode != "NOERROR" || !slices.ContainsFunc(got.extra, func(l string) bool { return strings.HasPrefix(l, rev+" 0 IN A 127.0.0.1") }) {
		t.Errorf("PTR of an unserved address with fallthrough: %v, want whoami's answer", got)
	}
	// ip6.arpa is neither the plugin's nor the server's: REFUSED.
	out = dig(t, c.Addr, "-x", "fd00:255::4")
	if !strings.Contains(out, "status: REFUSED") {
		t.Errorf("dig -x fd00:255::4 without ip6.arpa: want REFUSED:\n%s", out)
	}
}
