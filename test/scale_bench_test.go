package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// BenchmarkScale is the scale benchmark of issue 10, with the real binary watching the real
// API server. For each size (COREDNS_ISTIO_SCALE, default "10000"; make bench-scale runs 10k and
// 100k) it creates that many ServiceEntries (one host, one address, a named port and two
// endpoints each, in 100 namespaces), served as the shipped Corefile serves them (every
// namespace), and reports:
//
//   - RSS of the server over what it had before the entries existed, per 1,000 entries, after
//     the initial sync and again after a minute of churn;
//   - create→answered p50/p99 over 50 creates made one at a time after the bulk load, timed
//     from the create call's return to the first A answer;
//   - query p99 idle and while scaleChurn entries a second are rewritten, beside CoreDNS's hosts
//     plugin serving the same names (its file rewritten with the same changes) under the same
//     load, and failed queries (errors, timeouts, SERVFAIL).
//
// Run it with make bench-scale, or:
//
//	COREDNS_ISTIO_SCALE=10000,100000 go test -run '^$' -bench Scale -benchtime 1x -timeout 60m -v ./test/
func BenchmarkScale(b *testing.B) {
	for range b.N {
		for _, n := range scaleSizes(b) {
			b.Run(strconv.Itoa(n), func(b *testing.B) { scaleRun(b, n) })
		}
	}
}

