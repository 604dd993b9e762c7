// Package vip hands out VIPs to hosts that declare no address: deterministically from a hash
// of the name (every replica computes the same), or persisted in a ConfigMap written by the
// holder of a Lease, so that a live VIP never moves.
package vip

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/hostname"
)

// DefaultRanges are the VIP ranges used when none are configured. Istio's own
// allocators take 240.240.0.0/16 and 2001:2::/48; ours must never overlap them, or a VIP of ours
// could equal one Istio hands out. 240.241.0.0/16 is the next /16 of the same class E space
// (reserved, never routed); 100::/64 is the IPv6 discard-only prefix (RFC 6666): never routed,
// so a packet that escaped the sidecar would be dropped, not delivered somewhere else.
var DefaultRanges = []netip.Prefix{
	netip.MustParsePrefix("240.241.0.0/16"),
	netip.MustParsePrefix("100::/64"),
}

// VIPs are the addresses allocated to one host: at most one per family (zero Addr = none).
type VIPs struct{ V4, V6 netip.Addr }

// allocation is one host's VIPs as persisted; Released is when the host went away (zero while
// it lives).
type allocation struct {
	VIPs
	Released time.Time
}

// Allocator hands out VIPs from the configured ranges. It is pure: no I/O, no state between
// calls, so every replica computes the same answer from the same input.
type Allocator struct {
	v4, v6 pool
	grace  time.Duration // how long a released allocation keeps its addresses from others
}

// pool is one family's ranges read as a single sequence of usable addresses: each range in the
// order configured, from its second address up. IPv4 skips the network and broadcast addresses,
// IPv6 the subnet-router anycast address (the first).
type pool struct {
	ranges []netip.Prefix
	sizes  []uint64 // usable addresses of each range, saturating
	total  uint64   // saturating: a family uses at most 2^64-1 addresses, ranges beyond are never reached
}

// probeSlack bounds a probe beyond the addresses the allocations themselves can block: only a
// reserved CIDR (a range in some spec.addresses) can block more, and it may cover the whole pool.
const probeSlack = 1 << 16

// New validates ranges (any number of IPv4 and IPv6 prefixes; a family with none is
// off) and grace.
func New(ranges []netip.Prefix, grace time.Duration) (*Allocator, error) {
	if grace < 0 {
		return nil, fmt.Errorf("grace %v is negative", grace)
	}
	a := &Allocator{grace: grace}
	for i, r := range ranges {
		switch {
		case !r.IsValid():
			return nil, fmt.Errorf("range #%d is not a valid prefix", i+1)
		case r.Addr().Is4In6():
			return nil, fmt.Errorf("range %s: an IPv4-mapped IPv6 range, write it as IPv4", r)
		case r != r.Masked():
			return nil, fmt.Errorf("range %s: host bits are set, the range is %s", r, r.Masked())
		case r.Addr().Is4() && r.Bits() > 30:
			return nil, fmt.Errorf("range %s: too small, an IPv4 range is at most /30", r)
		case r.Addr().Is6() && r.Bits() > 126:
			return nil, fmt.Errorf("range %s: too small, an IPv6 range is at most /126", r)
		}
		for _, q := range ranges[:i] {
			if q.Overlaps(r) {
				return nil, fmt.Errorf("range %s overlaps range %s", r, q)
			}
		}
		if r.Addr().Is4() {
			a.v4.add(r)
		} else {
			a.v6.add(r)
		}
	}
	return a, nil
}

// Capacity returns how many addresses each family can hand out (saturating); the free metric
// is this minus the VIPs served.
func (a *Allocator) Capacity() (v4, v6 uint64) { return a.v4.total, a.v6.total }

