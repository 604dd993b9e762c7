package istioglobal

import (
	"maps"
	"net/netip"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
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
	// The values counted since the last settle, and whether each was reserved before: an
	// update that takes back and adds the same value changes nothing.
	touched map[any]bool
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
			r.touch(p, r.prefixes[p] > 0)
			bump(r.prefixes, p, d)
			r.lengths[family(p.Addr())][p.Bits()] += d
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
	r.touch(a, r.addrs[a] > 0)
	bump(r.addrs, a, d)
}

func (r *reservation) touch(k any, reserved bool) {
	if r.touched == nil {
		r.touched = make(map[any]bool)
	}
	if _, ok := r.touched[k]; !ok {
		r.touched[k] = reserved
	}
}

// settle reports whether what is reserved changed since it last ran.
func (r *reservation) settle() bool {
	changed := false
	for k, was := range r.touched {
		var now bool
		switch k := k.(type) {
		case netip.Addr:
			now = r.addrs[k] > 0
		case netip.Prefix:
			now = r.prefixes[k] > 0
		}
		changed = changed || now != was
	}
	r.touched = nil
	return changed
}

// bump adds d to the count of k, forgetting k at zero.
func bump[K comparable](m map[K]int32, k K, d int32) {
	if m[k] += d; m[k] <= 0 {
		delete(m, k)
	}
}

// run is vip.Reserved: how many addresses from a (an address of the autoallocate ranges) on
// are reserved without a gap: through the end of the widest reserved range holding a, 1 for a
// reserved address, 0 when a is free.
func (r *reservation) run(a netip.Addr) uint64 {
	for bits, n := range r.lengths[family(a)] {
		if n > 0 {
			if p, err := a.Prefix(bits); err == nil && r.prefixes[p] > 0 {
				return vip.Through(a, p)
			}
		}
	}
	if r.addrs[a] > 0 {
		return 1
	}
	return 0
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
