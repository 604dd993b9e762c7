package vip

import (
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustAllocator(t testing.TB, grace time.Duration, ranges ...string) *Allocator {
	t.Helper()
	var ps []netip.Prefix
	for _, r := range ranges {
		ps = append(ps, netip.MustParsePrefix(r))
	}
	a, err := New(ps, grace)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func unreserved(netip.Addr) uint64 { return 0 }

func reservedOf(addrs ...netip.Addr) Reserved {
	set := make(map[netip.Addr]bool)
	for _, x := range addrs {
		set[x] = true
	}
	return func(x netip.Addr) uint64 {
		if set[x] {
			return 1
		}
		return 0
	}
}

// reservedPrefixes reserves whole ranges, as a ServiceEntry's CIDR does.
func reservedPrefixes(ps ...netip.Prefix) Reserved {
	return func(x netip.Addr) uint64 {
		for _, p := range ps {
			if p.Contains(x) {
				return Through(x, p)
			}
		}
		return 0
	}
}

var mustAddr = netip.MustParseAddr

func allocHosts(prefix string, n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("%s%d.ns%d.global.", prefix, i, i%7)
	}
	return hosts
}

// usableIn lists a family's addresses in probe order, straight from the prefixes: the oracle
// the allocator is checked against.
func usableIn(ranges []netip.Prefix, v4 bool) []netip.Addr {
	var out []netip.Addr
	for _, r := range ranges {
		if r.Addr().Is4() != v4 {
			continue
		}
		for x := r.Addr().Next(); r.Contains(x); x = x.Next() {
			if v4 && !r.Contains(x.Next()) {
				break // the broadcast address
			}
			out = append(out, x)
		}
	}
	return out
}

func fnv64a(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// referenceDeterministic is deterministic written the obvious way, for small ranges.
func referenceDeterministic(ranges []netip.Prefix, hosts []string, reserved Reserved) (map[string]VIPs, []string) {
	vips := make(map[string]VIPs)
	var exhausted []string
	lists := [2][]netip.Addr{usableIn(ranges, true), usableIn(ranges, false)}
	taken := make(map[netip.Addr]bool)
	short := make(map[string]bool)
	for fam, list := range lists {
		if len(list) == 0 {
			continue
		}
		for _, h := range hosts {
			start := fnv64a(h) % uint64(len(list))
			found := false
			for k := range uint64(len(list)) {
				c := list[(start+k)%uint64(len(list))]
				if !taken[c] && reserved(c) == 0 {
					taken[c] = true
					v := vips[h]
					if fam == 0 {
						v.V4 = c
					} else {
						v.V6 = c
					}
					vips[h] = v
					found = true
					break
				}
			}
			if !found {
				short[h] = true
			}
		}
	}
	for _, h := range hosts {
		if short[h] {
			exhausted = append(exhausted, h)
		}
	}
	return vips, exhausted
}

func TestAllocatorRanges(t *testing.T) {
	for _, tc := range []struct {
		ranges []string
		grace  time.Duration
		err    string // "" = valid
	}{
		{ranges: []string{"240.241.0.0/16", "2001:2:0:1::/64"}},
		{ranges: []string{"240.241.0.0/30"}},
		{ranges: []string{"2001:2::/126"}},
		{ranges: []string{"240.241.0.0/24", "240.241.1.0/24", "2001:2:0:1::/64", "2001:2:0:2::/64"}},
		{ranges: nil},
		{ranges: []string{"240.241.0.0/31"}, err: "240.241.0.0/31"},
		{ranges: []string{"240.241.0.1/32"}, err: "240.241.0.1/32"},
		{ranges: []string{"2001:2::/127"}, err: "2001:2::/127"},
		{ranges: []string{"240.241.0.7/16"}, err: "240.241.0.0/16"},
		{ranges: []string{"2001:2::1/64"}, err: "2001:2::1/64"},
		{ranges: []string{"::ffff:240.241.0.0/112"}, err: "::ffff:240.241.0.0/112"},
		{ranges: []string{"240.241.0.0/16", "240.241.7.0/24"}, err: "240.241.7.0/24 overlaps range 240.241.0.0/16"},
		{ranges: []string{"240.241.0.0/16", "240.241.0.0/16"}, err: "overlaps"},
		{ranges: []string{"2001:2::/48", "2001:2:0:1::/64"}, err: "2001:2:0:1::/64 overlaps"},
		{ranges: []string{"240.241.0.0/16"}, grace: -time.Second, err: "negative"},
	} {
		var ps []netip.Prefix
		for _, r := range tc.ranges {
			ps = append(ps, netip.MustParsePrefix(r))
		}
		_, err := New(ps, tc.grace)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v: %v", tc.ranges, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: error %v, want one naming %q", tc.ranges, err, tc.err)
		}
	}
	if _, err := New([]netip.Prefix{{}}, 0); err == nil {
		t.Error("the zero prefix is accepted")
	}
}

func TestAllocatorCapacity(t *testing.T) {
	for _, tc := range []struct {
		ranges []string
		v4, v6 uint64
	}{
		{[]string{"240.241.0.0/16", "2001:2:0:1::/64"}, 65534, 1<<64 - 1},
		{[]string{"240.241.0.0/30", "240.241.1.0/29", "2001:2::/126", "2001:3::/120"}, 2 + 6, 3 + 255},
		{[]string{"2001:2::/48", "2001:3::/64"}, 0, 1<<64 - 1}, // saturates
		{nil, 0, 0},
	} {
		v4, v6 := mustAllocator(t, 0, tc.ranges...).Capacity()
		if v4 != tc.v4 || v6 != tc.v6 {
			t.Errorf("%v: capacity %d, %d; want %d, %d", tc.ranges, v4, v6, tc.v4, tc.v6)
		}
	}
}

