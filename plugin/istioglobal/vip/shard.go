package vip

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/hostname"
)

// shardCount is how many ConfigMaps hold the allocations. One ConfigMap holds at most 1 MiB; a
// dual-stack host with a 30-character name takes about 150 bytes (two keys, two values naming
// the host and its partner), so 32 shards hold 100k such hosts at about half their capacity
// (480 KiB measured). Changing it moves every allocation to another shard: it is part of the
// format.
const shardCount = 32

// shardNames are the ConfigMaps holding the allocations of the store named name: name-00 to
// name-31.
func shardNames(name string) []string {
	names := make([]string, shardCount)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%02d", name, i)
	}
	return names
}

// shardOf is the shard that holds address a: the FNV-1a 64 hash of its 16 bytes, modulo the
// shard count. An address always lives in one shard, so two writers that would hand it out
// both write that one ConfigMap, and the second write fails on its resourceVersion.
func shardOf(a netip.Addr) int {
	b := a.As16()
	return int(fnv1a(b[:]) % shardCount)
}

// addressKey is a as a ConfigMap key, which may not hold ':': IPv6 colons become '-', which an
// address never holds, so the key reads back unambiguously (100::7 is 100--7).
func addressKey(a netip.Addr) string { return strings.ReplaceAll(a.String(), ":", "-") }

// record is one shard entry: address → the host holding it, the host's address of the other
// family if it has one (its partner, in another shard or the same), and when the host went away.
type record struct {
	addr, partner netip.Addr
	host          string // canonical, with the trailing dot
	released      time.Time
}

// decodedShard is one shard's data read: its records; the keys of the entries that do not
// decode, which are kept as they are; the addresses of those (their host may well be alive and
// using them, so no one else may get them); and why each does not decode.
type decodedShard struct {
	records []record
	corrupt []string
	held    []netip.Addr
	errs    []error
}

// encodeShards renders m as the data of each shard: one key per address (addressKey), valued
// with its host without the trailing dot, then " with=" and the host's address of the other
// family if it has one, then " released=" and the time it went away (RFC 3339, UTC, to the
// second) once it did: "httpbin.bar.global with=100::7 released=2026-11-22T06:00:00Z".
func encodeShards(m map[string]allocation) [shardCount]map[string]string {
	var out [shardCount]map[string]string
	for i := range out {
		out[i] = map[string]string{}
	}
	owner := make(map[netip.Addr]string, 2*len(m))
	for h, al := range m {
		released := ""
		if !al.Released.IsZero() {
			released = " released=" + al.Released.UTC().Format(time.RFC3339)
		}
		for _, pair := range [2][2]netip.Addr{{al.V4, al.V6}, {al.V6, al.V4}} {
			a, partner := pair[0], pair[1]
			if !a.IsValid() {
				continue
			}
			if other, taken := owner[a]; taken && !ownsBefore(h, al, other, m[other]) {
				continue
			}
			owner[a] = h
			v := strings.TrimSuffix(h, ".")
			if partner.IsValid() {
				v += " with=" + partner.String()
			}
			out[shardOf(a)][addressKey(a)] = v + released
		}
	}
	return out
}

// ownsBefore decides which of two hosts holding one address keeps it, the same whatever the
// order (only a hand-edited or legacy ConfigMap holds such pairs): the live one, else the
// lower name. The other loses that address and gets another.
func ownsBefore(h string, al allocation, other string, oal allocation) bool {
	if al.Released.IsZero() != oal.Released.IsZero() {
		return al.Released.IsZero()
	}
	return h < other
}

// decodeShard reads the data of shard i, in key order.
func decodeShard(i int, data map[string]string) decodedShard {
	var d decodedShard
	for _, key := range slices.Sorted(maps.Keys(data)) {
		r, err := decodeRecord(i, key, data[key])
		switch {
		case err == nil:
			d.records = append(d.records, r)
			continue
		case r.addr.IsValid():
			d.held = append(d.held, r.addr)
		}
		d.corrupt = append(d.corrupt, key)
		d.errs = append(d.errs, fmt.Errorf("allocation %q: %v", key, err))
	}
	return d
}

