package vip

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// shardRoundTrip is m through the shards' encoding and back.
func shardRoundTrip(m map[string]allocation) merged {
	return mergeShards(decodeAll(encodeShards(m)))
}

func decodeAll(data [shardCount]map[string]string) []decodedShard {
	shards := make([]decodedShard, shardCount)
	for i, d := range data {
		shards[i] = decodeShard(i, d)
	}
	return shards
}

// keyed is the one-shard data holding exactly the given key → value pairs, placed by address;
// it panics on keys that are not addresses.
func keyed(pairs ...string) [shardCount]map[string]string {
	var data [shardCount]map[string]string
	for i := range data {
		data[i] = map[string]string{}
	}
	for i := 0; i < len(pairs); i += 2 {
		a := netip.MustParseAddr(strings.ReplaceAll(pairs[i], "-", ":"))
		data[shardOf(a)][pairs[i]] = pairs[i+1]
	}
	return data
}

func TestShardEncoding(t *testing.T) {
	m := map[string]allocation{
		"httpbin.bar.global.": {VIPs: VIPs{mustAddr("240.240.0.7"), mustAddr("2001:2::7")}},
		"v4.bar.global.":      {VIPs: VIPs{V4: mustAddr("240.240.0.8")}},
		"v6.bar.global.":      {VIPs: VIPs{V6: mustAddr("2001:2::8")}},
		"gone.bar.global.":    {VIPs: VIPs{mustAddr("240.240.0.9"), mustAddr("2001:2::9")}, Released: allocT0.In(time.FixedZone("x", 3600))},
		"under_score.global.": {VIPs: VIPs{V4: mustAddr("240.240.0.11")}},
		"empty.global.":       {},
	}
	got := encodeShards(m)
	want := keyed(
		"240.240.0.7", "httpbin.bar.global with=2001:2::7",
		"2001-2--7", "httpbin.bar.global with=240.240.0.7",
		"240.240.0.8", "v4.bar.global",
		"2001-2--8", "v6.bar.global",
		"240.240.0.9", "gone.bar.global with=2001:2::9 released=2026-11-22T06:00:00Z",
		"2001-2--9", "gone.bar.global with=240.240.0.9 released=2026-11-22T06:00:00Z",
		"240.240.0.11", "under_score.global",
	)
	for i := range got {
		if !maps.Equal(got[i], want[i]) {
			t.Errorf("shard %02d holds %v, want %v", i, got[i], want[i])
		}
	}
	back := shardRoundTrip(m)
	delete(m, "empty.global.")
	if len(back.held)+len(back.errs)+len(back.incomplete) != 0 {
		t.Errorf("held %v, errs %v, incomplete %v", back.held, back.errs, back.incomplete)
	}
	if !maps.EqualFunc(back.hosts, m, func(x, y allocation) bool { return x.VIPs == y.VIPs && x.Released.Equal(y.Released) }) {
		t.Errorf("round trip\n%v\nwant\n%v", back, m)
	}
}