// scaleSizes are the sizes COREDNS_ISTIO_SCALE asks for (default 10k).
func scaleSizes(b *testing.B) []int {
	s := os.Getenv("COREDNS_ISTIO_SCALE")
	if s == "" {
		return []int{10_000}
	}
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 100 {
			b.Fatalf("COREDNS_ISTIO_SCALE=%q: want sizes of at least 100, comma-separated", s)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

const (
	scaleChurn   = 160 // entries rewritten per second: the goal is at least 150, and a slow patch drops a tick
	scaleQPS     = 1000
	scaleCreates = 50
)

func scaleRun(b *testing.B, n int) {
	prefix := "s"
	var namespaces []string
	for i := range 100 {
		namespaces = append(namespaces, fmt.Sprintf("scale-%d-%d", n, i))
	}
	// Every namespace, as the shipped Corefile watches.
	corefile := testCorefile("global:{{.Port}}", "", []string{"kubeconfig {{.Kubeconfig}}"})
	c := startCoreDNS(b, corefile)
	c.waitReady(b, 30*time.Second)
	time.Sleep(2 * time.Second)
	base := c.rssKB(b) // the same binary with nothing to serve: the baseline of the RSS figures

	start := time.Now()
	createServiceEntries(b, namespaces, prefix, n)
	b.Logf("%d entries created in %v", n, time.Since(start).Round(time.Second))
	answersWithin(b, c, 5*time.Minute, bulkName(prefix, n-1), bulkAddr(n-1))
	time.Sleep(2 * time.Second) // let the last builds' garbage go
	synced := c.rssKB(b)
	perThousand := func(kb int) float64 { return float64(kb-base) / 1024 / float64(n) * 1000 }
	b.ReportMetric(perThousand(synced), "MB_RSS_per_1k_synced")
	b.Logf("RSS: empty %d MB, with %d entries %d MB: %.2f MB per 1,000", base/1024, n, synced/1024, perThousand(synced))

	// create → answered, one at a time.
	var lat []time.Duration
	for i := range scaleCreates {
		ns := namespaces[i%len(namespaces)]
		name := fmt.Sprintf("late%d", i)
		host := name + "." + ns + ".global"
		addr := fmt.Sprintf("241.0.%d.%d", i/250, i%250+1)
		if _, err := istioClient.NetworkingV1().ServiceEntries(ns).Create(apiContext(b), serviceEntryV1(ns, name, []string{host}, addr), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		for {
			if got := aValues(b, c, host); got == addr {
				break
			}
			if time.Since(t0) > 30*time.Second {
				b.Fatalf("%s not answered after 30s", host)
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
	}
	p50, p99 := percentile(lat, 50), percentile(lat, 99)
	b.ReportMetric(ms(p50), "ms_create_to_answer_p50")
	b.ReportMetric(ms(p99), "ms_create_to_answer_p99")
	b.Logf("create→answered over %d creates: p50 %v, p99 %v", scaleCreates, p50, p99)

	// The control: CoreDNS's hosts plugin with the same names, its file rewritten with the churn.
	hostsFile := filepath.Join(b.TempDir(), "hosts")
	current := make([]string, n)
	for i := range current {
		current[i] = bulkAddr(i)
	}
	var hostsMu sync.Mutex
	writeHosts := func() {
		hostsMu.Lock()
		defer hostsMu.Unlock()
		var sb strings.Builder
		for i, a := range current {
			fmt.Fprintf(&sb, "%s %s\n", a, bulkName(prefix, i))
		}
		tmp := hostsFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(sb.String()), 0o644); err != nil {
			b.Error(err)
		}
		os.Rename(tmp, hostsFile)
	}
	writeHosts()
	hosts := startCoreDNS(b, "global:{{.Port}} {\n    bind 127.0.0.1\n    ready 127.0.0.1:{{.ReadyPort}}\n    hosts "+hostsFile+" global {\n        reload 1s\n    }\n}\n")
	hosts.waitReady(b, 30*time.Second)

	measure := func(phase string) {
		var wg sync.WaitGroup
		results := make([]*latencies, 2)
		for i, srv := range []*coreDNS{c, hosts} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = timedLoad(srv.Addr, prefix, n, scaleQPS/2, 15*time.Second)
			}()
		}
		wg.Wait()
		ig, h := results[0], results[1]
		b.ReportMetric(ms(ig.p(99)), "ms_query_p99_"+phase)
		b.ReportMetric(ms(h.p(99)), "ms_hosts_query_p99_"+phase)
		b.ReportMetric(float64(ig.failed), "failed_queries_"+phase)
		b.Logf("%s: istioglobal p50 %v p99 %v (%d queries, %d failed); hosts p50 %v p99 %v (%d failed); ratio %.2f",
			phase, ig.p(50), ig.p(99), len(ig.d), ig.failed, h.p(50), h.p(99), h.failed, float64(ig.p(99))/float64(h.p(99)))
	}
	measure("idle")

	// Churn: scaleChurn rewrites a second of random entries' addresses, through the API for
	// istioglobal and into the hosts file (written every 100 ms) for the control.
	stop := make(chan struct{})
	var churned atomic.Int64
	var wg sync.WaitGroup
	// Each rewrite is a PATCH, tens of ms at 100k entries: enough writers that the API server's
	// latency does not cap the rate.
	const writers = 64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(n)))
			tick := time.NewTicker(time.Second * writers / scaleChurn)
			defer tick.Stop()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				i := rng.IntN(n)
				addr := fmt.Sprintf("242.%d.%d.%d", w, k/256%256, k%256)
				// One merge patch a rewrite: no GET, no resourceVersion to conflict on.
				ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
				_, err := istioClient.NetworkingV1().ServiceEntries(namespaces[i%len(namespaces)]).Patch(ctx,
					fmt.Sprintf("%s%d", prefix, i), types.MergePatchType, []byte(`{"spec":{"addresses":["`+addr+`"]}}`), metav1.PatchOptions{})
				cancel()
				if err != nil {
					b.Error(err)
					return
				}
				hostsMu.Lock()
				current[i] = addr
				hostsMu.Unlock()
				churned.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				writeHosts()
			}
		}
	}()
	churnStart := time.Now()
	measure("churn")
	time.Sleep(time.Until(churnStart.Add(time.Minute)))
	close(stop)
	wg.Wait()
	b.Logf("churn: %d rewrites in %v (%.0f/s)", churned.Load(), time.Since(churnStart).Round(time.Second),
		float64(churned.Load())/time.Since(churnStart).Seconds())
	time.Sleep(2 * time.Second)
	afterChurn := c.rssKB(b)
	b.ReportMetric(perThousand(afterChurn), "MB_RSS_per_1k_after_churn")
	b.Logf("RSS after a minute of churn: %d MB: %.2f MB per 1,000", afterChurn/1024, perThousand(afterChurn))
	// Before the entries are deleted at cleanup: serving their deletion is not measured.
	c.stop()
	hosts.stop()
}

// latencies are the response times of a load, and how many queries failed.
type latencies struct {
	d      []time.Duration
	failed int
}

func (l *latencies) p(q int) time.Duration { return percentile(l.d, q) }

// timedLoad runs load for d, timing each reply, and counts failures (no reply within a
// second, or anything but NOERROR with an answer: the churn changes the addresses).
func timedLoad(addr, prefix string, n, qps int, d time.Duration) *latencies {
	var mu sync.Mutex
	res := &latencies{}
	stop := make(chan struct{})
	time.AfterFunc(d, func() { close(stop) })
	load(addr, prefix, n, qps, stop, func(_ int, r *dns.Msg, rtt time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			res.failed++
		} else {
			res.d = append(res.d, rtt)
		}
	})
	return res
}

func percentile(d []time.Duration, q int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*q/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
