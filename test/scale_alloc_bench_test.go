package test

import (
	"fmt"
	"maps"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The ranges of the persisted-allocation scale benchmark: room for a million hosts.
var (
	scaleAllocV4 = netip.MustParsePrefix("242.0.0.0/12")
	scaleAllocV6 = netip.MustParsePrefix("fd00:242::/64")
)

// BenchmarkScalePersistedAllocation is the persisted store at scale (issue 13): two replicas
// with `allocations`, watching the real API server, while as many address-less ServiceEntries
// as COREDNS_ISTIO_SCALE asks for are created. It fails unless every host gets an IPv4 and an
// IPv6 VIP, unique, the same on both replicas, and unless, after both replicas are SIGKILLed and
// started again, every VIP is the same and the new leader rewrote no shard. It reports the time
// from the last create to every host answered, the largest shard, and the replicas' RSS.
func BenchmarkScalePersistedAllocation(b *testing.B) {
	for range b.N {
		for _, n := range scaleSizes(b) {
			b.Run(strconv.Itoa(n), func(b *testing.B) { scaleAllocRun(b, n) })
		}
	}
}

func scaleAllocRun(b *testing.B, n int) {
	const storeNS, storeName = "scale-alloc", "scale-vips"
	const store = storeNS + "/" + storeName
	createNamespace(b, storeNS)
	cleanAllocations(b, storeNS, storeName)
	b.Cleanup(func() { cleanAllocations(b, storeNS, storeName) })
	var namespaces []string
	for i := range 100 {
		namespaces = append(namespaces, fmt.Sprintf("salloc-%d-%d", n, i))
	}
	corefile := testCorefile("global:{{.Port}}", "", []string{"kubeconfig {{.Kubeconfig}}",
		"autoallocate " + scaleAllocV4.String() + " " + scaleAllocV6.String(), "allocations " + store})
	start := func() (*coreDNS, *coreDNS) {
		a, c := startCoreDNS(b, corefile), startCoreDNS(b, corefile)
		a.waitReady(b, 5*time.Minute)
		c.waitReady(b, 5*time.Minute)
		return a, c
	}
	a, c := start()
	hosts := make([]string, n)
	t0 := time.Now()
	createServiceEntriesWith(b, namespaces, n, func(ns string, i int) *networkingv1.ServiceEntry {
		hosts[i] = fmt.Sprintf("a%d.%s.global", i, ns)
		return serviceEntryV1(ns, fmt.Sprintf("a%d", i), []string{hosts[i]})
	})
	created := time.Now()
	b.Logf("%d address-less entries created in %v", n, created.Sub(t0).Round(time.Second))

	// The gauges first, cheap to poll; then every answer.
	for _, r := range []*coreDNS{a, c} {
		eventually(b, 10*time.Minute, func() error {
			m := r.metrics(b)
			for _, family := range []string{"ipv4", "ipv6"} {
				if want := fmt.Sprintf("\ncoredns_istioglobal_allocated{family=%q} %d\n", family, n); !strings.Contains(m, want) {
					return fmt.Errorf("%s: not every host has its %s VIP", r.Addr, family)
				}
			}
			return nil
		})
		b.Logf("%s: allocated gauges at %d after %v", r.Addr, n, time.Since(created).Round(time.Millisecond))
	}
	var before map[string]string
	eventually(b, time.Minute, func() error {
		var err error
		before, err = agreedAt(b, hosts, a, c)
		return err
	})
	b.ReportMetric(float64(time.Since(created).Milliseconds()), "ms_last_create_to_all_allocated")
	b.Logf("every host has its VIPs on both replicas %v after the last create", time.Since(created).Round(time.Millisecond))
	largest, versions := shardSizes(b, store)
	b.ReportMetric(float64(largest)/1024, "KiB_largest_shard")
	b.Logf("largest shard: %d KiB of 1024", largest/1024)
	for i, r := range []*coreDNS{a, c} {
		b.Logf("replica %d: RSS %d MB", i, r.rssKB(b)/1024)
	}

	// Both replicas die at once; fresh ones serve every VIP as it was.
	for _, r := range []*coreDNS{a, c} {
		if err := r.signal(syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
	}
	t1 := time.Now()
	a, c = start()
	b.ReportMetric(float64(time.Since(t1).Milliseconds()), "ms_restart_to_ready")
	after, err := agreedAt(b, hosts, a, c)
	if err != nil {
		b.Fatal(err)
	}
	if !maps.Equal(before, after) {
		moved := 0
		for h, v := range before {
			if after[h] != v {
				moved++
			}
		}
		b.Fatalf("%d of %d hosts have other VIPs after the restart", moved, n)
	}
	b.Logf("after SIGKILL of both replicas: ready in %v, all %d hosts keep their VIPs", time.Since(t1).Round(time.Millisecond), n)
	leader(b, 30*time.Second, a, c) // the Lease of the killed leader expires first
	time.Sleep(2 * time.Second)
	if _, now := shardSizes(b, store); !maps.Equal(now, versions) {
		b.Errorf("the new leader rewrote shards with nothing to change: %v, was %v", now, versions)
	}
	a.stop()
	c.stop()
}

// agreedAt queries every host on each replica (16 at a time) and returns the "v4,v6" answers if
// every host has an IPv4 and an IPv6 VIP of the ranges, unique, the same on all replicas.
func agreedAt(t testing.TB, hosts []string, replicas ...*coreDNS) (map[string]string, error) {
	var first map[string]string
	for _, r := range replicas {
		got := make([]string, len(hosts))
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
				for i := w; i < len(hosts); i += 16 {
					var vals []string
					for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
						m, _, err := cl.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(hosts[i]), qt), r.Addr)
						if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
							vals = nil
							break
						}
						switch rr := m.Answer[0].(type) {
						case *dns.A:
							vals = append(vals, rr.A.String())
						case *dns.AAAA:
							vals = append(vals, rr.AAAA.String())
						}
					}
					got[i] = strings.Join(vals, ",")
				}
			}()
		}
		wg.Wait()
		answers := make(map[string]string, len(hosts))
		seen := make(map[string]bool, 2*len(hosts))
		for i, v := range got {
			v4, v6, _ := strings.Cut(v, ",")
			a4, err4 := netip.ParseAddr(v4)
			a6, err6 := netip.ParseAddr(v6)
			if err4 != nil || err6 != nil || !scaleAllocV4.Contains(a4) || !scaleAllocV6.Contains(a6) {
				return nil, fmt.Errorf("%s on %s: %q, want an IPv4 and an IPv6 VIP", hosts[i], r.Addr, v)
			}
			if seen[v4] || seen[v6] {
				return nil, fmt.Errorf("%s on %s: %s is another host's VIP too", hosts[i], r.Addr, v)
			}
			seen[v4], seen[v6] = true, true
			answers[hosts[i]] = v
		}
		if first == nil {
			first = answers
		} else if !maps.Equal(first, answers) {
			return nil, fmt.Errorf("the replicas disagree")
		}
	}
	return first, nil
}

// shardSizes returns the largest shard's size (keys and values) and every shard's
// resourceVersion.
func shardSizes(t testing.TB, store string) (largest int, versions map[string]string) {
	ns, name, _ := strings.Cut(store, "/")
	versions = map[string]string{}
	for i := range 32 {
		cm, err := kubeClient.CoreV1().ConfigMaps(ns).Get(apiContext(t), fmt.Sprintf("%s-%02d", name, i), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for k, v := range cm.Data {
			size += len(k) + len(v)
		}
		largest = max(largest, size)
		versions[cm.Name] = cm.ResourceVersion
	}
	return largest, versions
}
