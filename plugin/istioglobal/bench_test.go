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

// hostsPlugin is CoreDNS's hosts plugin set up from a Corefile with the same names inline,
// authoritative for global and the extra zones (in-addr.arpa: it answers PTR too).
func hostsPlugin(b *testing.B, n int, zones ...string) plugin.Handler {
	var cf strings.Builder
	cf.WriteString("hosts " + os.DevNull + " " + strings.Join(append([]string{"global"}, zones...), " ") + " {\n") // hosts [FILE [ZONES...]]
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
		ig.table.Store(buildAt(benchEntries(n), ig.Zones, ig.ttl, nil))
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

// BenchmarkBuild builds a table from scratch, as the first sync does: every entry applied to a
// new engine in one commit.
func BenchmarkBuild(b *testing.B) {
	for _, n := range benchSizes {
		entries := benchEntries(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buildAt(entries, []string{"global."}, defaultTTL, nil)
			}
		})
	}
}

// BenchmarkBuildSharedAddress builds a table where every entry holds the same address, with
// the reverse zone served: each host's conflicts and the address's PTR holders are capped, and
// the address's holders are merged once, so the build grows as N log N (it grew as N² before
// the caps).
func BenchmarkBuildSharedAddress(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		entries := make([]Entry, n)
		for i := range entries {
			entries[i] = Entry{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("svc%d", i),
				Created: epoch.Add(time.Duration(i)), Hosts: []string{strings.TrimSuffix(benchName(i), ".")}, Addresses: []string{"240.0.0.1"}}
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buildAt(entries, []string{"global.", "in-addr.arpa."}, defaultTTL, nil)
			}
		})
	}
}

// benchSRVName is the SRV name of the i-th entry's named port.
func benchSRVName(i int) string { return "_http._tcp." + benchName(i) }

// benchPTRName is the reverse name of the i-th entry's address.
func benchPTRName(i int) string {
	rev, _ := dns.ReverseAddr(benchAddr(i))
	return rev
}

// benchDebugEntries are benchEntries with a named TCP port each.
func benchDebugEntries(n int) []Entry {
	entries := benchEntries(n)
	for i := range entries {
		entries[i].Ports = []Port{{Name: "http", Number: 8000, Protocol: "HTTP"}}
	}
	return entries
}

// BenchmarkServeDNSDebug serves the debugging records, SRV, PTR and TXT, beside an A hit in
// the same table: the entries have a named port, and the plugin holds the reverse zone, so
// the table has, besides each host, its SRV name, the _tcp name above it and the reverse name
// of its address. PTR is also measured from the hosts plugin, the one record both serve.
func BenchmarkServeDNSDebug(b *testing.B) {
	for _, n := range benchSizes {
		entries := benchDebugEntries(n)
		ig := newIstioGlobal()
		ig.Zones, ig.txt = []string{"global.", "in-addr.arpa."}, true // the TXT facts are measured too
		ig.table.Store(buildAt(entries, ig.Zones, ig.ttl, nil))
		h := hostsPlugin(b, n, "in-addr.arpa")
		for _, q := range []struct {
			kind   string
			msgs   []*dns.Msg
			rcode  int
			answer int  // answers in the first reply, checked before measuring
			hosts  bool // measure the hosts plugin too
		}{
			{"a", benchQueries(n, benchName, dns.TypeA), dns.RcodeSuccess, 1, false},
			{"srv", benchQueries(n, benchSRVName, dns.TypeSRV), dns.RcodeSuccess, 1, false},
			{"srv-nxdomain", benchQueries(n, func(i int) string { return "_nosuch._tcp." + benchName(i) }, dns.TypeSRV), dns.RcodeNameError, 0, false},
			{"ptr", benchQueries(n, benchPTRName, dns.TypePTR), dns.RcodeSuccess, 1, true},
			{"ptr-nxdomain", benchQueries(n, func(i int) string { return fmt.Sprintf("%d.%d.%d.241.in-addr.arpa.", i&255, i>>8&255, i>>16&255) }, dns.TypePTR), dns.RcodeNameError, 0, true},
			{"txt", benchQueries(n, benchName, dns.TypeTXT), dns.RcodeSuccess, 1, false},
		} {
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			if _, err := ig.ServeDNS(context.Background(), rec, q.msgs[1]); err != nil || rec.Msg == nil ||
				rec.Msg.Rcode != q.rcode || len(rec.Msg.Answer) != q.answer {
				b.Fatalf("%s %s: %v, want %s with %d answers (%v)", q.kind, q.msgs[1].Question[0].Name, rec.Msg, dns.RcodeToString[q.rcode], q.answer, err)
			}
			if q.kind == "srv" && len(rec.Msg.Extra) != 1 {
				b.Fatalf("SRV without the target's address in the additional section: %v", rec.Msg)
			}
			if q.kind == "ptr" {
				rec := dnstest.NewRecorder(&test.ResponseWriter{})
				if _, err := h.ServeDNS(context.Background(), rec, q.msgs[1]); err != nil || rec.Msg == nil || len(rec.Msg.Answer) != 1 {
					b.Fatalf("the hosts baseline does not answer PTR %s: %v %v", q.msgs[1].Question[0].Name, rec.Msg, err)
				}
			}
			handlers := []struct {
				name string
				h    plugin.Handler
			}{{"istioglobal", ig}}
			if q.hosts {
				handlers = append(handlers, struct {
					name string
					h    plugin.Handler
				}{"hosts", h})
			}
			for _, p := range handlers {
				b.Run(fmt.Sprintf("%s/%s/%d", q.kind, p.name, n), func(b *testing.B) {
					serveLoop(b, p.h, q.msgs)
				})
			}
		}
	}
}

