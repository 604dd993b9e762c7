package istioglobal

import (
	"maps"
	"net/netip"
)

// reservation counts the addresses and ranges ServiceEntries declare, in spec or status,
// whether or not they are served here (another zone, not exported): none may become a VIP.
// Only values that overlap the autoallocate ranges are kept, as only those can ever be a
// candidate, and every value is counted, so that an entry's removal takes back exactly what it
// added.
type reservation struct {
	inPool   func(netip.Prefix) bool
	addrs    map[netip.Addr]int32
	prefixes map[netip.Prefix]int32
	lengths  [2][129]int32 // prefixes of each length, for IPv4 and IPv6
	changed  bool          // since the allocation last looked
}

// add counts value (an address, or a CIDR) d more times; other values are not addresses and
// reserve nothing.
func (r *reservation) add(value string, d int32) {
	if r.inPool == nil {
		return
	}
	if p, err := netip.ParsePrefix(value); err == nil {
		if !p.IsSingleIP() {
			p = p.Masked()
			if !r.inPool(p) {
				return
			}
			if r.prefixes == nil {
				r.prefixes = make(map[netip.Prefix]int32)
			}
			bump(r.prefixes, p, d)
			r.lengths[family(p.Addr())][p.Bits()] += d
			r.changed = true
			return
		}
		value = p.Addr().String()
	}
	a, err := netip.ParseAddr(value)
	if err != nil {
		return
	}
	a = a.Unmap().WithZone("")
	if !r.inPool(netip.PrefixFrom(a, a.BitLen())) {
		return
	}
	if r.addrs == nil {
		r.addrs = make(map[netip.Addr]int32)
	}
	bump(r.addrs, a, d)
	r.changed = true
}

// bump adds d to the count of k, forgetting k at zero.
func bump[K comparable](m map[K]int32, k K, d int32) {
	if m[k] += d; m[k] <= 0 {
		delete(m, k)
	}
}

// has reports whether a, an address of the autoallocate ranges, is reserved.
func (r *reservation) has(a netip.Addr) bool {
	if r.addrs[a] > 0 {
		return true
	}
	for bits, n := range r.lengths[family(a)] {
		if n > 0 {
			if p, err := a.Prefix(bits); err == nil && r.prefixes[p] > 0 {
				return true
			}
		}
	}
	return false
}

// snapshot is a copy that later changes to r do not touch, for a reader on another goroutine.
func (r *reservation) snapshot() *reservation {
	return &reservation{inPool: r.inPool, lengths: r.lengths, addrs: maps.Clone(r.addrs), prefixes: maps.Clone(r.prefixes)}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}