// Deterministic gives each host (in priority order: oldest entry first, then namespace/name)
// one VIP per configured family, never an address reserved reports, never one address to two
// hosts; hosts left without an address in some family are returned in exhausted.
//
// A host's candidates start at the FNV-1a 64 hash of its name (canonical, with the trailing
// dot) modulo the family's size and probe linearly, wrapping, across the family's ranges in
// order. The hash and the probe order are the contract between replicas and across upgrades:
// changing either renumbers every VIP.
//
// Consequence: a host's VIP depends only on its name and on what is taken along its probe
// before it, so it keeps its VIP whatever other hosts come and go, except when it collided.
// When an address it probed past frees up (its host was deleted, or moved back itself, or the
// address is no longer reserved) it moves back to it, and a host ahead of it in priority order
// that comes to probe onto its address takes it. New ServiceEntries sort last, so adding entries
// never moves a VIP. The persisted mode (next) removes these exceptions.
func (a *Allocator) Deterministic(hosts []string, reserved Reserved) (vips map[string]VIPs, exhausted []string) {
	// Defined through next, so the persisted mode picks exactly what this mode would.
	next, exhausted, _ := a.next(nil, hosts, reserved, time.Time{})
	vips = make(map[string]VIPs, len(next))
	for h, al := range next {
		vips[h] = al.VIPs
	}
	return vips, exhausted
}

// next is the persisted mode's state transition from current (what the ConfigMap holds) for
// the live hosts (in priority order), at now. It never mutates current.
//
//   - A live host keeps its allocation, always, even when an address of it has become reserved
//     since: such hosts are returned in conflicts (as are live hosts sharing an address, which
//     only a hand-edited ConfigMap can hold). Moving a live VIP would break its clients.
//   - A host that went away is marked released at now; a released allocation older than grace
//     is dropped. Until then its addresses go to no one else, but its host, if it comes back,
//     gets them back.
//   - New hosts, and live ones missing a configured family (a range was added), get addresses as
//     deterministic picks them, with every address held in current and every reserved one taken.
//   - An address outside the ranges now configured, or of a family no longer configured, is kept
//     while its host lives: removing a range renumbers no one. To renumber, delete the host's
//     ConfigMap entry.
//
// exhausted lists the hosts left without an address in some configured family.
func (a *Allocator) next(current map[string]allocation, hosts []string, reserved Reserved, now time.Time) (next map[string]allocation, exhausted, conflicts []string) {
	live := make(map[string]bool, len(hosts))
	order := make([]string, 0, len(hosts))
	for _, h := range hosts {
		if !live[h] {
			live[h] = true
			order = append(order, h)
		}
	}

	next = make(map[string]allocation, max(len(current), len(order)))
	taken := make(map[netip.Addr]string, 2*len(current))
	conflict := make(map[string]bool)
	for h, al := range current {
		switch {
		case live[h]:
			al.Released = time.Time{}
		case al.Released.IsZero():
			al.Released = now
		case now.Sub(al.Released) > a.grace:
			continue
		}
		next[h] = al
		for _, x := range [2]netip.Addr{al.V4, al.V6} {
			if !x.IsValid() {
				continue
			}
			other, dup := taken[x]
			if dup && live[other] {
				conflict[other] = true
			}
			if live[h] && (dup || reserved(x) > 0) {
				conflict[h] = true
			}
			taken[x] = h
		}
	}

	var need4, need6 []string
	for _, h := range order {
		al := next[h]
		if !al.V4.IsValid() {
			need4 = append(need4, h)
		}
		if !al.V6.IsValid() {
			need6 = append(need6, h)
		}
	}
	short := make(map[string]bool)
	for _, h := range a.v4.claim(need4, taken, reserved, func(h string, x netip.Addr) {
		al := next[h]
		al.V4 = x
		next[h] = al
	}) {
		short[h] = true
	}
	for _, h := range a.v6.claim(need6, taken, reserved, func(h string, x netip.Addr) {
		al := next[h]
		al.V6 = x
		next[h] = al
	}) {
		short[h] = true
	}
	for _, h := range order {
		if short[h] {
			exhausted = append(exhausted, h)
		}
	}
	conflicts = slices.Sorted(maps.Keys(conflict))
	return next, exhausted, conflicts
}

