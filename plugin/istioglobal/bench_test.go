package istioglobal

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	_ "github.com/coredns/coredns/plugin/hosts" // the baseline
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// The benchmarks serve the same names from istioglobal and from CoreDNS's hosts plugin, in
// the same process and run, and report both: BENCHMARKS.md has the numbers and the command.

var benchSizes = []int{1_000, 10_000, 100_000}

// benchName is the i-th name.namespace.global name of a benchmark table.
func benchName(i int) string { return fmt.Sprintf("svc%d.ns%d.global.", i, i%100) }

func benchAddr(i int) string { return fmt.Sprintf("240.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

func benchEntries(n int) []Entry {
	entries := make([]Entry, n, n+1)
	for i := range entries {
		entries[i] = Entry{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("svc%d", i),
			Created: epoch.Add(time.Duration(i)), Hosts: []string{strings.TrimSuffix(benchName(i), ".")}, Addresses: []string{benchAddr(i)}}
	}
	return append(entries, Entry{Namespace: "wild", Name: "wild", Hosts: []string{"*.wild.global"}, Addresses: []string{"240.255.0.1"}})
}

// hostsPlugin is CoreDNS's hosts plugin set up from a Corefile with the same names inline.
func hostsPlugin(b *testing.B, n int) plugin.Handler {
	var cf strings.Builder
	cf.WriteString("hosts " + os.DevNull + " global {\n") // hosts [FILE [ZONES...]]
	for i := range n {
		fmt.Fprintf(&cf, "%s %s\n", benchAddr(i), benchName(i))
	}
	cf.WriteString("240.255.0.1 *.wild.global\n}\n")
	setup, err := caddy.DirectiveAction("dns", "hosts")
	if err != nil {
		b.Fatal(err)
	}
	c := caddy.NewTestController("dns", cf.String())
	if err := setup(c); err != nil {
		b.Fatal(err)
	}
	h := dnsserver.GetConfig(c).Plugin[0](nil)
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	if _, err := h.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion(benchName(0), dns.TypeA)); err != nil || rec.Msg == nil || len(rec.Msg.Answer) != 1 {
		b.Fatalf("the hosts baseline does not answer %s: %v", benchName(0), err)
	}
	return h
}

// benchQueries are 1024 distinct queries, so that lookups do not all hit one cache line.
func benchQueries(n int, name func(i int) string, qtype uint16) []*dns.Msg {
	qs := make([]*dns.Msg, 1024)
	for i := range qs {
		qs[i] = new(dns.Msg).SetQuestion(name(i*7919%n), qtype)
	}
	return qs
}

func BenchmarkServeDNS(b *testing.B) {
	for _, n := range benchSizes {
		ig := newIstioGlobal()
		ig.Zones = []string{"global."}
		ig.table.Store(build(benchEntries(n), ig.Zones, ig.ttl, epoch, nil))
		h := hostsPlugin(b, n)
		for _, q := range []struct {
			kind string
			msgs []*dns.Msg
		}{
			{"hit", benchQueries(n, benchName, dns.TypeA)},
			{"nxdomain", benchQueries(n, func(i int) string { return fmt.Sprintf("nosvc%d.ns%d.global.", i, i%100) }, dns.TypeA)},
			{"nodata", benchQueries(n, benchName, dns.TypeAAAA)},
			{"wildcard", benchQueries(n, func(i int) string { return fmt.Sprintf("x%d.wild.global.", i) }, dns.TypeA)},
		} {
			for _, p := range []struct {
				name string
				h    plugin.Handler
			}{{"istioglobal", ig}, {"hosts", h}} {
				b.Run(fmt.Sprintf("%s/%s/%d", q.kind, p.name, n), func(b *testing.B) {
					serveLoop(b, p.h, q.msgs)
				})
			}
		}
	}
}

func serveLoop(b *testing.B, h plugin.Handler, msgs []*dns.Msg) {
	ctx := context.Background()
	w := &discardWriter{}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h.ServeDNS(ctx, w, msgs[i&1023])
		i++
	}
}

func BenchmarkRebuild(b *testing.B) {
	for _, n := range benchSizes {
		entries := benchEntries(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				build(entries, []string{"global."}, defaultTTL, epoch, nil)
			}
		})
	}
}