// BenchmarkBuildDebug is BenchmarkBuild for the table of BenchmarkServeDNSDebug: a named port
// per entry and the reverse zone, so each host also gets its SRV, _tcp and PTR names.
func BenchmarkBuildDebug(b *testing.B) {
	for _, n := range benchSizes {
		entries := benchDebugEntries(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buildAt(entries, []string{"global.", "in-addr.arpa."}, defaultTTL, nil)
			}
		})
	}
}

// BenchmarkEvent is what one change costs the builder, end to end: one entry's address changes
// in a table of N (with SRV and PTR names), and the builder applies it, derives what it
// touches and publishes a generation. Flat in N is the goal.
func BenchmarkEvent(b *testing.B) {
	// Tables published back to back would wait for the serial clock's next tick (10 ms), which
	// the builder's coalescing never lets happen: count on instead, to measure the work.
	saved := serials
	serials = &serialClock{now: time.Now, sleep: func(time.Duration) {}}
	b.Cleanup(func() { serials = saved })
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			entries := benchDebugEntries(n)
			src := &eventSource{}
			src.next = changesOfAll(entries)
			ig := newIstioGlobal()
			ig.Zones = []string{"global.", "in-addr.arpa."}
			ig.sources = []source{src}
			ig.rebuild()
			changed := entries[n/2]
			changed.Addresses = []string{"241.0.0.1"}
			id := entryID{key: changed.key()}
			versions := [2][]change{{{id: id, entry: &changed}}, {{id: id, entry: &entries[n/2]}}}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				src.next = versions[i&1]
				ig.rebuild()
				i++
			}
			if got := ig.table.Load().node(benchName(n / 2)).host.addrs[0].String(); got != "241.0.0.1" && got != benchAddr(n/2) {
				b.Fatalf("the changed host answers %s", got)
			}
		})
	}
}

// eventSource hands the builder the changes it is given, once.
type eventSource struct{ next []change }

func (*eventSource) start(func()) error { return nil }
func (*eventSource) stop()              {}
func (*eventSource) synced() bool       { return true }
func (s *eventSource) changes() ([]change, []Problem) {
	c := s.next
	s.next = nil
	return c, nil
}

func changesOfAll(entries []Entry) []change {
	var s snapshots
	return s.diff(entries)
}
