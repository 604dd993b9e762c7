package test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const admiralNS = "admiral-sync"

// admiralCorefile serves Admiral's sync namespace under a visibility policy, with the TXT facts.
func admiralCorefile(visibility string) string {
	return testCorefile("global:{{.Port}}", "", []string{"kubeconfig {{.Kubeconfig}}", "namespaces " + admiralNS, "visibility " + visibility, "txt on"})
}

// admiralEntry is a ServiceEntry in the shape Admiral writes (istio-ecosystem/admiral
// admiral/pkg/clusters/serviceentry.go): one per <env>.<identity>.global host in its sync
// namespace, named <host>-se, resolution DNS, endpoints that are the remote clusters' gateway
// hostnames with their localities (and the local Service), exportTo the client namespaces
// when its namespace-aware caches are on, and a VIP from 240.0.0.0/16 unless IP generation is
// disabled.
func admiralEntry(host string, exportTo []string, addrs ...string) *networkingv1.ServiceEntry {
	env, identity, _ := strings.Cut(strings.TrimSuffix(host, ".global"), ".")
	return &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   admiralNS,
			Name:        host + "-se",
			Annotations: map[string]string{"app.kubernetes.io/created-by": "admiral"},
			Labels:      map[string]string{"admiral.io/env": env, "identity": identity},
		},
		Spec: networking.ServiceEntry{
			Hosts:      []string{host},
			Addresses:  addrs,
			ExportTo:   exportTo,
			Location:   networking.ServiceEntry_MESH_INTERNAL,
			Resolution: networking.ServiceEntry_DNS,
			Ports:      []*networking.ServicePort{{Name: "http", Number: 80, Protocol: "http"}},
			Endpoints: []*networking.WorkloadEntry{
				{Address: "internal-a1cbfde75adbe1fed9763495dfd07960-2123389388.us-west-2.elb.amazonaws.com",
					Locality: "us-west-2", Ports: map[string]uint32{"http": 15443},
					Labels: map[string]string{"security.istio.io/tlsMode": "istio", "type": "rollout"}},
				{Address: "internal-b2dcfef86bcf2fed9874506efe18071-3234490499.us-east-2.elb.amazonaws.com",
					Locality: "us-east-2", Ports: map[string]uint32{"http": 15443},
					Labels: map[string]string{"security.istio.io/tlsMode": "istio", "type": "rollout"}},
			},
		},
	}
}