// Reserved says which addresses may never be handed out (ServiceEntries declare them): for an
// address, how many addresses from it on are reserved without a gap (0: it is free; 1: a single
// reserved address; inside a reserved range, the addresses up to its end), so that a probe
// passes a reserved range of any size in one step.
type Reserved func(netip.Addr) uint64

// Through is the number of addresses from a through the last address of p (a in p), at most
// math.MaxUint64.
func Through(a netip.Addr, p netip.Prefix) uint64 {
	last := lastOf(p)
	if a.Is4() {
		x, y := a.As4(), last.As4()
		return uint64(binary.BigEndian.Uint32(y[:])-binary.BigEndian.Uint32(x[:])) + 1
	}
	x, y := a.As16(), last.As16()
	lo, borrow := bits.Sub64(binary.BigEndian.Uint64(y[8:]), binary.BigEndian.Uint64(x[8:]), 0)
	hi, _ := bits.Sub64(binary.BigEndian.Uint64(y[:8]), binary.BigEndian.Uint64(x[:8]), borrow)
	if hi > 0 || lo == math.MaxUint64 {
		return math.MaxUint64
	}
	return lo + 1
}

// lastOf is the last address of p.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		if bitsLeft := p.Bits() - 8*i; bitsLeft < 8 {
			b[i] |= byte(0xff >> max(0, bitsLeft))
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// claim gives each host in turn the first address along its probe sequence that is neither
// taken nor reserved, records it in taken and reports it to got. It returns the hosts left
// without one; a pool with no range claims nothing and leaves no one short. A reserved range
// costs the probe one step, whatever its size (a ServiceEntry declaring fd00::/65 in a pool of
// fd00::/64 leaves the other half to the hosts that hash into the first). The pool is called
// full, and the hosts after one that found nothing short without a search, only when that
// host's probe went round the whole pool.
func (p *pool) claim(hosts []string, taken map[netip.Addr]string, reserved Reserved, got func(string, netip.Addr)) (short []string) {
	if p.total == 0 {
		return nil
	}
	limit := min(p.total, uint64(len(taken))+uint64(len(hosts))+probeSlack)
	full := false
	for _, h := range hosts {
		var x netip.Addr
		i, passed := hostHash(h)%p.total, uint64(0)
		for k := uint64(0); k < limit && !full; k++ {
			c := p.at(i)
			step := uint64(1)
			if _, t := taken[c]; !t {
				if step = reserved(c); step == 0 {
					x = c
					break
				}
				step = min(step, p.remaining(i), p.total-i) // total saturates at 2^64-1
			}
			if sum, carry := bits.Add64(passed, step, 0); carry != 0 || sum >= p.total {
				full = true
			} else {
				passed = sum
			}
			if i += step; i >= p.total { // step never passes the end of the pool
				i -= p.total
			}
		}
		if !x.IsValid() {
			short = append(short, h)
			continue
		}
		taken[x] = h
		got(h, x)
	}
	return short
}

// remaining is the number of addresses from the i-th of the pool to the end of its range.
func (p *pool) remaining(i uint64) uint64 {
	for _, n := range p.sizes {
		if i < n {
			return n - i
		}
		i -= n
	}
	return 1
}

func (p *pool) add(r netip.Prefix) {
	hostBits := r.Addr().BitLen() - r.Bits()
	n := uint64(math.MaxUint64)
	switch {
	case hostBits >= 64:
	case r.Addr().Is4():
		n = 1<<hostBits - 2
	default:
		n = 1<<hostBits - 1
	}
	p.ranges = append(p.ranges, r)
	p.sizes = append(p.sizes, n)
	if sum, carry := bits.Add64(p.total, n, 0); carry == 0 {
		p.total = sum
	} else {
		p.total = math.MaxUint64
	}
}

// at returns the i-th usable address of the pool, i < p.total.
func (p *pool) at(i uint64) netip.Addr {
	for j, n := range p.sizes {
		if i < n {
			return offset(p.ranges[j].Addr(), i+1)
		}
		i -= n
	}
	panic(fmt.Sprintf("istioglobal: address %d beyond a pool of %d", i, p.total))
}

