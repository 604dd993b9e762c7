package vip

import (
	"net/netip"
	"testing"
	"time"
)

// allocBench is 10k hosts in the default ranges, with 1k addresses declared by other entries,
// a tenth of them inside our IPv4 range.
func allocBench(b *testing.B) (*Allocator, []string, Reserved) {
	a, err := New(DefaultRanges, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	var declared []netip.Addr
	for i := range 1000 {
		declared = append(declared, netip.AddrFrom4([4]byte{240, byte(240 + i%10/9), byte(i >> 8), byte(i)}))
	}
	return a, allocHosts("svc", 10_000), reservedOf(declared...)
}

// BenchmarkAllocate10k is the persisted mode at start-up: 10k new hosts, nothing held.
func BenchmarkAllocate10k(b *testing.B) {
	a, hosts, reserved := allocBench(b)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if next, exhausted, _ := a.next(nil, hosts, reserved, now); len(next) != len(hosts) || len(exhausted) != 0 {
			b.Fatalf("%d allocations, %d exhausted", len(next), len(exhausted))
		}
	}
}

// BenchmarkAllocateSteady10k is the persisted mode on a rebuild that changed nothing.
func BenchmarkAllocateSteady10k(b *testing.B) {
	a, hosts, reserved := allocBench(b)
	now := time.Now()
	current, _, _ := a.next(nil, hosts, reserved, now)
	b.ReportAllocs()
	for b.Loop() {
		a.next(current, hosts, reserved, now)
	}
}

// BenchmarkAllocateDeterministic10k is the deterministic mode, run on every table build.
func BenchmarkAllocateDeterministic10k(b *testing.B) {
	a, hosts, reserved := allocBench(b)
	b.ReportAllocs()
	for b.Loop() {
		if vips, _ := a.Deterministic(hosts, reserved); len(vips) != len(hosts) {
			b.Fatalf("%d VIPs", len(vips))
		}
	}
}

// BenchmarkAllocateCodec10k is the shards' round trip of 10k allocations.
func BenchmarkAllocateCodec10k(b *testing.B) {
	a, hosts, reserved := allocBench(b)
	current, _, _ := a.next(nil, hosts, reserved, time.Now())
	b.ReportAllocs()
	for b.Loop() {
		if m := shardRoundTrip(current); len(m.hosts) != len(current) || len(m.errs) != 0 {
			b.Fatalf("%d allocations, errors %v", len(m.hosts), m.errs)
		}
	}
}
