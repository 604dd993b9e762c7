package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const hostileNS = "hostile"

// hostileCase is a ServiceEntry that the CRD admits but that is bad or extreme. problems are the
// kind/reason pairs it must be skipped for (each counted and logged once); answers, the answers
// its names must give (name → aValues).
type hostileCase struct {
	name     string
	spec     *networking.ServiceEntry
	status   []*networking.ServiceEntryAddress
	labels   map[string]string
	problems []string
	answers  map[string]string
}

func hostileSpec(hosts []string, addrs ...string) *networking.ServiceEntry {
	return &networking.ServiceEntry{Hosts: hosts, Addresses: addrs, Resolution: networking.ServiceEntry_DNS,
		Location: networking.ServiceEntry_MESH_INTERNAL,
		Ports:    []*networking.ServicePort{{Name: "http", Number: 80, Protocol: "HTTP"}}}
}

func hostileCases() []hostileCase {
	label := func(c byte, n int) string { return strings.Repeat(string(c), n) }
	long253 := label('a', 63) + "." + label('b', 63) + "." + label('c', 63) + "." + label('d', 54) + ".global" // 253 octets, the most a name has
	long254 := "e." + long253
	none := func(hosts []string, addrs ...string) *networking.ServiceEntry {
		s := hostileSpec(hosts, addrs...)
		s.Resolution = networking.ServiceEntry_NONE
		return s
	}
	exported := func(host string, to ...string) *networking.ServiceEntry {
		s := hostileSpec([]string{host}, "240.0.40.9")
		s.ExportTo = to
		return s
	}
	manyHosts, manyAddrs := make([]string, 256), make([]string, 256)
	for i := range 256 {
		manyHosts[i] = fmt.Sprintf("m%d.many.hostile.global", i)
		manyAddrs[i] = fmt.Sprintf("240.0.%d.%d", 41+i/250, 1+i%250)
	}
	return []hostileCase{
		// Addresses.
		{name: "garbage-ip", spec: hostileSpec([]string{"garbage-ip.hostile.global"}, "999.1.1.1", "240.0.40.1"),
			problems: []string{"address/invalid"}, answers: map[string]string{"garbage-ip.hostile.global": "240.0.40.1"}},
		{name: "word", spec: hostileSpec([]string{"word.hostile.global"}, "hello"),
			problems: []string{"address/invalid"}},
		{name: "cidr", spec: none([]string{"cidr.hostile.global"}, "10.0.0.0/8", "240.0.40.2/32"),
			problems: []string{"address/cidr"}, answers: map[string]string{"cidr.hostile.global": "240.0.40.2"}},
		{name: "cidr6", spec: none([]string{"cidr6.hostile.global"}, "fd00::/127"), problems: []string{"address/cidr"}},
		{name: "unspecified4", spec: hostileSpec([]string{"unspecified4.hostile.global"}, "0.0.0.0"), problems: []string{"address/unspecified"}},
		{name: "unspecified6", spec: hostileSpec([]string{"unspecified6.hostile.global"}, "::"), problems: []string{"address/unspecified"}},
		{name: "zoned", spec: hostileSpec([]string{"zoned.hostile.global"}, "fe80::1%eth0"), problems: []string{"address/invalid"}},
		{name: "status-garbage", spec: hostileSpec([]string{"status-garbage.hostile.global"}),
			status: []*networking.ServiceEntryAddress{{Host: "status-garbage.hostile.global", Value: "hello"}}, problems: []string{"address/invalid"}},
		{name: "status-wrong-host", spec: hostileSpec([]string{"status-wrong.hostile.global"}, "240.0.40.3"),
			status:  []*networking.ServiceEntryAddress{{Host: "someone-else.hostile.global", Value: "240.0.40.4"}},
			answers: map[string]string{"status-wrong.hostile.global": "240.0.40.3", "someone-else.hostile.global": "NXDOMAIN"}},
		{name: "many", spec: hostileSpec(manyHosts, manyAddrs...),
			answers: map[string]string{"m0.many.hostile.global": "", "m255.many.hostile.global": ""}}, // 256 each: answered, bounded
		// Names.
		{name: "long-253", spec: hostileSpec([]string{long253}, "240.0.40.5"),
			problems: []string{"port/invalid_host"}, answers: map[string]string{long253: "240.0.40.5"}}, // its SRV name is too long
		{name: "long-254", spec: hostileSpec([]string{long254}, "240.0.40.6"), problems: []string{"host/invalid_host"}},
		{name: "label-63", spec: hostileSpec([]string{label('x', 63) + ".hostile.global"}, "240.0.40.7"),
			answers: map[string]string{label('x', 63) + ".hostile.global": "240.0.40.7"}},
		{name: "label-64", spec: hostileSpec([]string{label('y', 64) + ".hostile.global"}, "240.0.40.8"), problems: []string{"host/invalid_host"}},
		{name: "upper", spec: hostileSpec([]string{"UPPER.Hostile.GLOBAL"}, "240.0.40.10"),
			answers: map[string]string{"upper.hostile.global": "240.0.40.10"}},
		{name: "trailing-dot", spec: hostileSpec([]string{"dot.hostile.global."}, "240.0.40.11"),
			answers: map[string]string{"dot.hostile.global": "240.0.40.11"}},
		{name: "unicode", spec: hostileSpec([]string{"café.hostile.global"}, "240.0.40.12"), problems: []string{"host/invalid_host"}},
		{name: "punycode", spec: hostileSpec([]string{"xn--caf-dma.hostile.global"}, "240.0.40.13"),
			answers: map[string]string{"xn--caf-dma.hostile.global": "240.0.40.13"}},
		{name: "double-wildcard", spec: hostileSpec([]string{"*.*.hostile.global"}, "240.0.40.14"), problems: []string{"host/invalid_host"}},
		{name: "inner-wildcard", spec: hostileSpec([]string{"a*.hostile.global"}, "240.0.40.15"), problems: []string{"host/invalid_host"}},
		{name: "apex", spec: hostileSpec([]string{"global"}, "240.0.40.16"), problems: []string{"host/invalid_host"}},
		{name: "nameserver", spec: hostileSpec([]string{"ns.dns.global"}, "240.0.40.17"), problems: []string{"host/invalid_host"}},
		{name: "space", spec: hostileSpec([]string{"two words.hostile.global"}, "240.0.40.18"), problems: []string{"host/invalid_host"}},
		// A leading underscore is valid DNS (SRV names have them): served.
		{name: "underscore", spec: hostileSpec([]string{"_under.hostile.global"}, "240.0.40.19"),
			answers: map[string]string{"_under.hostile.global": "240.0.40.19"}},
		{name: "other-zone", spec: hostileSpec([]string{"api.example.com"}, "240.0.40.20"),
			answers: map[string]string{"api.example.com": "REFUSED"}}, // not ours: not counted as skipped
		{name: "duplicate-hosts", spec: hostileSpec([]string{"dup.hostile.global", "DUP.hostile.global."}, "240.0.40.21"),
			answers: map[string]string{"dup.hostile.global": "240.0.40.21"}},
		{name: "long-port", spec: func() *networking.ServiceEntry {
			s := hostileSpec([]string{"port.hostile.global"}, "240.0.40.22")
			s.Ports = []*networking.ServicePort{{Name: label('p', 63), Number: 81, Protocol: "TCP"}}
			return s
		}(), answers: map[string]string{"port.hostile.global": "240.0.40.22"}},
		{name: "opt-out", spec: hostileSpec([]string{"optout.hostile.global"}),
			labels: map[string]string{"networking.istio.io/enable-autoallocate-ip": "false"}, answers: map[string]string{"optout.hostile.global": "NODATA"}},
		// exportTo.
		{name: "export-nowhere", spec: exported("nowhere.hostile.global", "~"), problems: []string{"entry/not_exported"}},
		{name: "export-tilde-star", spec: exported("tildestar.hostile.global", "~", "*"), problems: []string{"entry/invalid_export_to"}},
		{name: "export-star-ns", spec: exported("starns.hostile.global", "*", "foo"), problems: []string{"entry/invalid_export_to"}},
		{name: "export-bad-ns", spec: exported("badns.hostile.global", "Not_A_Namespace"), problems: []string{"entry/invalid_export_to"}},
		{name: "export-self", spec: exported("self.hostile.global", "."), answers: map[string]string{"self.hostile.global": "240.0.40.9"}},
	}
}