func TestAllocateHashIsFNV1a64(t *testing.T) {
	for _, h := range []string{"", "a.", "httpbin.bar.global.", strings.Repeat("x", 253)} {
		if got, want := hostHash(h), fnv64a(h); got != want {
			t.Errorf("hostHash(%q) = %x, want %x", h, got, want)
		}
	}
}

// TestDefaultAllocateRangesAvoidIstio: Istio's allocators hand out 240.240.0.0/16 and
// 2001:2::/48 (the ipallocate controller's PILOT_IP_AUTOALLOCATE_IPV4/IPV6_PREFIX defaults, and
// the older proxy-side auto-allocation), and the VIPs Admiral generates lie in 240.0.0.0/16;
// a default of ours inside them could equal a VIP they give another host.
func TestDefaultAllocateRangesAvoidIstio(t *testing.T) {
	if _, err := New(DefaultRanges, time.Hour); err != nil {
		t.Fatal(err)
	}
	families := map[bool]int{}
	for _, r := range DefaultRanges {
		families[r.Addr().Is4()]++
		for _, theirs := range []string{"240.240.0.0/16", "2001:2::/48", "240.0.0.0/16"} {
			if r.Overlaps(netip.MustParsePrefix(theirs)) {
				t.Errorf("default range %s overlaps %s, Istio's or Admiral's", r, theirs)
			}
		}
	}
	if families[true] != 1 || families[false] != 1 {
		t.Errorf("defaults %v: want one IPv4 and one IPv6 range", DefaultRanges)
	}
}

// TestVIPDefaultRangesMapping pins where a host's first candidate lies in the default ranges:
// the range's address + 1 + hash mod size. Changing it renumbers every deterministic VIP.
func TestVIPDefaultRangesMapping(t *testing.T) {
	a, err := New(DefaultRanges, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var v4, v6 netip.Prefix
	for _, r := range DefaultRanges {
		if r.Addr().Is4() {
			v4 = r
		} else {
			v6 = r
		}
	}
	if v6.Bits() > 64 {
		t.Fatalf("%s: this test computes /64 and larger only", v6)
	}
	size4 := uint64(1)<<(32-v4.Bits()) - 2
	hosts := allocHosts("svc", 50)
	vips, exhausted := a.Deterministic(hosts, unreserved)
	if len(exhausted) != 0 {
		t.Fatalf("exhausted: %v", exhausted)
	}
	starts := make(map[uint64]string)
	for _, h := range hosts {
		s := fnv64a(h) % size4
		if other, dup := starts[s]; dup {
			t.Fatalf("test hosts %s and %s collide: pick other names", h, other)
		}
		starts[s] = h
		b4 := v4.Addr().As4()
		n := uint32(b4[0])<<24 | uint32(b4[1])<<16 | uint32(b4[2])<<8 | uint32(b4[3]) + uint32(s) + 1
		want4 := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})

		lo := fnv64a(h)%(1<<64-1) + 1 // a range of /64 or more holds 2^64-1 candidates
		b6 := v6.Addr().As16()
		for i := range 8 {
			b6[15-i] = byte(lo >> (8 * i))
		}
		want6 := netip.AddrFrom16(b6)
		if got := vips[h]; got.V4 != want4 || got.V6 != want6 {
			t.Errorf("%s: %v, want %v %v", h, got, want4, want6)
		}
	}
}

func TestVIPDeterministicMatchesReference(t *testing.T) {
	configs := [][]string{
		{"240.241.0.0/26", "2001:2::/122"},
		{"240.241.0.0/28", "240.241.1.0/30", "240.241.2.0/29", "2001:2::/125", "2001:2:0:1::/126"},
		{"240.241.0.0/27"},
		{"2001:2::/123"},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		ranges := configs[i%len(configs)]
		a := mustAllocator(t, 0, ranges...)
		var ps []netip.Prefix
		for _, r := range ranges {
			ps = append(ps, netip.MustParsePrefix(r))
		}
		all := append(usableIn(ps, true), usableIn(ps, false)...)
		var res []netip.Addr
		for range rng.IntN(10) {
			res = append(res, all[rng.IntN(len(all))])
		}
		hosts := allocHosts(fmt.Sprintf("h%d-", i), rng.IntN(90))
		got, gotEx := a.Deterministic(hosts, reservedOf(res...))
		want, wantEx := referenceDeterministic(ps, hosts, reservedOf(res...))
		if !maps.Equal(got, want) || !slices.Equal(gotEx, wantEx) {
			t.Fatalf("%v, %d hosts, reserved %v:\ngot  %v %v\nwant %v %v", ranges, len(hosts), res, got, gotEx, want, wantEx)
		}
		again, againEx := a.Deterministic(hosts, reservedOf(res...))
		if !maps.Equal(got, again) || !slices.Equal(gotEx, againEx) {
			t.Fatal("same input, different output")
		}
	}
}

// Hosts whose first candidates all differ get those, in any order.
func TestVIPOrderIndependent(t *testing.T) {
	a := mustAllocator(t, 0, "240.241.0.0/16", "2001:2:0:1::/64")
	hosts := allocHosts("svc", 50)
	want, _ := a.Deterministic(hosts, unreserved)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		shuffled := slices.Clone(hosts)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got, _ := a.Deterministic(shuffled, unreserved); !maps.Equal(got, want) {
			t.Fatalf("order %v changed the VIPs", shuffled)
		}
	}
}

