package istioglobal

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/poll"
	networkingapi "istio.io/api/networking/v1alpha3"
	"istio.io/client-go/pkg/clientset/versioned/fake"
	kruntime "k8s.io/apimachinery/pkg/runtime"
)

// TestInformerMemory measures what the informer cache holds per ServiceEntry once the
// transform has made it a cachedEntry: 0.40 MB per 1,000 entries (the API type slimmed, as
// before, kept 0.85–0.9 MB; unslimmed, 5.1 MB). The bound leaves room for GC noise.
func TestInformerMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocates 10k ServiceEntries; the race detector distorts heap sizes")
	}
	const n = 10_000
	objs := make([]kruntime.Object, n)
	for i := range objs {
		se := serviceEntry(fmt.Sprintf("ns%d", i%50), fmt.Sprintf("svc%d", i), []string{fmt.Sprintf("svc%d.ns%d.global", i, i%50)}, fmt.Sprintf("240.0.%d.%d", i/250, i%250))
		for j := range 8 { // gateways of other clusters, which DNS never reads
			se.Spec.Endpoints = append(se.Spec.Endpoints, &networkingapi.WorkloadEntry{Address: fmt.Sprintf("192.0.2.%d", j), Ports: map[string]uint32{"http1": 15443}})
		}
		objs[i] = se
	}
	client := fake.NewSimpleClientset(objs...)
	before := heapInUse()
	ks := &kubeSource{client: client}
	ig := startPlugin(t, ks)
	poll.Until(t, 30*time.Second, func() error {
		if ig.table.Load() == nil {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	// Measure the cache, not the table: stop the builder (the listers keep the cache) and drop
	// what it built.
	ig.shutdown()
	ig.table.Store(nil)
	ig.engine = nil
	perThousand := float64(heapInUse()-before) / n * 1000 / (1 << 20)
	t.Logf("informer cache: %.2f MB per 1,000 ServiceEntries", perThousand)
	if perThousand > 0.6 {
		t.Errorf("informer cache holds %.2f MB per 1,000 ServiceEntries, want about 0.4", perThousand)
	}
	runtime.KeepAlive(ks)
}

// TestTableMemory measures what the engine and its table keep per entry beyond the entries
// themselves, for the scale benchmark's shape (one host, one address, a named port): about
// 1,000 bytes, the host, SRV and _tcp nodes and what the engine needs to change them.
func TestTableMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocates 10k entries; the race detector distorts heap sizes")
	}
	const n = 10_000
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = Entry{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("s%d", i), Created: epoch,
			Hosts: []string{fmt.Sprintf("s%d.ns%d.global", i, i%100)}, Addresses: []string{benchAddr(i)},
			Ports: []Port{{Name: "http", Number: 80, Protocol: "HTTP"}}}
	}
	var s snapshots
	changes := s.diff(entries)
	before := heapInUse()
	e := newEngine(tableConfig{zones: []string{"global."}, ttl: 30, ns: defaultNameServer([]string{"global."}, nil)})
	e.apply(changes)
	tb := e.commit(func() uint32 { return 1 })
	perEntry := float64(heapInUse()-before) / n
	t.Logf("engine and table: %.0f bytes per entry (%d names)", perEntry, tb.names.len)
	if perEntry > 1200 {
		t.Errorf("engine and table keep %.0f bytes per entry, want about 1,000", perEntry)
	}
	runtime.KeepAlive(e)
	runtime.KeepAlive(entries)
}

var raceEnabled bool

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
