package istioglobal

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// TestBadInput builds each malformed ServiceEntry beside a good one. The good one must keep
// serving, the bad part must be skipped with the named reason, and what is usable in the bad
// entry must still be served.
func TestBadInput(t *testing.T) {
	good := se("foo", "good", 0, hosts("httpbin.bar.global"), "127.255.0.2")
	manyAddrs := make([]string, 300)
	for i := range manyAddrs {
		manyAddrs[i] = fmt.Sprintf("240.1.%d.%d", i/200, i%200+1)
	}
	long := strings.Repeat("a", 64)

	for _, tc := range []struct {
		name     string
		entry    Entry
		problems []string // kind/reason
		name2    string   // a name of the bad entry to query
		want     []string // its A/AAAA values; nil: NXDOMAIN; []string{}: NODATA
	}{
		{"address garbage dotted", se("foo", "bad", 1, hosts("x.bar.global"), "999.1.1.1", "240.0.0.1"),
			[]string{"address/invalid"}, "x.bar.global.", []string{"240.0.0.1"}},
		{"address a word", se("foo", "bad", 1, hosts("x.bar.global"), "hello"),
			[]string{"address/invalid"}, "x.bar.global.", []string{}},
		{"address empty string", se("foo", "bad", 1, hosts("x.bar.global"), ""),
			[]string{"address/invalid"}, "x.bar.global.", []string{}},
		{"address with spaces", se("foo", "bad", 1, hosts("x.bar.global"), " 240.0.0.1"),
			[]string{"address/invalid"}, "x.bar.global.", []string{}},
		{"address IPv6 with zone", se("foo", "bad", 1, hosts("x.bar.global"), "fe80::1%eth0"),
			[]string{"address/invalid"}, "x.bar.global.", []string{}},
		{"address wide IPv4 CIDR", se("foo", "bad", 1, hosts("x.bar.global"), "10.0.0.0/8", "240.0.0.1"),
			[]string{"address/cidr"}, "x.bar.global.", []string{"240.0.0.1"}},
		{"address wide IPv6 CIDR", se("foo", "bad", 1, hosts("x.bar.global"), "2001:db8::/64"),
			[]string{"address/cidr"}, "x.bar.global.", []string{}},
		{"address bad CIDR length", se("foo", "bad", 1, hosts("x.bar.global"), "240.0.0.1/33"),
			[]string{"address/invalid"}, "x.bar.global.", []string{}},
		{"address unspecified IPv4", se("foo", "bad", 1, hosts("x.bar.global"), "0.0.0.0"),
			[]string{"address/unspecified"}, "x.bar.global.", []string{}},
		{"address unspecified IPv6", se("foo", "bad", 1, hosts("x.bar.global"), "::"),
			[]string{"address/unspecified"}, "x.bar.global.", []string{}},
		{"huge address list", se("foo", "bad", 1, hosts("x.bar.global"), manyAddrs...),
			[]string{"address/too_many"}, "x.bar.global.", manyAddrs[:maxAddressesPerHost]},
		{"no hosts", se("foo", "bad", 1, nil, "240.0.0.1"),
			[]string{"entry/no_hosts"}, "", nil},
		{"empty host", se("foo", "bad", 1, hosts("", "x.bar.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "x.bar.global.", []string{"240.0.0.1"}},
		{"bare wildcard beside a host of ours", se("foo", "bad", 1, hosts("*", "x.bar.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "x.bar.global.", []string{"240.0.0.1"}},
		{"wildcard inside the name", se("foo", "bad", 1, hosts("foo.*.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "foo.x.global.", nil},
		{"wildcard glued to a label", se("foo", "bad", 1, hosts("*foo.bar.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "xfoo.bar.global.", nil},
		{"double wildcard", se("foo", "bad", 1, hosts("**.bar.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "x.bar.global.", nil},
		{"two wildcard labels", se("foo", "bad", 1, hosts("*.*.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "x.y.global.", nil},
		{"empty label", se("foo", "bad", 1, hosts("x..bar.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "x.bar.global.", nil},
		{"leading hyphen", se("foo", "bad", 1, hosts("-x.bar.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "x.bar.global.", nil},
		{"label over 63", se("foo", "bad", 1, hosts(long+".bar.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "x.bar.global.", nil},
		{"name over 253", se("foo", "bad", 1, hosts(strings.Repeat("abcdefg.", 32)+"global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "x.bar.global.", nil},
		{"unicode host", se("foo", "bad", 1, hosts("bücher.bar.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "xn--bcher-kva.bar.global.", nil},
		{"space in host", se("foo", "bad", 1, hosts("a b.bar.global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "x.bar.global.", nil},
		{"zone apex as host", se("foo", "bad", 1, hosts("global"), "240.0.0.1"),
			[]string{"host/invalid_host"}, "global.", []string{}},
		{"not exported", Entry{Namespace: "foo", Name: "bad", Hosts: hosts("x.bar.global"), Addresses: []string{"240.0.0.1"}, ExportTo: []string{"~"}},
			[]string{"entry/not_exported"}, "x.bar.global.", nil},
		{"exportTo Istio rejects", Entry{Namespace: "foo", Name: "bad", Hosts: hosts("x.bar.global"), Addresses: []string{"240.0.0.1"}, ExportTo: []string{"~", "*"}},
			[]string{"entry/invalid_export_to"}, "x.bar.global.", nil},
		{"bad status address", Entry{Namespace: "foo", Name: "bad", Hosts: hosts("x.bar.global"),
			StatusAddresses: []StatusAddress{{Host: "x.bar.global", Value: "hello"}, {Host: "x.bar.global", Value: "240.240.0.1"}}},
			[]string{"address/invalid"}, "x.bar.global.", []string{"240.240.0.1"}},
		{"several problems at once", se("foo", "bad", 1, hosts("", "*x.global", "x.bar.global"), "hello", "10.0.0.0/8", "240.0.0.1"),
			[]string{"host/invalid_host", "host/invalid_host", "address/invalid", "address/cidr"}, "x.bar.global.", []string{"240.0.0.1"}},

		// Not errors: forms that mean a name we serve, or a host that is simply not ours.
		{"uppercase host", se("foo", "ok", 1, hosts("X.BAR.Global"), "240.0.0.1"),
			nil, "x.bar.global.", []string{"240.0.0.1"}},
		{"trailing dot", se("foo", "ok", 1, hosts("x.bar.global."), "240.0.0.1"),
			nil, "x.bar.global.", []string{"240.0.0.1"}},
		{"host outside the zone", se("foo", "ok", 1, hosts("www.example.com"), "240.0.0.1"),
			nil, "www.example.com.global.", nil},
		{"duplicate hosts", se("foo", "ok", 1, hosts("x.bar.global", "x.bar.global", "X.bar.global."), "240.0.0.1"),
			nil, "x.bar.global.", []string{"240.0.0.1"}},
		{"duplicate host across entries", se("foo", "ok", 1, hosts("httpbin.bar.global"), "127.255.0.3"),
			nil, "httpbin.bar.global.", []string{"127.255.0.2", "127.255.0.3"}},
		{"duplicate addresses", se("foo", "ok", 1, hosts("x.bar.global"), "240.0.0.1", "240.0.0.1/32", "::ffff:240.0.0.1"),
			nil, "x.bar.global.", []string{"240.0.0.1"}},
		{"single-address CIDRs", se("foo", "ok", 1, hosts("x.bar.global"), "240.0.0.1/32", "fd00::1/128"),
			nil, "x.bar.global.", []string{"240.0.0.1", "fd00::1"}},
		{"wildcard host", se("foo", "ok", 1, hosts("*.w.global"), "240.0.0.1"),
			nil, "any.w.global.", []string{"240.0.0.1"}},
		{"underscore label", se("foo", "ok", 1, hosts("x_y.bar.global"), "240.0.0.1"),
			nil, "x_y.bar.global.", []string{"240.0.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ig := newTestPlugin([]Entry{good, tc.entry})
			tb := ig.table.Load()
			assertProblems(t, problemsOf(tb), tc.problems...)
			for _, p := range problemsOf(tb) {
				if p.Entry != "foo/bad" || !strings.Contains(p.String(), "foo/bad") {
					t.Errorf("problem %q does not name the entry foo/bad", p)
				}
			}
			if got := values(t, ig, "httpbin.bar.global."); len(got) == 0 || got[0] != "127.255.0.2" {
				t.Errorf("the good entry stopped serving: %v", got)
			}
			if tc.name2 == "" {
				return
			}
			got := values(t, ig, tc.name2)
			switch {
			case tc.want == nil && got != nil:
				t.Errorf("%s: got %v, want NXDOMAIN", tc.name2, got)
			case tc.want != nil && (got == nil || strings.Join(got, " ") != strings.Join(tc.want, " ")):
				t.Errorf("%s: got %v, want %v", tc.name2, got, tc.want)
			}
		})
	}
}

// values returns the A then AAAA values of name: nil for NXDOMAIN, empty for NODATA.
func values(t *testing.T, ig *IstioGlobal, name string) []string {
	t.Helper()
	got := []string{}
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion(name, qtype))
		switch {
		case rec.Msg == nil:
			t.Fatalf("%s: nothing written", name)
		case rec.Msg.Rcode == dns.RcodeNameError:
			return nil
		}
		for _, rr := range rec.Msg.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				got = append(got, rr.A.String())
			case *dns.AAAA:
				got = append(got, rr.AAAA.String())
			}
		}
	}
	return got
}

// Egress entries for other zones (external APIs with CIDRs, whatever else they hold) are read
// for their reservations and otherwise ignored: no problem, no log, only a count of their own.
func TestOtherZonesCostNothing(t *testing.T) {
	egress := []Entry{
		se("egress", "api", 1, hosts("api.example.com"), "10.0.0.0/8", "hello"),
		se("egress", "local", 2, hosts("*.example.org", "bad host"), "999.1.1.1"),
		{Namespace: "egress", Name: "private", Hosts: []string{"db.internal"}, ExportTo: []string{"."}},
	}
	ig := newTestPlugin(append(slices.Clone(seeds), egress...))
	tb := ig.table.Load()
	assertProblems(t, problemsOf(tb))
	if s := statsOf(tb); s.other != len(egress) {
		t.Errorf("%d entries counted as other zones', want %d", s.other, len(egress))
	}
	_, e := buildEngine(egress, tableConfig{zones: ig.Zones, ttl: 30, alloc: (&recordingAlloc{}).alloc}, 1)
	if e.reserved.run(netip.MustParseAddr("10.1.2.3")) == 0 {
		t.Error("an egress entry's CIDR is not reserved from VIPs")
	}
}