func TestVIPUnique(t *testing.T) {
	a := mustAllocator(t, 0, "240.241.0.0/20", "2001:2::/116")
	hosts := allocHosts("svc", 4000) // 4094 and 4095 usable: long probes
	vips, exhausted := a.Deterministic(hosts, unreserved)
	if len(exhausted) != 0 || len(vips) != len(hosts) {
		t.Fatalf("%d VIPs, exhausted %d", len(vips), len(exhausted))
	}
	seen := make(map[netip.Addr]string)
	for h, v := range vips {
		for _, x := range []netip.Addr{v.V4, v.V6} {
			if other, dup := seen[x]; dup || !x.IsValid() {
				t.Fatalf("%s: %v (also %s)", h, x, other)
			}
			seen[x] = h
		}
	}
}

func TestVIPSkipsReservedAndNetworkAddresses(t *testing.T) {
	a := mustAllocator(t, 0, "240.241.0.0/29", "2001:2::/125")
	host := "httpbin.bar.global."
	first, _ := a.Deterministic([]string{host}, unreserved)
	v := first[host]
	if !v.V4.IsValid() || !v.V6.IsValid() {
		t.Fatalf("%v", v)
	}
	second, _ := a.Deterministic([]string{host}, reservedOf(v.V4, v.V6))
	ranges := []netip.Prefix{netip.MustParsePrefix("240.241.0.0/29"), netip.MustParsePrefix("2001:2::/125")}
	want4 := afterIn(usableIn(ranges, true), v.V4)
	want6 := afterIn(usableIn(ranges, false), v.V6)
	if w := second[host]; w.V4 != want4 || w.V6 != want6 {
		t.Errorf("with %v reserved: %v; want the next candidates %v %v", v, w, want4, want6)
	}

	// Full ranges: exactly the usable addresses, never the network, broadcast or anycast one.
	vips, exhausted := a.Deterministic(allocHosts("svc", 7), unreserved)
	var got []netip.Addr
	for _, v := range vips {
		got = append(got, v.V4, v.V6)
	}
	got = slices.DeleteFunc(got, func(x netip.Addr) bool { return !x.IsValid() })
	slices.SortFunc(got, netip.Addr.Compare)
	want := []netip.Addr{
		mustAddr("240.241.0.1"), mustAddr("240.241.0.2"), mustAddr("240.241.0.3"), mustAddr("240.241.0.4"), mustAddr("240.241.0.5"), mustAddr("240.241.0.6"),
		mustAddr("2001:2::1"), mustAddr("2001:2::2"), mustAddr("2001:2::3"), mustAddr("2001:2::4"), mustAddr("2001:2::5"), mustAddr("2001:2::6"), mustAddr("2001:2::7"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("allocated %v\nwant      %v", got, want)
	}
	if len(exhausted) != 1 {
		t.Errorf("exhausted %v, want the 7th host (no IPv4 left)", exhausted)
	}

	// Everything reserved but one address.
	all := usableIn([]netip.Prefix{netip.MustParsePrefix("240.241.0.0/29")}, true)
	only, _ := mustAllocator(t, 0, "240.241.0.0/29").Deterministic([]string{host}, reservedOf(slices.Delete(slices.Clone(all), 3, 4)...))
	if only[host].V4 != all[3] {
		t.Errorf("got %v, want the one free address %v", only[host], all[3])
	}
}

func TestVIPExhaustion(t *testing.T) {
	hosts := allocHosts("svc", 4)
	a := mustAllocator(t, 0, "240.241.0.0/30", "2001:2::/126") // 2 and 3 usable
	vips, exhausted := a.Deterministic(hosts, unreserved)
	if want := hosts[2:]; !slices.Equal(exhausted, want) {
		t.Errorf("exhausted %v, want %v", exhausted, want)
	}
	for _, h := range hosts[:2] {
		if v := vips[h]; !v.V4.IsValid() || !v.V6.IsValid() {
			t.Errorf("%s: %v", h, v)
		}
	}
	if v := vips[hosts[2]]; v.V4.IsValid() || !v.V6.IsValid() {
		t.Errorf("third host: %v, want IPv6 only", v)
	}
	if v, ok := vips[hosts[3]]; ok {
		t.Errorf("fourth host: %v, want nothing", v)
	}

	// Several ranges probe as one: all of them fill up before anyone is exhausted.
	a = mustAllocator(t, 0, "240.241.0.0/30", "240.241.1.0/30")
	vips, exhausted = a.Deterministic(allocHosts("svc", 5), unreserved)
	if len(vips) != 4 || len(exhausted) != 1 {
		t.Errorf("%v, exhausted %v", vips, exhausted)
	}

	// A reserved CIDR covering a huge range ends the probe instead of running for ever.
	a = mustAllocator(t, 0, "2001:2:0:1::/64")
	block := netip.MustParsePrefix("2001:2::/48")
	vips, exhausted = a.Deterministic(allocHosts("svc", 1000), reservedPrefixes(block))
	if len(vips) != 0 || len(exhausted) != 1000 {
		t.Errorf("%d VIPs, %d exhausted, want none and all", len(vips), len(exhausted))
	}
}

func TestVIPFamilies(t *testing.T) {
	hosts := allocHosts("svc", 20)
	for _, tc := range []struct {
		ranges []string
		v4, v6 bool
	}{
		{[]string{"240.241.0.0/24"}, true, false},
		{[]string{"2001:2::/120"}, false, true},
		{[]string{"240.241.0.0/24", "2001:2::/120"}, true, true},
		{nil, false, false},
	} {
		vips, exhausted := mustAllocator(t, 0, tc.ranges...).Deterministic(hosts, unreserved)
		if len(exhausted) != 0 {
			t.Errorf("%v: exhausted %v", tc.ranges, exhausted)
		}
		for _, h := range hosts {
			if v := vips[h]; v.V4.IsValid() != tc.v4 || v.V6.IsValid() != tc.v6 || v.V4.IsValid() && !v.V4.Is4() || v.V6.IsValid() && !v.V6.Is6() {
				t.Errorf("%v: %s got %v", tc.ranges, h, v)
			}
		}
	}
}

// TestVIPDeterministicStability checks the documented consequence of hash + probe: appending
// hosts moves no one; removing hosts moves a host only back along its own probe path, so a
// host that got its first candidate never moves.
func TestVIPDeterministicStability(t *testing.T) {
	ranges := []netip.Prefix{netip.MustParsePrefix("240.241.0.0/26"), netip.MustParsePrefix("2001:2::/122")}
	lists := [2][]netip.Addr{usableIn(ranges, true), usableIn(ranges, false)}
	a, err := New(ranges, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 2000 {
		hosts := allocHosts(fmt.Sprintf("s%d-", i), 5+rng.IntN(60))
		var res []netip.Addr
		for range rng.IntN(6) {
			res = append(res, lists[rng.IntN(2)][rng.IntN(62)])
		}
		reserved := reservedOf(res...)
		before, _ := a.Deterministic(hosts, reserved)

		grown := append(slices.Clone(hosts), allocHosts(fmt.Sprintf("new%d-", i), rng.IntN(20))...)
		after, _ := a.Deterministic(grown, reserved)
		for _, h := range hosts {
			if after[h] != before[h] {
				t.Fatalf("appending hosts moved %s: %v → %v", h, before[h], after[h])
			}
		}

		kept := slices.DeleteFunc(slices.Clone(hosts), func(string) bool { return rng.IntN(3) == 0 })
		after, _ = a.Deterministic(kept, reserved)
		for _, h := range kept {
			for fam, pair := range [2][2]netip.Addr{{before[h].V4, after[h].V4}, {before[h].V6, after[h].V6}} {
				old, now := pair[0], pair[1]
				if !old.IsValid() {
					continue // was exhausted: may get anything now
				}
				list := lists[fam]
				start := int(fnv64a(h) % uint64(len(list)))
				path := probePath(list, start, old)
				if !slices.Contains(path, now) {
					t.Fatalf("removing hosts moved %s from %v to %v, off its probe path %v", h, old, now, path)
				}
				if len(path) == 1 && now != old {
					t.Fatalf("%s never collided yet moved from %v to %v", h, old, now)
				}
			}
		}
	}
}

// afterIn is the address after x in list, wrapping.
func afterIn(list []netip.Addr, x netip.Addr) netip.Addr {
	return list[(slices.Index(list, x)+1)%len(list)]
}

// probePath is list[start], list[start+1], ... up to and including end, wrapping.
func probePath(list []netip.Addr, start int, end netip.Addr) []netip.Addr {
	var path []netip.Addr
	for k := range list {
		c := list[(start+k)%len(list)]
		path = append(path, c)
		if c == end {
			return path
		}
	}
	return nil
}

var (
	allocT0    = time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	allocGrace = 10 * time.Minute
)

func TestAllocateNextKeepsLive(t *testing.T) {
	a := mustAllocator(t, allocGrace, "240.241.0.0/24", "2001:2::/120")
	current := map[string]allocation{
		"a.ns.global.": {VIPs: VIPs{mustAddr("240.241.0.9"), mustAddr("2001:2::9")}},
		"b.ns.global.": {VIPs: VIPs{mustAddr("240.241.0.10"), mustAddr("2001:2::10")}, Released: allocT0.Add(-time.Minute)},
	}
	next, exhausted, conflicts := a.next(current, []string{"c.ns.global.", "b.ns.global.", "a.ns.global."}, unreserved, allocT0)
	if len(exhausted)+len(conflicts) != 0 {
		t.Errorf("exhausted %v, conflicts %v", exhausted, conflicts)
	}
	if next["a.ns.global."] != current["a.ns.global."] {
		t.Errorf("live host moved: %v", next["a.ns.global."])
	}
	if got := next["b.ns.global."]; got.VIPs != current["b.ns.global."].VIPs || !got.Released.IsZero() {
		t.Errorf("returning host: %v, want its VIPs back, live", got)
	}
	c := next["c.ns.global."]
	if !c.V4.IsValid() || !c.V6.IsValid() || !c.Released.IsZero() {
		t.Errorf("new host: %v", c)
	}
	// Again with nothing changed: nothing moves.
	again, _, _ := a.next(next, []string{"c.ns.global.", "b.ns.global.", "a.ns.global."}, unreserved, allocT0.Add(time.Hour))
	if !maps.Equal(again, next) {
		t.Errorf("a steady state changed:\n%v\n%v", next, again)
	}
}

func TestAllocateNextReleasesAndDrops(t *testing.T) {
	a := mustAllocator(t, allocGrace, "240.241.0.0/30") // two addresses
	live := allocation{VIPs: VIPs{V4: mustAddr("240.241.0.1")}}
	current := map[string]allocation{"a.ns.global.": live, "b.ns.global.": {VIPs: VIPs{V4: mustAddr("240.241.0.2")}}}

	// a goes away: released now, its address held.
	step1, _, _ := a.next(current, []string{"b.ns.global."}, unreserved, allocT0)
	if got := step1["a.ns.global."]; got.VIPs != live.VIPs || !got.Released.Equal(allocT0) {
		t.Fatalf("released: %v, want released at %v", got, allocT0)
	}
	// Still gone later: the release time stays the first one.
	step2, exhausted, _ := a.next(step1, []string{"b.ns.global.", "c.ns.global."}, unreserved, allocT0.Add(allocGrace))
	if got := step2["a.ns.global."]; !got.Released.Equal(allocT0) {
		t.Errorf("release time moved to %v", got.Released)
	}
	// Within grace the address goes to no one else.
	if _, ok := step2["c.ns.global."]; ok || !slices.Equal(exhausted, []string{"c.ns.global."}) {
		t.Errorf("a new host got a released address within grace: %v, exhausted %v", step2, exhausted)
	}
	// Past grace it is dropped, and free for the new host in the same step.
	step3, exhausted, _ := a.next(step2, []string{"b.ns.global.", "c.ns.global."}, unreserved, allocT0.Add(allocGrace+time.Second))
	if _, ok := step3["a.ns.global."]; ok || len(exhausted) != 0 || step3["c.ns.global."].V4 != mustAddr("240.241.0.1") {
		t.Errorf("after grace: %v, exhausted %v", step3, exhausted)
	}
}

func TestAllocateNextComesBack(t *testing.T) {
	a := mustAllocator(t, allocGrace, "240.241.0.0/24", "2001:2::/120")
	first, _, _ := a.next(nil, []string{"a.ns.global."}, unreserved, allocT0)
	gone, _, _ := a.next(first, nil, unreserved, allocT0.Add(time.Minute))
	// A host that hashes onto a's addresses meanwhile must not get them.
	others, _, _ := a.next(gone, allocHosts("other", 100), unreserved, allocT0.Add(2*time.Minute))
	for h, al := range others {
		if h != "a.ns.global." && (al.V4 == first["a.ns.global."].V4 || al.V6 == first["a.ns.global."].V6) {
			t.Fatalf("%s got a's released %v", h, al)
		}
	}
	back, _, _ := a.next(others, append(allocHosts("other", 100), "a.ns.global."), unreserved, allocT0.Add(time.Minute+allocGrace))
	if got := back["a.ns.global."]; got != first["a.ns.global."] {
		t.Errorf("came back within grace with %v, want %v", got, first["a.ns.global."])
	}
}

func TestAllocateNextConflicts(t *testing.T) {
	a := mustAllocator(t, allocGrace, "240.241.0.0/24", "2001:2::/120")
	current := map[string]allocation{
		"a.ns.global.": {VIPs: VIPs{mustAddr("240.241.0.9"), mustAddr("2001:2::9")}},
		"b.ns.global.": {VIPs: VIPs{mustAddr("240.241.0.10"), mustAddr("2001:2::10")}},
		"z.ns.global.": {VIPs: VIPs{V6: mustAddr("2001:2::11")}, Released: allocT0}, // released: no conflict to report
	}
	reserved := reservedOf(mustAddr("2001:2::9"), mustAddr("2001:2::11"))
	hosts := []string{"a.ns.global.", "b.ns.global."}
	next, _, conflicts := a.next(current, hosts, reserved, allocT0)
	if !slices.Equal(conflicts, []string{"a.ns.global."}) {
		t.Errorf("conflicts %v", conflicts)
	}
	if next["a.ns.global."] != current["a.ns.global."] {
		t.Errorf("a conflicting live VIP moved: %v", next["a.ns.global."])
	}

	// Two live hosts holding one address (a hand-edited ConfigMap): both reported, neither moved.
	current["b.ns.global."] = allocation{VIPs: VIPs{mustAddr("240.241.0.9"), mustAddr("2001:2::10")}}
	next, _, conflicts = a.next(current, hosts, unreserved, allocT0)
	if !slices.Equal(conflicts, hosts) || next["b.ns.global."] != current["b.ns.global."] {
		t.Errorf("conflicts %v, b %v", conflicts, next["b.ns.global."])
	}
}

func TestAllocateNextRangeChanges(t *testing.T) {
	current := map[string]allocation{
		"a.ns.global.": {VIPs: VIPs{V4: mustAddr("240.241.0.9")}},
		"b.ns.global.": {VIPs: VIPs{mustAddr("10.9.9.9"), mustAddr("2001:db8::1")}},
	}
	hosts := []string{"a.ns.global.", "b.ns.global."}

	// An IPv6 range is added: a gets an IPv6 VIP and keeps its IPv4 one.
	a := mustAllocator(t, allocGrace, "240.241.0.0/24", "2001:2::/120")
	next, exhausted, _ := a.next(current, hosts, unreserved, allocT0)
	got := next["a.ns.global."]
	v6 := netip.MustParsePrefix("2001:2::/120")
	if got.V4 != mustAddr("240.241.0.9") || !v6.Contains(got.V6) || got.V6 == v6.Addr() || len(exhausted) != 0 {
		t.Errorf("family added: %v, exhausted %v", got, exhausted)
	}
	// b lies outside every range now configured: kept as is while it lives.
	if next["b.ns.global."] != current["b.ns.global."] {
		t.Errorf("out-of-range VIPs moved: %v", next["b.ns.global."])
	}

	// IPv6 is switched off: a keeps nothing less, gains nothing.
	a = mustAllocator(t, allocGrace, "240.241.0.0/24")
	next, _, _ = a.next(map[string]allocation{"a.ns.global.": got}, hosts[:1], unreserved, allocT0)
	if next["a.ns.global."] != got {
		t.Errorf("family removed: %v, want %v", next["a.ns.global."], got)
	}
}

func TestAllocateNextDoesNotMutate(t *testing.T) {
	a := mustAllocator(t, allocGrace, "240.241.0.0/28", "2001:2::/124")
	current, _, _ := a.next(nil, allocHosts("svc", 8), unreserved, allocT0)
	current["old.ns.global."] = allocation{VIPs: VIPs{V4: mustAddr("240.241.0.15")}, Released: allocT0.Add(-2 * allocGrace)}
	saved := maps.Clone(current)
	a.next(current, allocHosts("svc", 12)[4:], reservedOf(current["svc5.ns5.global."].V4), allocT0)
	if !maps.Equal(current, saved) {
		t.Errorf("current changed:\n%v\nwas\n%v", current, saved)
	}
}

func TestAllocateNextMatchesDeterministic(t *testing.T) {
	a := mustAllocator(t, allocGrace, "240.241.0.0/26", "2001:2::/122")
	hosts := append(allocHosts("svc", 70), "svc3.ns3.global.") // with a duplicate
	reserved := reservedOf(mustAddr("240.241.0.20"), mustAddr("2001:2::20"))
	vips, exhausted := a.Deterministic(hosts, reserved)
	next, nextExhausted, _ := a.next(nil, hosts, reserved, allocT0)
	if len(next) != len(vips) || !slices.Equal(exhausted, nextExhausted) {
		t.Fatalf("%d vs %d hosts, exhausted %v vs %v", len(next), len(vips), nextExhausted, exhausted)
	}
	for h, al := range next {
		if al.VIPs != vips[h] || !al.Released.IsZero() {
			t.Errorf("%s: next %v, deterministic %v", h, al, vips[h])
		}
	}
	if len(exhausted) != 70-61 { // 62 usable IPv4 addresses, one reserved
		t.Errorf("exhausted %d hosts, want %d", len(exhausted), 70-61)
	}
}

func TestLegacyDecoding(t *testing.T) {
	data := map[string]string{
		"httpbin.bar.global": "240.240.0.7,2001:2::7",
		"v4.bar.global":      "240.240.0.8",
		"v6.bar.global":      ",2001:2::8",
		"gone.bar.global":    "240.240.0.9,2001:2::9 released=2026-11-22T06:00:00Z",
		"gone4.bar.global":   "240.240.0.10 released=2026-11-22T06:00:00Z",
		"under_score.global": "240.240.0.11",
	}
	want := map[string]allocation{
		"httpbin.bar.global.": {VIPs: VIPs{mustAddr("240.240.0.7"), mustAddr("2001:2::7")}},
		"v4.bar.global.":      {VIPs: VIPs{V4: mustAddr("240.240.0.8")}},
		"v6.bar.global.":      {VIPs: VIPs{V6: mustAddr("2001:2::8")}},
		"gone.bar.global.":    {VIPs: VIPs{mustAddr("240.240.0.9"), mustAddr("2001:2::9")}, Released: allocT0},
		"gone4.bar.global.":   {VIPs: VIPs{V4: mustAddr("240.240.0.10")}, Released: allocT0},
		"under_score.global.": {VIPs: VIPs{V4: mustAddr("240.240.0.11")}},
	}
	got, held, errs := decodeLegacy(data)
	if len(held)+len(errs) != 0 {
		t.Errorf("held %v, errs %v", held, errs)
	}
	if !maps.EqualFunc(got, want, func(x, y allocation) bool { return x.VIPs == y.VIPs && x.Released.Equal(y.Released) }) {
		t.Errorf("decoded\n%v\nwant\n%v", got, want)
	}
}

func TestLegacyCorrupt(t *testing.T) {
	for _, tc := range []struct {
		key, value string
		err        string
		held       []netip.Addr
	}{
		{"a.global", "hello", "not an IPv4 address", nil},
		{"a.global", "", "no address", nil},
		{"a.global", ",", "no address", nil},
		{"a.global", "2001:2::7,240.240.0.7", "not an IPv4 address", []netip.Addr{mustAddr("2001:2::7"), mustAddr("240.240.0.7")}},
		{"a.global", "240.240.0.7,240.240.0.8", "not an IPv6 address", []netip.Addr{mustAddr("240.240.0.7"), mustAddr("240.240.0.8")}},
		{"a.global", ",::ffff:240.240.0.7", "not an IPv6 address", []netip.Addr{mustAddr("240.240.0.7")}},
		{"a.global", "240.240.0.7,2001:2::7,2001:2::8", "not an IPv6 address", []netip.Addr{mustAddr("240.240.0.7"), mustAddr("2001:2::7"), mustAddr("2001:2::8")}},
		{"a.global", "240.240.0.7 released=yesterday", "RFC 3339", []netip.Addr{mustAddr("240.240.0.7")}},
		{"a.global", "240.240.0.7  released=2026-11-22T06:00:00Z", "not an IPv4 address", []netip.Addr{mustAddr("240.240.0.7")}},
		{"a.global", "240.240.0.7;2001:2::9", "not an IPv4 address", []netip.Addr{mustAddr("240.240.0.7"), mustAddr("2001:2::9")}},
		{"a.global", "999.1.1.1", "not an IPv4 address", nil},
		{"*.a.global", "240.240.0.7", "wildcard", []netip.Addr{mustAddr("240.240.0.7")}},
		{"A.global", "240.240.0.7", "canonical", []netip.Addr{mustAddr("240.240.0.7")}},
		{"a.global.", "240.240.0.7", "canonical", []netip.Addr{mustAddr("240.240.0.7")}},
		{"a..global", "240.240.0.7", "not a host", []netip.Addr{mustAddr("240.240.0.7")}},
		{"a b", ",2001:2::7", "not a host", []netip.Addr{mustAddr("2001:2::7")}},
	} {
		data := map[string]string{tc.key: tc.value, "good.global": "240.240.0.1"}
		m, held, errs := decodeLegacy(data)
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.err) || !strings.Contains(errs[0].Error(), fmt.Sprintf("%q", tc.key)) {
			t.Errorf("%q: %q: errors %v, want one naming the key and %q", tc.key, tc.value, errs, tc.err)
		}
		if !slices.Equal(held, tc.held) {
			t.Errorf("%q: %q: held %v, want %v", tc.key, tc.value, held, tc.held)
		}
		if len(m) != 1 || m["good.global."].V4 != mustAddr("240.240.0.1") {
			t.Errorf("%q: %q: the good entry: %v", tc.key, tc.value, m)
		}
	}
}

// TestAllocateNextProperties drives next through random create/delete sequences over small
// ranges, with random reserved addresses, advancing time and a short grace, and checks the
// invariants after every step. The state goes through the shards' encoding each time.
func TestAllocateNextProperties(t *testing.T) {
	const (
		sequences = 3000
		maxSteps  = 50
		universe  = 90
		grace     = 5 * time.Second
	)
	configs := [][]string{
		{"240.241.0.0/26", "2001:2::/122"},
		{"240.241.0.0/26"},
		{"2001:2::/123"},
		{"240.241.0.0/27", "240.241.1.0/28", "2001:2::/124", "2001:2:0:1::/124"},
	}
	names := allocHosts("h", universe)
	rng := rand.New(rand.NewPCG(7, 8))
	for seq := range sequences {
		ranges := configs[seq%len(configs)]
		a := mustAllocator(t, grace, ranges...)
		var ps []netip.Prefix
		for _, r := range ranges {
			ps = append(ps, netip.MustParsePrefix(r))
		}
		lists := [2][]netip.Addr{usableIn(ps, true), usableIn(ps, false)}
		usable := append(slices.Clone(lists[0]), lists[1]...)

		state := map[string]allocation{}
		created := map[string]int{}      // live host → creation order
		goneAt := map[string]time.Time{} // when a host live at the step before went away
		wasLive, live := map[string]bool{}, map[string]bool{}
		saved, prevHolder, holder, short := map[string]allocation{}, map[netip.Addr]string{}, map[netip.Addr]string{}, map[string]bool{}
		last := map[string]VIPs{}
		res := map[netip.Addr]bool{}
		reserved := func(x netip.Addr) uint64 {
			if res[x] {
				return 1
			}
			return 0
		}
		now := allocT0
		counter := 0
		fail := func(step int, format string, args ...any) {
			t.Helper()
			t.Fatalf("sequence %d (%v) step %d: %s", seq, ranges, step, fmt.Sprintf(format, args...))
		}

		for step := range 1 + rng.IntN(maxSteps) {
			now = now.Add(time.Duration(rng.IntN(4)) * time.Second)
			for range rng.IntN(6) {
				h := names[rng.IntN(universe)]
				if _, ok := created[h]; ok {
					delete(created, h)
				} else {
					counter++
					created[h] = counter
				}
			}
			if rng.IntN(8) == 0 {
				res[usable[rng.IntN(len(usable))]] = true
			}
			if rng.IntN(16) == 0 {
				for x := range res {
					delete(res, x)
					break
				}
			}
			hosts := slices.SortedFunc(maps.Keys(created), func(x, y string) int { return created[x] - created[y] })
			clear(live)
			for _, h := range hosts {
				live[h] = true
			}
			for h := range wasLive {
				if !live[h] {
					goneAt[h] = now
				}
			}

			prev := state
			clear(saved)
			maps.Copy(saved, prev)
			next, exhausted, conflicts := a.next(prev, hosts, reserved, now)
			if !maps.Equal(prev, saved) {
				fail(step, "current was mutated")
			}

			clear(prevHolder)
			for h, al := range prev {
				for _, x := range []netip.Addr{al.V4, al.V6} {
					if x.IsValid() {
						prevHolder[x] = h
					}
				}
			}
			clear(holder)
			var wantConflicts []string
			for h, al := range next {
				if !al.V4.IsValid() && !al.V6.IsValid() {
					fail(step, "%s: an allocation without address", h)
				}
				if al.V4.IsValid() && !al.V4.Is4() || al.V6.IsValid() && !al.V6.Is6() {
					fail(step, "%s: families mixed up: %v", h, al)
				}
				// Release bookkeeping: live hosts are live; released ones within grace are kept.
				switch p, had := prev[h]; {
				case live[h] && !al.Released.IsZero():
					fail(step, "live host %s marked released", h)
				case !live[h] && !had:
					fail(step, "%s appeared from nowhere", h)
				case !live[h] && p.Released.IsZero() && !al.Released.Equal(now):
					fail(step, "%s went away at %v but released %v", h, now, al.Released)
				case !live[h] && !p.Released.IsZero() && !al.Released.Equal(p.Released):
					fail(step, "%s: release time moved from %v to %v", h, p.Released, al.Released)
				case !live[h] && now.Sub(al.Released) > grace:
					fail(step, "%s released at %v not dropped at %v", h, al.Released, now)
				}
				conflicted := false
				for _, x := range []netip.Addr{al.V4, al.V6} {
					if !x.IsValid() {
						continue
					}
					// (1) no address held twice, live or released.
					if other, dup := holder[x]; dup {
						fail(step, "%v held by %s and %s", x, h, other)
					}
					holder[x] = h
					if prevHolder[x] == h {
						conflicted = conflicted || live[h] && res[x]
						continue
					}
					// (2) a newly assigned address is neither reserved nor held by anyone
					// else, unless that one was dropped past grace.
					if res[x] {
						fail(step, "%s newly got reserved %v", h, x)
					}
					if other, ok := prevHolder[x]; ok {
						if _, kept := next[other]; kept || live[other] || now.Sub(prev[other].Released) <= grace {
							fail(step, "%s got %v, still held by %s (%v)", h, x, other, prev[other])
						}
					}
					// (5) in a configured range, never a network or broadcast address.
					fam := 0
					if x.Is6() {
						fam = 1
					}
					if !slices.Contains(lists[fam], x) {
						fail(step, "%s got %v, not a usable address of %v", h, x, ranges)
					}
				}
				if conflicted {
					wantConflicts = append(wantConflicts, h)
				}
			}
			slices.Sort(wantConflicts)
			if !slices.Equal(conflicts, wantConflicts) {
				fail(step, "conflicts %v, want %v", conflicts, wantConflicts)
			}
			for h, p := range prev {
				if _, kept := next[h]; !kept && (live[h] || now.Sub(p.Released) <= grace || p.Released.IsZero()) {
					fail(step, "%s dropped: %v at %v", h, p, now)
				}
			}

			clear(short)
			for _, h := range exhausted {
				short[h] = true
				if !live[h] {
					fail(step, "exhausted %s is not live", h)
				}
			}
			for _, h := range hosts {
				al := next[h]
				// (3) live hosts keep what they had; (4) so do those back within grace.
				if p, had := prev[h]; had {
					if p.V4.IsValid() && p.V4 != al.V4 || p.V6.IsValid() && p.V6 != al.V6 {
						fail(step, "%s moved from %v to %v", h, p.VIPs, al.VIPs)
					}
				}
				if v, ok := last[h]; ok && !wasLive[h] && now.Sub(goneAt[h]) <= grace {
					if v.V4.IsValid() && v.V4 != al.V4 || v.V6.IsValid() && v.V6 != al.V6 {
						fail(step, "%s back within grace with %v, had %v", h, al.VIPs, v)
					}
				}
				// (6) one address per configured family, unless exhausted; exhausted only when
				// every usable address of the family is held or reserved.
				missing := false
				for fam, x := range []netip.Addr{al.V4, al.V6} {
					if len(lists[fam]) == 0 || x.IsValid() {
						continue
					}
					missing = true
					if !short[h] {
						fail(step, "%s lacks a family but is not exhausted: %v", h, al)
					}
					for _, c := range lists[fam] {
						if _, held := holder[c]; !held && !res[c] {
							fail(step, "%s exhausted while %v is free", h, c)
						}
					}
				}
				if short[h] && !missing {
					fail(step, "%s exhausted with %v", h, al)
				}
			}
			for _, h := range hosts {
				last[h] = next[h].VIPs
			}

			wasLive, live = live, wasLive

			// The state goes through the shards.
			back := shardRoundTrip(next)
			if len(back.held)+len(back.errs)+len(back.incomplete) != 0 || !maps.Equal(back.hosts, next) {
				fail(step, "round trip: %+v", back)
			}
			state = back.hosts
		}
	}
}

// A reserved range larger than any probe (fd00::/65 in a pool of fd00::/64: 2^63 addresses) is
// passed in one step: the hosts that hash into it get addresses of the other half, and the pool
// is not called full while half of it is free.
func TestVIPSkipsLargeReservedRanges(t *testing.T) {
	a := mustAllocator(t, 0, "fd00::/64")
	half := netip.MustParsePrefix("fd00::/65")
	hosts := allocHosts("svc", 40)
	vips, exhausted := a.Deterministic(hosts, reservedPrefixes(half))
	if len(exhausted) != 0 || len(vips) != 40 {
		t.Fatalf("%d VIPs, %d exhausted (%v), want all 40 served", len(vips), len(exhausted), exhausted)
	}
	for h, v := range vips {
		if half.Contains(v.V6) {
			t.Errorf("%s got %s, inside the reserved %s", h, v.V6, half)
		}
	}
	// A reserved range in the middle of an IPv4 pool: the same, and the first address after it
	// is what linear probing would give.
	a = mustAllocator(t, 0, "240.241.0.0/16")
	block := netip.MustParsePrefix("240.241.0.0/17")
	vips, exhausted = a.Deterministic(hosts, reservedPrefixes(block))
	want, wantEx := referenceDeterministic([]netip.Prefix{netip.MustParsePrefix("240.241.0.0/16")}, hosts, reservedPrefixes(block))
	if len(exhausted) != 0 || !maps.Equal(vips, want) || len(wantEx) != 0 {
		t.Errorf("with %s reserved: %v %v, want linear probing's %v %v", block, vips, exhausted, want, wantEx)
	}
}

func TestThrough(t *testing.T) {
	for _, tc := range []struct {
		a, p string
		want uint64
	}{
		{"240.241.0.0", "240.241.0.0/16", 65536},
		{"240.241.255.255", "240.241.0.0/16", 1},
		{"240.241.1.0", "240.241.0.0/23", 256},
		{"fd00::", "fd00::/65", 1 << 63},
		{"fd00::1", "fd00::/64", math.MaxUint64},
		{"fd00::", "fd00::/64", math.MaxUint64},
		{"fd00::", "fd00::/32", math.MaxUint64},
		{"fd00::ff", "fd00::/120", 1},
	} {
		if got := Through(netip.MustParseAddr(tc.a), netip.MustParsePrefix(tc.p)); got != tc.want {
			t.Errorf("Through(%s, %s) = %d, want %d", tc.a, tc.p, got, tc.want)
		}
	}
}