// Admiral's entries through the real API server give the answers each visibility policy
// promises: the default serves every entry visible to some namespace (client lists, "."), never
// "~"; "visibility mesh" serves only mesh-wide ones. The canary name, an entry without
// addresses (--disable_ip_generation: our VIP, outside Admiral's 240.0.0.0/16), one with
// Istio's status.addresses, and a conflict of scopes are answered by the stated rules.
func TestAdmiralEntries(t *testing.T) {
	createNamespace(t, admiralNS)
	for _, se := range []*networkingv1.ServiceEntry{
		admiralEntry("stage.greeting.global", []string{"client-a", "istio-system"}, "240.0.10.1"),
		admiralEntry("canary.stage.greeting.global", []string{"*"}, "240.0.10.2"),
		admiralEntry("qal.payments.global", []string{"."}, "240.0.10.3"),
		admiralEntry("dev.hidden.global", []string{"~"}, "240.0.10.4"),
		admiralEntry("prod.noip.global", []string{"client-a"}),
		admiralEntry("prod.status.global", nil),
		admiralEntry("stage.conflict.global", []string{"client-b"}, "240.0.10.5"),
	} {
		applyServiceEntry(t, se)
		t.Cleanup(func() { deleteServiceEntry(t, se.Namespace, se.Name) })
	}
	// Istio's allocator wrote status.addresses for the entry without addresses.
	setServiceEntryAddresses(t, admiralNS, "prod.status.global-se", &networking.ServiceEntryAddress{Host: "prod.status.global", Value: "240.240.0.7"})
	// The operator's mesh-wide entry for a host Admiral exports to client-b, with another VIP:
	// created a moment later, so Admiral's is the older.
	time.Sleep(1100 * time.Millisecond)
	operator := admiralEntry("stage.conflict.global", []string{"*"}, "240.0.10.6")
	operator.Name = "operator-conflict"
	applyServiceEntry(t, operator)
	t.Cleanup(func() { deleteServiceEntry(t, admiralNS, "operator-conflict") })

	wide := startCoreDNS(t, admiralCorefile("any"))
	mesh := startCoreDNS(t, admiralCorefile("mesh"))
	wide.waitReady(t, 20*time.Second)
	mesh.waitReady(t, 20*time.Second)

	for _, tc := range []struct{ name, wide, mesh string }{
		// Not served under mesh, but the parent of the canary name: it exists, without records.
		{"stage.greeting.global", "240.0.10.1", "NODATA"},
		{"canary.stage.greeting.global", "240.0.10.2", "240.0.10.2"},
		{"qal.payments.global", "240.0.10.3", "NXDOMAIN"},
		{"dev.hidden.global", "NXDOMAIN", "NXDOMAIN"},
		{"prod.status.global", "240.240.0.7", "240.240.0.7"},
		{"stage.conflict.global", "240.0.10.6", "240.0.10.6"},
	} {
		answersWithin(t, wide, 10*time.Second, tc.name, tc.wide)
		answersWithin(t, mesh, 10*time.Second, tc.name, tc.mesh)
	}
	// The canary name as dig asks it.
	if out := dig(t, wide.Addr, "+short", "canary.stage.greeting.global", "A"); strings.TrimSpace(out) != "240.0.10.2" {
		t.Errorf("dig canary.stage.greeting.global: %q", out)
	}

	// Without addresses: a VIP of ours (IPv4 and IPv6), never one of Admiral's 240.0.0.0/16.
	// Under "visibility mesh" an entry exported to client-a is not served at all.
	eventually(t, 10*time.Second, func() error {
		if got := aValues(t, wide, "prod.noip.global"); !strings.Contains(got, ",") {
			return fmt.Errorf("prod.noip.global: %s, want a VIP of each family", got)
		}
		return nil
	})
	admiral := netip.MustParsePrefix("240.0.0.0/16")
	for _, v := range strings.Split(aValues(t, wide, "prod.noip.global"), ",") {
		a := netip.MustParseAddr(v)
		if admiral.Contains(a) || a.Is4() && !netip.MustParsePrefix("240.241.0.0/16").Contains(a) {
			t.Errorf("prod.noip.global got %s: want a VIP of 240.241.0.0/16 or 100::/64, outside Admiral's 240.0.0.0/16", a)
		}
	}
	if got := aValues(t, mesh, "prod.noip.global"); got != "NXDOMAIN" {
		t.Errorf("visibility mesh: prod.noip.global %s, want NXDOMAIN", got)
	}

	// The conflict: named in the TXT records and the metric, under the default policy.
	m := exchange(t, wide.Addr, "stage.conflict.global.", dns.TypeTXT, false)
	var facts []string
	for _, rr := range m.Answer {
		facts = append(facts, rr.(*dns.TXT).Txt...)
	}
	for _, want := range []string{"scope=* answered", "shadowed=admiral-sync/stage.conflict.global-se (exportTo [client-b])"} {
		if !strings.Contains(strings.Join(facts, "\n"), want) {
			t.Errorf("TXT of stage.conflict.global lacks %q: %q", want, facts)
		}
	}
	if v := metricValue(t, wide, `coredns_istioglobal_skipped{kind="host",reason="scope_conflict"}`); v != 1 {
		t.Errorf("scope_conflict metric %v, want 1", v)
	}
	if !strings.Contains(wide.output(), "stage.conflict.global.: declared with other addresses") {
		t.Errorf("the conflict is not logged:\n%s", wide.output())
	}
	// Skipped entries are counted by reason: "~" under both policies, the namespace-scoped ones
	// (stage.greeting, qal.payments, prod.noip, and Admiral's half of the conflict) under mesh.
	for _, c := range []struct {
		server *coreDNS
		want   float64
	}{{wide, 1}, {mesh, 5}} {
		if v := metricValue(t, c.server, `coredns_istioglobal_skipped{kind="entry",reason="not_exported"}`); v != c.want {
			t.Errorf("not_exported metric %v, want %v", v, c.want)
		}
	}
}