// Hostile input through the real API server, while good entries serve: every bad entry is
// skipped with its reason counted and logged once, the extreme ones are answered (bounded), and
// every good entry still answers, also with 10k entries on one address.
func TestHostileInput(t *testing.T) {
	createNamespace(t, hostileNS)
	createServiceEntries(t, []string{hostileNS + "-good"}, "good", 20)
	c := startCoreDNS(t, corefileFor(hostileNS, hostileNS+"-good", hostileNS+"-shared"))
	c.waitReady(t, 20*time.Second)
	stopLoad := queryLoad(t, c.Addr, "good", 20, 200)

	cases := hostileCases()
	if len(cases) < 30 {
		t.Fatalf("%d hostile entries, want at least 30", len(cases))
	}
	want := map[string]int{} // kind/reason → count
	for _, hc := range cases {
		se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Namespace: hostileNS, Name: hc.name, Labels: hc.labels}, Spec: *cloneSpec(hc.spec)}
		applyServiceEntry(t, se)
		if hc.status != nil {
			setServiceEntryAddresses(t, hostileNS, hc.name, hc.status...)
		}
		for _, p := range hc.problems {
			want[p]++
		}
	}
	// 10k entries on one address: served, each answer bounded.
	createServiceEntriesWith(t, []string{hostileNS + "-shared"}, 10_000, func(ns string, i int) *networkingv1.ServiceEntry {
		return serviceEntryV1(ns, fmt.Sprintf("s%d", i), []string{fmt.Sprintf("s%d.shared.hostile.global", i)}, "240.0.50.1")
	})

	eventually(t, 60*time.Second, func() error {
		for _, hc := range cases {
			for name, v := range hc.answers {
				got := aValues(t, c, name)
				if v == "" && (got == "NXDOMAIN" || got == "SERVFAIL" || got == "NODATA") || v != "" && got != v {
					return fmt.Errorf("%s (%s): %s, want %s", name, hc.name, got, cmpOr(v, "addresses"))
				}
			}
		}
		if got := aValues(t, c, "s9999.shared.hostile.global"); got != "240.0.50.1" {
			return fmt.Errorf("s9999.shared.hostile.global: %s", got)
		}
		return nil
	})
	for kr, n := range want {
		kind, reason, _ := strings.Cut(kr, "/")
		if got := metricValue(t, c, fmt.Sprintf(`coredns_istioglobal_skipped{kind=%q,reason=%q}`, kind, reason)); int(got) < n {
			t.Errorf("skipped{%s} = %v, want at least %d", kr, got, n)
		}
	}
	// A PTR of the shared address and its TXT are bounded and pack (miekg/dns would not
	// unpack them otherwise) over TCP.
	for _, q := range []string{"1.50.0.240.in-addr.arpa."} {
		if m := exchange(t, c.Addr, q, 12, true); m == nil {
			t.Errorf("no answer for %s", q)
		}
	}
	// Churn beside them: nothing is logged again.
	logged := c.output()
	for _, addr := range []string{"240.0.60.1", "240.0.60.2", "240.0.60.3"} {
		applyServiceEntry(t, serviceEntryV1(hostileNS+"-good", "churn", []string{"churn.hostile.global"}, addr))
		answersWithin(t, c, 10*time.Second, "churn.hostile.global", addr)
	}
	if again := strings.TrimPrefix(c.output(), logged); strings.Contains(again, "skipped") {
		t.Errorf("churn logged the problems again:\n%s", again)
	}
	for _, hc := range cases {
		if n := strings.Count(c.output(), "ServiceEntry "+hostileNS+"/"+hc.name+":"); n != len(hc.problems) {
			t.Errorf("%s logged %d times, want %d (once per problem)", hc.name, n, len(hc.problems))
		}
	}
	noFailures(t, "good entries under hostile input", stopLoad())
}

func cloneSpec(s *networking.ServiceEntry) *networking.ServiceEntry {
	return proto.Clone(s).(*networking.ServiceEntry)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
