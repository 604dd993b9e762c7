package test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// bulkName and bulkAddr are the host and address of the i-th ServiceEntry of a bulk load.
func bulkName(prefix string, i int) string { return fmt.Sprintf("%s%d.ns%d.global", prefix, i, i%100) }

func bulkAddr(i int) string {
	return netip.AddrFrom4([4]byte{240, byte(i >> 16), byte(i >> 8), byte(i)}).String()
}

// createServiceEntries creates n ServiceEntries through the API, 32 at a time, the i-th in
// namespaces[i%len(namespaces)], each with one host (bulkName), one address (bulkAddr), the
// guides' named port and two endpoints (gateways of two other clusters). They are deleted, a
// collection per namespace, when the test ends.
func createServiceEntries(t testing.TB, namespaces []string, prefix string, n int) {
	t.Helper()
	createServiceEntriesWith(t, namespaces, n, func(ns string, i int) *networkingv1.ServiceEntry {
		se := serviceEntryV1(ns, fmt.Sprintf("%s%d", prefix, i), []string{bulkName(prefix, i)}, bulkAddr(i))
		se.Spec.Endpoints = append(se.Spec.Endpoints, &networking.WorkloadEntry{Address: "127.0.0.13", Ports: map[string]uint32{"http1": 15443}})
		return se
	})
}

// createServiceEntriesWith creates the n ServiceEntries entry(namespace, i) through the API, 32
// at a time, the i-th in namespaces[i%len(namespaces)], and deletes them, a collection per
// namespace, when the test ends.
func createServiceEntriesWith(t testing.TB, namespaces []string, n int, entry func(namespace string, i int) *networkingv1.ServiceEntry) {
	t.Helper()
	for _, ns := range namespaces {
		createNamespace(t, ns)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			err := istioClient.NetworkingV1().ServiceEntries(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
			if err != nil {
				t.Errorf("deleting the ServiceEntries of %s: %v", ns, err)
			}
		})
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				ns := namespaces[i%len(namespaces)]
				se := entry(ns, i)
				ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
				_, err := istioClient.NetworkingV1().ServiceEntries(ns).Create(ctx, se, metav1.CreateOptions{})
				cancel()
				if err != nil {
					errs <- fmt.Errorf("creating %s/%s: %w", ns, se.Name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// bulkEntriesYAML is the same load as one multi-document YAML file, for the files source.
func bulkEntriesYAML(namespace, prefix string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %s%d, namespace: %s}
spec:
  hosts: [%s]
  addresses: [%s]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{name: http1, number: 8000, protocol: http}]
  endpoints: [{address: 127.0.0.12, ports: {http1: 15443}}]
`, prefix, i, namespace, bulkName(prefix, i), bulkAddr(i))
	}
	return b.String()
}

// loadResult counts the replies of a query load.
type loadResult struct {
	sent, servfail, wrong, failed atomic.Int64
	firstWrong                    atomic.Pointer[string]
}

func (r *loadResult) String() string {
	return fmt.Sprintf("%d queries: %d SERVFAIL, %d wrong answers, %d without a reply", r.sent.Load(), r.servfail.Load(), r.wrong.Load(), r.failed.Load())
}

// load sends A queries for the bulk names bulkName(prefix, k), k < n, spread over them, to addr
// at about qps over UDP from 8 clients until stop is closed, and hands every reply (or error) to
// reply, from several goroutines at once. It returns when the last query is answered.
func load(addr, prefix string, n, qps int, stop <-chan struct{}, reply func(k int, r *dns.Msg, rtt time.Duration, err error)) {
	var wg sync.WaitGroup
	const clients = 8
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: time.Second}
			tick := time.NewTicker(time.Second * clients / time.Duration(qps))
			defer tick.Stop()
			for i := w; ; i += clients {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				k := i * 7919 % n
				r, rtt, err := c.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(bulkName(prefix, k)), dns.TypeA), addr)
				reply(k, r, rtt, err)
			}
		}()
	}
	wg.Wait()
}

// queryLoad runs load until the returned stop is called, checking every answer against
// bulkAddr(k).
func queryLoad(t testing.TB, addr, prefix string, n, qps int) (stop func() *loadResult) {
	t.Helper()
	res := &loadResult{}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		load(addr, prefix, n, qps, done, func(k int, r *dns.Msg, _ time.Duration, err error) {
			res.sent.Add(1)
			switch {
			case err != nil:
				res.failed.Add(1)
			case r.Rcode == dns.RcodeServerFailure:
				res.servfail.Add(1)
			case r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != bulkAddr(k):
				res.wrong.Add(1)
				s := r.String()
				res.firstWrong.CompareAndSwap(nil, &s)
			}
		})
	}()
	return func() *loadResult {
		close(done)
		<-finished
		return res
	}
}