// offset returns a+n; n stays within a's range.
func offset(a netip.Addr, n uint64) netip.Addr {
	if a.Is4() {
		b := a.As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(n))
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	lo, carry := bits.Add64(binary.BigEndian.Uint64(b[8:]), n, 0)
	binary.BigEndian.PutUint64(b[8:], lo)
	binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])+carry)
	return netip.AddrFrom16(b)
}

// hostHash is FNV-1a 64 of the host's name.
func hostHash(host string) uint64 { return fnv1a(host) }

// fnv1a is FNV-1a 64, inline so that it does not allocate.
func fnv1a[T ~string | ~[]byte](s T) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// decodeLegacy reads the format of versions that kept every allocation in one ConfigMap: one key
// per host, without the trailing dot (httpbin.bar.global), valued "240.241.0.7,100::7",
// "240.241.0.7" or ",100::7", followed by " released=2026-11-22T06:00:00Z" once the host went
// away. A corrupt entry is left out of m and reported in errs, and every address still readable
// in its value is returned in held.
func decodeLegacy(data map[string]string) (m map[string]allocation, held []netip.Addr, errs []error) {
	m = make(map[string]allocation, len(data))
	for _, key := range slices.Sorted(maps.Keys(data)) {
		host, al, err := decodeAllocation(key, data[key])
		if err != nil {
			errs = append(errs, fmt.Errorf("allocation %q: %v", key, err))
			held = append(held, addressesIn(data[key])...)
			continue
		}
		m[host] = al
	}
	return m, held, errs
}

func decodeAllocation(key, value string) (string, allocation, error) {
	var al allocation
	host, err := hostname.Canonical(key)
	switch {
	case err != nil:
		return "", al, fmt.Errorf("the key is not a host: %v", err)
	case host != key+".":
		return "", al, fmt.Errorf("the key is not a canonical host (%s)", strings.TrimSuffix(host, "."))
	case strings.HasPrefix(host, "*."):
		return "", al, fmt.Errorf("the key is a wildcard, which never gets a VIP")
	}
	addrs, released, ok := strings.Cut(value, " released=")
	if ok {
		t, err := time.Parse(time.RFC3339, released)
		if err != nil {
			return "", al, fmt.Errorf("released %q is not an RFC 3339 time", released)
		}
		al.Released = t.UTC()
	}
	v4, v6, _ := strings.Cut(addrs, ",")
	if v4 != "" {
		x, err := netip.ParseAddr(v4)
		if err != nil || !x.Is4() {
			return "", al, fmt.Errorf("%q is not an IPv4 address", v4)
		}
		al.V4 = x
	}
	if v6 != "" {
		x, err := netip.ParseAddr(v6)
		if err != nil || !x.Is6() || x.Is4In6() || x.Zone() != "" {
			return "", al, fmt.Errorf("%q is not an IPv6 address", v6)
		}
		al.V6 = x
	}
	if !al.V4.IsValid() && !al.V6.IsValid() {
		return "", al, fmt.Errorf("value %q holds no address", value)
	}
	return host, al, nil
}

// addressesIn returns every address that can be read out of s.
func addressesIn(s string) []netip.Addr {
	var out []netip.Addr
	for _, f := range strings.FieldsFunc(s, func(r rune) bool {
		return !(r == '.' || r == ':' || '0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F')
	}) {
		if x, err := netip.ParseAddr(f); err == nil {
			out = append(out, x.Unmap())
		}
	}
	return out
}

// Overlaps reports whether p overlaps one of the ranges: only addresses there can ever be a
// VIP, so only reservations there matter.
func (a *Allocator) Overlaps(p netip.Prefix) bool {
	for _, r := range slices.Concat(a.v4.ranges, a.v6.ranges) {
		if r.Overlaps(p) {
			return true
		}
	}
	return false
}