// TestShardsSpread: the shards fill evenly, so that 100k dual-stack hosts sit far below a
// ConfigMap's 1 MiB in each.
func TestShardsSpread(t *testing.T) {
	a, err := New([]netip.Prefix{netip.MustParsePrefix("240.0.0.0/12"), netip.MustParsePrefix("100::/64")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hosts := make([]string, 100_000)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("service-%06d.namespace-%04d.global.", i, i%1000)
	}
	next, exhausted, _ := a.next(nil, hosts, func(netip.Addr) uint64 { return 0 }, allocT0)
	if len(exhausted) != 0 {
		t.Fatalf("%d exhausted", len(exhausted))
	}
	for i, data := range encodeShards(next) {
		size := 0
		for k, v := range data {
			size += len(k) + len(v)
		}
		if size > 1<<20/2 {
			t.Errorf("shard %02d holds %d bytes for 100k hosts, more than half a ConfigMap", i, size)
		}
	}
}

func TestShardCorrupt(t *testing.T) {
	misplaced := mustAddr("240.240.0.1")
	wrong := (shardOf(misplaced) + 1) % shardCount
	for _, tc := range []struct {
		key, value string
		shard      int // -1: where the key's address belongs
		err        string
		held       []netip.Addr
	}{
		{"hello", "a.global", 0, "not an address", nil},
		{"999.1.1.1", "a.global", 0, "not an address", nil},
		{"2001:2::7", "a.global", 0, "canonical form", nil}, // not a valid key anyway
		{"2001-0002--7", "a.global", 0, "canonical form", nil},
		{"--ffff-240.240.0.7", "a.global", 0, "not an address", nil},
		{"fe80--1%eth0", "a.global", 0, "not an address", nil},
		{"240.240.0.1", "a.global", wrong, "belongs in shard", []netip.Addr{misplaced}},
		{"240.240.0.7", "", -1, "not a host", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "a.global released=yesterday", -1, "RFC 3339", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "a.global  released=2026-11-22T06:00:00Z", -1, "not one with= or released=", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "a.global released=2026-11-22T06:00:00Z released=2026-11-22T06:00:00Z", -1, "not one with=", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "a.global with=240.240.0.8", -1, "other family", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "a.global with=garbage", -1, "other family", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "a.global with=::ffff:240.240.0.8", -1, "other family", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "a.global size=3", -1, "not one with=", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "*.a.global", -1, "wildcard", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "A.global", -1, "canonical", []netip.Addr{mustAddr("240.240.0.7")}},
		{"240.240.0.7", "a.global.", -1, "canonical", []netip.Addr{mustAddr("240.240.0.7")}},
		{"2001-2--7", "a..global", -1, "not a host", []netip.Addr{mustAddr("2001:2::7")}},
	} {
		shard := tc.shard
		if shard < 0 {
			shard = shardOf(tc.held[0])
		}
		good := mustAddr("240.240.0.200")
		data := map[string]string{tc.key: tc.value}
		d := decodeShard(shard, data)
		g := decodeShard(shardOf(good), map[string]string{good.String(): "good.global"})
		got := mergeShards([]decodedShard{d, g})
		m, held, errs := got.hosts, got.held, got.errs
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.err) || !strings.Contains(errs[0].Error(), fmt.Sprintf("%q", tc.key)) {
			t.Errorf("%q: %q: errors %v, want one naming the key and %q", tc.key, tc.value, errs, tc.err)
		}
		if !slices.Equal(held, tc.held) {
			t.Errorf("%q: %q: held %v, want %v", tc.key, tc.value, held, tc.held)
		}
		if !slices.Equal(d.corrupt, []string{tc.key}) {
			t.Errorf("%q: %q: corrupt keys %v, want the key", tc.key, tc.value, d.corrupt)
		}
		if len(m) != 1 || m["good.global."].V4 != good {
			t.Errorf("%q: %q: the good entry: %v", tc.key, tc.value, m)
		}
	}
}

// TestShardMergeTwoAddresses: only two leaders at once leave a host two addresses of a family;
// every replica then settles on the same one, the live over the released, else the lower.
func TestShardMergeTwoAddresses(t *testing.T) {
	released := "a.global released=2026-11-22T06:00:00Z"
	for _, tc := range []struct {
		name  string
		pairs []string
		want  allocation
	}{
		{"both live", []string{"240.240.0.9", "a.global", "240.240.0.3", "a.global with=2001:2::1", "2001-2--1", "a.global with=240.240.0.3"},
			allocation{VIPs: VIPs{mustAddr("240.240.0.3"), mustAddr("2001:2::1")}}},
		{"live beats released", []string{"240.240.0.3", released, "240.240.0.9", "a.global"},
			allocation{VIPs: VIPs{V4: mustAddr("240.240.0.9")}}},
		{"released both", []string{"240.240.0.9", released, "240.240.0.3", "a.global released=2026-11-22T07:00:00Z"},
			allocation{VIPs: VIPs{V4: mustAddr("240.240.0.3")}, Released: allocT0.Add(time.Hour)}},
		{"one family live", []string{"240.240.0.9", released, "2001-2--1", "a.global with=240.240.0.9"},
			allocation{VIPs: VIPs{mustAddr("240.240.0.9"), mustAddr("2001:2::1")}}},
	} {
		data := keyed(tc.pairs...)
		got := mergeShards(decodeAll(data))
		m, held, errs := got.hosts, got.held, got.errs
		// Every order of the shards settles the same.
		shards := decodeAll(data)
		slices.Reverse(shards)
		reversed := mergeShards(shards).hosts
		if len(held)+len(errs) != 0 || len(m) != 1 || m["a.global."].VIPs != tc.want.VIPs ||
			!m["a.global."].Released.Equal(tc.want.Released) || reversed["a.global."] != m["a.global."] {
			t.Errorf("%s: merged %v (reversed %v), held %v, errs %v; want a.global. %v", tc.name, m, reversed, held, errs, tc.want)
		}
	}
}