// decodeRecord reads one entry of shard i. When only the value is wrong, the address is
// returned with the error.
func decodeRecord(i int, key, value string) (record, error) {
	var r record
	a, err := netip.ParseAddr(strings.ReplaceAll(key, "-", ":"))
	switch {
	case err != nil || a.Zone() != "" || a.Is4In6():
		return r, fmt.Errorf("the key is not an address")
	case addressKey(a) != key:
		return r, fmt.Errorf("the key is not the canonical form of %s, %s", a, addressKey(a))
	}
	r.addr = a
	if s := shardOf(a); s != i {
		return r, fmt.Errorf("the address belongs in shard %02d", s)
	}
	fields := strings.Split(value, " ")
	name := fields[0]
	for _, f := range fields[1:] {
		switch k, v, _ := strings.Cut(f, "="); {
		case k == "with" && !r.partner.IsValid():
			p, err := netip.ParseAddr(v)
			if err != nil || p.Zone() != "" || p.Is4In6() || p.Is4() == a.Is4() {
				return r, fmt.Errorf("with=%q is not an address of the other family", v)
			}
			r.partner = p
		case k == "released" && r.released.IsZero():
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return r, fmt.Errorf("released=%q is not an RFC 3339 time", v)
			}
			r.released = t.UTC()
		default:
			return r, fmt.Errorf("%q after the host is not one with= or released=", f)
		}
	}
	host, err := hostname.Canonical(name)
	switch {
	case err != nil:
		return r, fmt.Errorf("the value is not a host: %v", err)
	case host != name+".":
		return r, fmt.Errorf("the value is not a canonical host (%s)", strings.TrimSuffix(host, "."))
	case strings.HasPrefix(host, "*."):
		return r, fmt.Errorf("the value is a wildcard, which never gets a VIP")
	}
	r.host = host
	return r, nil
}

// merged is what the shards hold together.
type merged struct {
	hosts map[string]allocation
	// incomplete are the live hosts with a record naming a partner that is not there: the
	// leader writes a host's shards one after the other. A new host is not served until the
	// rest is there: it must not answer NODATA for a family it is about to get, as resolvers
	// would cache that.
	incomplete map[string]bool
	held       []netip.Addr
	legacyHeld []netip.Addr // held by entries of the legacy ConfigMap that do not decode
	errs       []error
}

// addLegacy adds what the legacy ConfigMap (not migrated yet) holds: a host the shards do not
// hold, and a family a host the shards hold lacks (the leader writes the shards one after the
// other while migrating), unless the shards hold that address for another host.
func (m *merged) addLegacy(legacy map[string]allocation) {
	inShards := make(map[netip.Addr]bool, 2*len(m.hosts))
	for _, al := range m.hosts {
		inShards[al.V4], inShards[al.V6] = true, true
	}
	for h, old := range legacy {
		al, ok := m.hosts[h]
		if !ok {
			m.hosts[h] = old
			continue
		}
		if !al.V4.IsValid() && old.V4.IsValid() && !inShards[old.V4] {
			al.V4 = old.V4
		}
		if !al.V6.IsValid() && old.V6.IsValid() && !inShards[old.V6] {
			al.V6 = old.V6
		}
		if al.V4.IsValid() && al.V6.IsValid() {
			delete(m.incomplete, h)
		}
		m.hosts[h] = al
	}
}

// mergeShards is every host's allocation from the decoded shards. A host holds at most one
// address per family; only two leaders at once (a stale one finishing a write) can leave it two,
// in different shards. Then the live one wins over a released one, and the lower address over
// the higher, the same on every replica; the loser is dropped at the next write.
func mergeShards(shards []decodedShard) merged {
	n := 0
	for _, d := range shards {
		n += len(d.records)
	}
	chosen := make(map[string]*[2]record, n/2+1) // host → its v4 and v6 records
	var out merged
	for _, d := range shards {
		out.held = append(out.held, d.held...)
		out.errs = append(out.errs, d.errs...)
		for _, r := range d.records {
			c := chosen[r.host]
			if c == nil {
				c = new([2]record)
				chosen[r.host] = c
			}
			slot := &c[0]
			if r.addr.Is6() {
				slot = &c[1]
			}
			if !slot.addr.IsValid() || preferred(r, *slot) {
				*slot = r
			}
		}
	}
	out.hosts = make(map[string]allocation, len(chosen))
	out.incomplete = map[string]bool{}
	for h, c := range chosen {
		v4, v6 := c[0], c[1]
		al := allocation{VIPs: VIPs{V4: v4.addr, V6: v6.addr}}
		switch {
		case !v4.addr.IsValid():
			al.Released = v6.released
		case !v6.addr.IsValid():
			al.Released = v4.released
		default:
			al.Released = later(v4.released, v6.released)
		}
		if al.Released.IsZero() && (v4.partner.IsValid() && !v6.addr.IsValid() || v6.partner.IsValid() && !v4.addr.IsValid()) {
			out.incomplete[h] = true
		}
		out.hosts[h] = al
	}
	return out
}

// preferred reports whether r beats holding, the record a host has in r's family.
func preferred(r, holding record) bool {
	if r.released.IsZero() != holding.released.IsZero() {
		return r.released.IsZero()
	}
	return r.addr.Less(holding.addr)
}

// later merges the release times of one host's records: it is live if any is.
func later(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if a.After(b) {
		return a
	}
	return b
}
