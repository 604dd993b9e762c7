package istioglobal

import (
	"fmt"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/file"
)

// BenchmarkTransfer measures an AXFR of the whole table and an IXFR of one change, at each
// size, beside CoreDNS's file plugin transferring a zone of the same names (its AXFR is the
// anchor: it walks a zone tree built from a zone file). B/op is the memory one transfer
// allocates.
func BenchmarkTransfer(b *testing.B) {
	for _, n := range benchSizes {
		entries := benchEntries(n)
		e := newEngine(tableConfig{zones: []string{"global."}, ttl: defaultTTL, ns: defaultNameServer([]string{"global."}, []string{"127.0.0.1"})})
		var s snapshots
		e.apply(s.diff(entries))
		serial := uint32(1)
		ig := newIstioGlobal()
		ig.Zones = []string{"global."}
		ig.table.Store(e.commit(func() uint32 { return serial }))
		records := n + 3 // every host, the wildcard, the NS and its address

		b.Run(fmt.Sprintf("AXFR/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if got := drainCount(b, ig, 0); got != records+2 {
					b.Fatalf("%d records, want %d", got, records+2)
				}
			}
		})

		zone := fileZone(b, n)
		b.Run(fmt.Sprintf("AXFR-file/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ch, err := zone.Transfer(0)
				if err != nil {
					b.Fatal(err)
				}
				got := 0
				for rrs := range ch {
					got += len(rrs)
				}
				if got < n {
					b.Fatalf("%d records", got)
				}
			}
		})

		changed := entries[n/2]
		changed.Addresses = []string{"241.0.0.1"}
		e.apply([]change{{id: entryID{key: changed.key()}, entry: &changed}})
		ig.table.Store(e.commit(func() uint32 { return serial + 1 }))
		b.Run(fmt.Sprintf("IXFR-one-change/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				// SOA, old SOA, the old A, SOA, the new A, SOA
				if got := drainCount(b, ig, serial); got != 6 {
					b.Fatalf("%d records, want 6", got)
				}
			}
		})
	}
}

func drainCount(b *testing.B, ig *IstioGlobal, serial uint32) int {
	ch, err := ig.Transfer("global.", serial)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for rrs := range ch {
		n += len(rrs)
	}
	return n
}

// fileZone is the file plugin's zone of the benchmark's names.
func fileZone(b *testing.B, n int) *file.Zone {
	var zf strings.Builder
	zf.WriteString("global. 30 IN SOA ns.dns.global. hostmaster.global. 1 7200 1800 86400 30\nglobal. 30 IN NS ns.dns.global.\nns.dns.global. 30 IN A 127.0.0.1\n")
	for i := range n {
		fmt.Fprintf(&zf, "%s 30 IN A %s\n", benchName(i), benchAddr(i))
	}
	z, err := file.Parse(strings.NewReader(zf.String()), "global.", "bench", 0)
	if err != nil {
		b.Fatal(err)
	}
	return z
}