// TestShardMergeIncomplete: a live host with a record naming a partner that is not there is
// incomplete; one merely missing the name of its partner is not.
func TestShardMergeIncomplete(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pairs      []string
		incomplete bool
	}{
		{"v6 to come", []string{"240.240.0.9", "a.global with=2001:2::1"}, true},
		{"v4 to come", []string{"2001-2--1", "a.global with=240.240.0.9"}, true},
		{"both there", []string{"240.240.0.9", "a.global with=2001:2::1", "2001-2--1", "a.global with=240.240.0.9"}, false},
		{"v6 added, v4 not rewritten yet", []string{"240.240.0.9", "a.global", "2001-2--1", "a.global with=240.240.0.9"}, false},
		{"single family", []string{"240.240.0.9", "a.global"}, false},
		{"released", []string{"240.240.0.9", "a.global with=2001:2::1 released=2026-11-22T06:00:00Z"}, false},
	} {
		if got := mergeShards(decodeAll(keyed(tc.pairs...))).incomplete["a.global."]; got != tc.incomplete {
			t.Errorf("%s: incomplete %v, want %v", tc.name, got, tc.incomplete)
		}
	}
}

// TestShardMergeLegacy: while the legacy ConfigMap is read, it fills in a family a host's
// shards do not show yet, but never an address the shards hold for another host.
func TestShardMergeLegacy(t *testing.T) {
	m := mergeShards(decodeAll(keyed(
		"240.240.0.1", "a.global with=2001:2::1", // a's IPv6 record is not written yet
		"2001-2--3", "d.global", // d holds what the legacy ConfigMap says is c's
	)))
	m.addLegacy(map[string]allocation{
		"a.global.": {VIPs: VIPs{mustAddr("240.240.0.1"), mustAddr("2001:2::1")}},
		"c.global.": {VIPs: VIPs{mustAddr("240.240.0.3"), mustAddr("2001:2::3")}},
		"e.global.": {VIPs: VIPs{V4: mustAddr("240.240.0.5")}},
	})
	want := map[string]VIPs{
		"a.global.": {mustAddr("240.240.0.1"), mustAddr("2001:2::1")},
		"c.global.": {mustAddr("240.240.0.3"), mustAddr("2001:2::3")}, // not in the shards: as the legacy has it (next() reports the conflict with d)
		"d.global.": {V6: mustAddr("2001:2::3")},
		"e.global.": {V4: mustAddr("240.240.0.5")},
	}
	for h, v := range want {
		if m.hosts[h].VIPs != v {
			t.Errorf("%s: %v, want %v", h, m.hosts[h].VIPs, v)
		}
	}
	if m.incomplete["a.global."] {
		t.Error("a is incomplete although the legacy ConfigMap holds its IPv6 address")
	}

	// A host the shards hold, lacking a family whose legacy address the shards gave another.
	m = mergeShards(decodeAll(keyed("240.240.0.1", "a.global", "2001-2--1", "z.global")))
	m.addLegacy(map[string]allocation{"a.global.": {VIPs: VIPs{mustAddr("240.240.0.1"), mustAddr("2001:2::1")}}})
	if got := m.hosts["a.global."].VIPs; got != (VIPs{V4: mustAddr("240.240.0.1")}) {
		t.Errorf("a: %v, want its IPv4 address only: z holds the IPv6 one", got)
	}
}

// TestShardEncodingCollision: two hosts on one address (a hand-edited or legacy ConfigMap)
// encode to one record, the same whatever the map order: the live host, else the lower name.
func TestShardEncodingCollision(t *testing.T) {
	a := mustAddr("240.240.0.1")
	for range 20 { // map order varies
		for _, tc := range []struct {
			m    map[string]allocation
			want string
		}{
			{map[string]allocation{"b.global.": {VIPs: VIPs{V4: a}}, "a.global.": {VIPs: VIPs{V4: a}}}, "a.global"},
			{map[string]allocation{"b.global.": {VIPs: VIPs{V4: a}}, "a.global.": {VIPs: VIPs{V4: a}, Released: allocT0}}, "b.global"},
		} {
			if got := encodeShards(tc.m)[shardOf(a)][a.String()]; got != tc.want {
				t.Fatalf("%v encodes %s as %q, want %q", tc.m, a, got, tc.want)
			}
		}
	}
}
