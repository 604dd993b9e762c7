package test

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The VIP ranges of the allocation tests, and the ConfigMap (and Lease) they are kept in.
var (
	allocV4 = netip.MustParsePrefix("240.241.0.0/24")
	allocV6 = netip.MustParsePrefix("100::/120")
)

const vipsName = "coredns-istio-vips"

// allocCorefile serves the ServiceEntries of ns with VIPs for address-less hosts, persisted
// in the shards of ns/coredns-istio-vips.
func allocCorefile(ns string) string {
	return testCorefile("global:{{.Port}}", "", []string{"kubeconfig {{.Kubeconfig}}", "namespaces " + ns,
		"autoallocate " + allocV4.String() + " " + allocV6.String(), "allocations " + ns + "/" + vipsName})
}

// startAllocReplica starts a replica of the allocation Corefile and waits until it is ready.
func startAllocReplica(t *testing.T, ns string) *coreDNS {
	t.Helper()
	c := startCoreDNS(t, allocCorefile(ns))
	c.waitReady(t, 20*time.Second)
	return c
}

// freshAllocNamespace creates ns and removes the ConfigMaps and Lease an earlier run (-count)
// may have left there, now and when the test ends.
func freshAllocNamespace(t *testing.T, ns string) {
	t.Helper()
	createNamespace(t, ns)
	cleanAllocations(t, ns, vipsName)
	t.Cleanup(func() { cleanAllocations(t, ns, vipsName) })
}

// cleanAllocations deletes the allocation ConfigMaps in ns (all of them, by their label) and
// the Lease name.
func cleanAllocations(t testing.TB, ns, name string) {
	t.Helper()
	err := kubeClient.CoreV1().ConfigMaps(ns).DeleteCollection(apiContext(t), metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=coredns-istio"})
	if err != nil {
		t.Errorf("deleting the ConfigMaps of %s/%s: %v", ns, name, err)
	}
	err = kubeClient.CoordinationV1().Leases(ns).Delete(apiContext(t), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting Lease %s/%s: %v", ns, name, err)
	}
}

// applyAddressless creates ServiceEntries name-i (host name-i.ns.global, no address) for i in
// [from, to), and returns their hosts.
func applyAddressless(t *testing.T, ns, name string, from, to int) []string {
	t.Helper()
	var hosts []string
	for i := from; i < to; i++ {
		host := fmt.Sprintf("%s-%d.%s.global", name, i, ns)
		applyServiceEntry(t, serviceEntryV1(ns, fmt.Sprintf("%s-%d", name, i), []string{host}))
		hosts = append(hosts, host)
	}
	return hosts
}

// vips returns the "v4,v6" answer of each host from c, or an error unless every host has one
// IPv4 and one IPv6 VIP from the allocation ranges.
func vips(t *testing.T, c *coreDNS, hosts []string) (map[string]string, error) {
	t.Helper()
	out := make(map[string]string, len(hosts))
	for _, h := range hosts {
		got := aValues(t, c, h)
		v4, v6, _ := strings.Cut(got, ",")
		a4, err4 := netip.ParseAddr(v4)
		a6, err6 := netip.ParseAddr(v6)
		if err4 != nil || err6 != nil || !allocV4.Contains(a4) || !allocV6.Contains(a6) {
			return nil, fmt.Errorf("%s on %s: %s, want an IPv4 VIP in %s and an IPv6 VIP in %s", h, c.Addr, got, allocV4, allocV6)
		}
		out[h] = got
	}
	return out, nil
}

// agreedVIPs waits until every replica answers every host with VIPs, the same on all, unique,
// and returns them.
func agreedVIPs(t *testing.T, timeout time.Duration, hosts []string, replicas ...*coreDNS) map[string]string {
	t.Helper()
	var first map[string]string
	eventually(t, timeout, func() error {
		var err error
		if first, err = vips(t, replicas[0], hosts); err != nil {
			return err
		}
		for _, c := range replicas[1:] {
			other, err := vips(t, c, hosts)
			if err != nil {
				return err
			}
			if !maps.Equal(first, other) {
				return fmt.Errorf("replicas disagree:\n%s: %v\n%s: %v", replicas[0].Addr, first, c.Addr, other)
			}
		}
		return nil
	})
	seen := make(map[string]string)
	for h, v := range first {
		for _, a := range strings.Split(v, ",") {
			if other, dup := seen[a]; dup {
				t.Errorf("%s is the VIP of both %s and %s", a, h, other)
			}
			seen[a] = h
		}
	}
	return first
}

// leader returns the replica whose leader gauge is 1, failing unless exactly one of the
// running replicas reports it within timeout.
func leader(t testing.TB, timeout time.Duration, replicas ...*coreDNS) *coreDNS {
	t.Helper()
	var found *coreDNS
	eventually(t, timeout, func() error {
		found = nil
		n := 0
		for _, c := range replicas {
			if strings.Contains(c.metrics(t), "\ncoredns_istioglobal_allocation_leader 1\n") {
				found = c
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%d of %d replicas lead, want 1", n, len(replicas))
		}
		return nil
	})
	return found
}

func leaseHolder(t *testing.T, ns string) string {
	t.Helper()
	lease, err := kubeClient.CoordinationV1().Leases(ns).Get(apiContext(t), vipsName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Lease %s/%s: %v", ns, vipsName, err)
	}
	if lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

// vipsConfigMap reads the 32 shards of ns/coredns-istio-vips back into one entry per host,
// "v4,v6" as the answers give them, with " released=TIME" once released.
func vipsConfigMap(t *testing.T, ns string) map[string]string {
	t.Helper()
	type allocation struct{ v4, v6, released string }
	hosts := map[string]*allocation{}
	for i := range 32 {
		name := fmt.Sprintf("%s-%02d", vipsName, i)
		cm, err := kubeClient.CoreV1().ConfigMaps(ns).Get(apiContext(t), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			t.Fatalf("ConfigMap %s/%s: %v", ns, name, err)
		}
		for key, value := range cm.Data {
			fields := strings.Fields(value)
			al := hosts[fields[0]]
			if al == nil {
				al = &allocation{}
				hosts[fields[0]] = al
			}
			if addr := strings.ReplaceAll(key, "-", ":"); strings.Contains(addr, ":") {
				al.v6 = addr
			} else {
				al.v4 = addr
			}
			for _, f := range fields[1:] {
				if r, ok := strings.CutPrefix(f, "released="); ok {
					al.released = " released=" + r
				}
			}
		}
	}
	out := make(map[string]string, len(hosts))
	for h, al := range hosts {
		out[h] = al.v4 + "," + al.v6 + al.released
	}
	return out
}

func addresses(m map[string]string) map[string]bool {
	out := make(map[string]bool)
	for _, v := range m {
		for _, a := range strings.Split(v, ",") {
			out[a] = true
		}
	}
	return out
}

// TestAllocateAcrossReplicas runs two replicas on one allocations ConfigMap through a leader's
// death, a restart of both, and churn: every VIP, once given, stays with its host.
func TestAllocateAcrossReplicas(t *testing.T) {
	const ns = "alloc"
	freshAllocNamespace(t, ns)
	hosts := applyAddressless(t, ns, "svc", 0, 24)
	a, b := startAllocReplica(t, ns), startAllocReplica(t, ns)

	start := time.Now()
	want := agreedVIPs(t, 10*time.Second, hosts, a, b)
	t.Logf("two replicas agree on %d VIPs after %v", len(want), time.Since(start).Round(time.Millisecond))
	if data := vipsConfigMap(t, ns); len(data) != len(hosts) {
		t.Errorf("the ConfigMap holds %d allocations, want %d: %v", len(data), len(hosts), data)
	}

	// SIGKILL the leader: it cannot release the Lease, so the other takes over once the Lease
	// expires (15s, client-go's default), and goes on allocating.
	lead := leader(t, 5*time.Second, a, b)
	survivor := a
	if lead == a {
		survivor = b
	}
	holder := leaseHolder(t, ns)
	if holder == "" {
		t.Fatal("the Lease has no holder")
	}
	if err := lead.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	added := applyAddressless(t, ns, "svc", 24, 27)
	hosts = append(hosts, added...)
	all := agreedVIPs(t, 40*time.Second, hosts, survivor)
	t.Logf("the survivor allocated %d new VIPs %v after the leader's death", len(added), time.Since(start).Round(time.Millisecond))
	if got := leaseHolder(t, ns); got == holder || got == "" {
		t.Errorf("the Lease is held by %q, want the survivor instead of %q", got, holder)
	}
	if leader(t, 5*time.Second, survivor) != survivor {
		t.Error("the survivor does not report leading")
	}
	for h, v := range want {
		if all[h] != v {
			t.Errorf("%s: %s after the takeover, was %s", h, all[h], v)
		}
	}
	want = all

	// Restart both: fresh processes read every VIP back. SIGTERM releases the Lease, so one of
	// them leads well before the 15s it would otherwise have to wait.
	survivor.stop()
	a, b = startAllocReplica(t, ns), startAllocReplica(t, ns)
	if got := agreedVIPs(t, 10*time.Second, hosts, a, b); !maps.Equal(got, want) {
		t.Errorf("VIPs changed across a restart:\nbefore %v\nafter  %v", want, got)
	}
	leader(t, 10*time.Second, a, b)

	// Delete 5 and add 30: the survivors keep their VIPs, the new hosts get fresh ones, none of
	// them a deleted host's (the grace period holds those).
	deletedVIPs := make(map[string]string)
	for i := range 5 {
		h := hosts[i]
		deletedVIPs[h] = want[h]
		deleteServiceEntry(t, ns, fmt.Sprintf("svc-%d", i))
	}
	kept := hosts[5:]
	added = applyAddressless(t, ns, "svc", 27, 57)
	got := agreedVIPs(t, 10*time.Second, append(slices.Clone(kept), added...), a, b)
	for _, h := range kept {
		if got[h] != want[h] {
			t.Errorf("%s: %s after churn, was %s", h, got[h], want[h])
		}
	}
	held := addresses(deletedVIPs)
	for _, h := range added {
		for _, v := range strings.Split(got[h], ",") {
			if held[v] {
				t.Errorf("new host %s got %s, a deleted host's VIP", h, v)
			}
		}
	}
	for h := range deletedVIPs {
		eventually(t, 5*time.Second, func() error {
			if v := aValues(t, a, h); v != "NXDOMAIN" {
				return fmt.Errorf("deleted %s: %s", h, v)
			}
			return nil
		})
	}
	data := vipsConfigMap(t, ns)
	for h, v := range deletedVIPs {
		if stored := data[h]; !strings.HasPrefix(stored, v+" released=") {
			t.Errorf("ConfigMap %s = %q, want %s marked released", h, stored, v)
		}
	}
}

// TestAllocateRespectsDeclaredAddresses: an entry's own addresses, Istio's status addresses and
// the opt-out label all keep a host from getting (or keeping) our VIP.
func TestAllocateRespectsDeclaredAddresses(t *testing.T) {
	const ns = "alloc-declared"
	freshAllocNamespace(t, ns)
	applyServiceEntry(t, serviceEntryV1(ns, "own", []string{"own.alloc-declared.global"}, "240.0.7.1", "fd00:7::1"))
	optOut := serviceEntryV1(ns, "optout", []string{"optout.alloc-declared.global"})
	optOut.Labels = map[string]string{"networking.istio.io/enable-autoallocate-ip": "false"}
	applyServiceEntry(t, optOut)
	applyServiceEntry(t, serviceEntryV1(ns, "istio", []string{"istio.alloc-declared.global"}))
	plain := applyAddressless(t, ns, "plain", 0, 1)
	c := startAllocReplica(t, ns)

	agreedVIPs(t, 10*time.Second, []string{"istio.alloc-declared.global", plain[0]}, c)
	answersWithin(t, c, time.Second, "own.alloc-declared.global", "240.0.7.1,fd00:7::1")
	if got := aValues(t, c, "optout.alloc-declared.global"); got != "NODATA" {
		t.Errorf("opted-out host: %s, want NODATA", got)
	}
	data := vipsConfigMap(t, ns)
	for _, h := range []string{"own.alloc-declared.global", "optout.alloc-declared.global"} {
		if v, ok := data[h]; ok {
			t.Errorf("%s has an allocation %q, want none", h, v)
		}
	}

	// Istio's allocator writes status.addresses: they win, and our VIP is released.
	setServiceEntryAddresses(t, ns, "istio",
		&networking.ServiceEntryAddress{Host: "istio.alloc-declared.global", Value: "240.240.0.99"},
		&networking.ServiceEntryAddress{Host: "istio.alloc-declared.global", Value: "2001:2::99"})
	answersWithin(t, c, time.Second, "istio.alloc-declared.global", "240.240.0.99,2001:2::99")
	eventually(t, 5*time.Second, func() error {
		if v := vipsConfigMap(t, ns)["istio.alloc-declared.global"]; !strings.Contains(v, " released=") {
			return fmt.Errorf("our VIP of istio.alloc-declared.global is %q, want released", v)
		}
		return nil
	})
}
