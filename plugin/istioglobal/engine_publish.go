package istioglobal

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/hostname"
	"github.com/miekg/dns"
)

// finish publishes a derived host: its node, VIPs, SRV names, its place among the holders of
// its addresses, and its problems.
func (e *engine) finish(h *hostState) {
	d := e.drafts[h]
	old, next := h.info, d.info
	if next != nil && h.vip != nil {
		for i, a := range [2]netip.Addr{h.vip.vips.V4, h.vip.vips.V6} {
			if a.IsValid() {
				next.addrs = append(next.addrs, a)
				next.origins = append(next.origins, fromAllocation)
				e.stats.allocated[i]++
			}
		}
		next.pending = h.vip.pending
	}
	if old != nil {
		for i, a := range old.addrs {
			if old.origins[i] == fromAllocation {
				e.stats.allocated[family(a)]--
			}
		}
	}

	key := h.key
	if next != nil {
		key = e.keyOf(h)
	}
	e.place(h, old, next, key)
	h.key = key

	switch {
	case old == nil && next != nil:
		e.ref(h.name, h.zone, 1)
	case old != nil && next == nil:
		e.edit(h.name, h.zone).setHost(nil)
		e.ref(h.name, h.zone, -1)
	}
	if next != nil {
		e.edit(h.name, h.zone).setHost(next)
	}
	e.capped(old, -1)
	e.capped(next, 1)
	tooLong := e.publishSRV(h, old, next)
	h.info = next

	var problems []Problem
	if next != nil {
		if d.dropped > 0 {
			problems = append(problems, Problem{kindAddress, reasonTooMany, entryNames(next),
				fmt.Sprintf("%d of %d addresses of %s (limit %d per family)", d.dropped, len(next.addrs)+d.dropped, h.name, maxAddressesPerHost)})
		}
		if tooLong > 0 {
			problems = append(problems, Problem{kindPort, reasonInvalidHost, entryNames(next),
				fmt.Sprintf("%d SRV names for ports of %s: longer than a DNS name can be", tooLong, h.name)})
		}
		if c := next.conflict; c != nil {
			problems = append(problems, Problem{kindHost, reasonScopeConflict, recNames(d.shadowed),
				fmt.Sprintf("%s: declared with other addresses than the entries exported to %s, whose addresses are answered", h.name, c.answered)})
		}
		if h.vip != nil && h.vip.overdue {
			problems = append(problems, Problem{kindAddress, reasonNoVIP, entryNames(next),
				fmt.Sprintf("no VIP for %s after %v: the allocations ConfigMap holds none (see the allocation metrics); answering NODATA until it does", h.name, pendingLimit)})
		}
		if h.vip != nil && h.vip.full {
			problems = append(problems, Problem{kindAddress, reasonExhausted, entryNames(next),
				fmt.Sprintf("no VIP for %s: the autoallocate ranges are full", h.name)})
		}
	}
	e.problems.replace(&h.problems, problems)
	if next == nil {
		delete(e.hosts, h.name)
		delete(e.wants, h)
	}
}

// place moves h among the holders of its addresses: out of old's (where it stood at h.key),
// into next's at key. The lists change once per commit, in settleAddress.
func (e *engine) place(h *hostState, old, next *hostInfo, key hostKey) {
	var before, after []netip.Addr
	if old != nil {
		before = old.addrs
	}
	if next != nil {
		after = next.addrs
	}
	moved := key != h.key
	gone, come := setOf(before), setOf(after)
	for _, a := range before {
		if _, kept := come[a]; moved || !kept {
			c := e.holderChanges(a)
			c.leave = append(c.leave, h)
		}
	}
	for _, a := range after {
		if _, had := gone[a]; moved || !had {
			c := e.holderChanges(a)
			c.join = append(c.join, h)
		}
	}
}

// holderChanges are the hosts that leave and join the holders of one address in a commit.
type holderChanges struct{ leave, join []*hostState }

func (e *engine) holderChanges(a netip.Addr) *holderChanges {
	c := e.addrOps[a]
	if c == nil {
		c = &holderChanges{}
		e.addrOps[a] = c
	}
	return c
}

func setOf[T comparable](values []T) map[T]struct{} {
	m := make(map[T]struct{}, len(values))
	for _, v := range values {
		m[v] = struct{}{}
	}
	return m
}

// publishSRV gives each named port of the host its _NAME._tcp.HOST (or _udp) record, pointing
// at the host, whose addresses ride along in the additional section; it takes back the names
// of old's ports that are gone. It returns how many names would be longer than a DNS name can
// be.
func (e *engine) publishSRV(h *hostState, old, next *hostInfo) (tooLong int) {
	before, _ := srvSets(h, old)
	after, tooLong := srvSets(h, next)
	for _, s := range before {
		if !slices.ContainsFunc(after, func(x namedSRV) bool { return x.name == s.name }) {
			e.edit(s.name, h.zone).srv = nil
			e.ref(s.name, h.zone, -1)
		}
	}
	for _, s := range after {
		if !slices.ContainsFunc(before, func(x namedSRV) bool { return x.name == s.name }) {
			e.ref(s.name, h.zone, 1)
		}
		e.edit(s.name, h.zone).srv = s.set
	}
	return tooLong
}

type namedSRV struct {
	name string
	set  *srvSet
}

// srvSets are the SRV names of a host's ports and their records. A wildcard has no name to put
// them under.
func srvSets(h *hostState, info *hostInfo) (sets []namedSRV, tooLong int) {
	if info == nil || h.wildcard {
		return nil, 0
	}
	for _, p := range info.ports {
		label := "_" + strings.ToLower(p.Name)
		if hostname.CheckLabel(label) != nil || p.Number == 0 || p.Number > 65535 {
			continue // Istio validates both; a file may not have
		}
		proto := "._tcp."
		if strings.EqualFold(p.Protocol, "UDP") {
			proto = "._udp."
		}
		name := label + proto + h.name
		if _, ok := dns.IsDomainName(name); !ok {
			tooLong++
			continue
		}
		i := slices.IndexFunc(sets, func(x namedSRV) bool { return x.name == name })
		if i < 0 {
			i = len(sets)
			sets = append(sets, namedSRV{name: name, set: &srvSet{target: info}})
		}
		sets[i].set.ports = append(sets[i].set.ports, uint16(p.Number))
	}
	return sets, tooLong
}

// settleAddress applies a commit's changes to the holders of an address, in host order, and
// republishes what depends on them: its reverse name and the conflicts its holders' facts list.
func (e *engine) settleAddress(a netip.Addr, c *holderChanges) {
	hs := e.holders[a]
	if len(c.leave) > 0 {
		leave := setOf(c.leave)
		kept := hs[:0]
		for _, h := range hs {
			if _, ok := leave[h]; !ok {
				kept = append(kept, h)
			}
		}
		hs = kept
	}
	slices.SortFunc(c.join, func(x, y *hostState) int { return compareKeys(x.key, y.key) })
	hs = merge(hs, c.join, func(x, y *hostState) int { return compareKeys(x.key, y.key) })
	if len(hs) == 0 {
		delete(e.holders, a)
	} else {
		e.holders[a] = hs
	}
	old, _ := e.conflicts.get(a)
	var next *holderList
	if len(hs) > 1 {
		next = &holderList{count: len(hs)}
		for _, h := range hs[:min(len(hs), maxFactsPerKind+1)] {
			next.names = append(next.names, h.name)
		}
		e.conflicts.set(a, next)
	} else {
		e.conflicts.delete(a)
	}
	if old != nil || next != nil {
		e.conflictsChanged = true
	}
	e.stats.capped[cappedTXT] += b2i(conflictsCapped(next)) - b2i(conflictsCapped(old))

	if !e.reverse {
		return
	}
	rev, err := dns.ReverseAddr(a.String())
	if err != nil {
		return
	}
	zi, ok := e.zoneOf(rev)
	if !ok {
		return
	}
	var ptr *holderList
	for _, h := range hs {
		if h.wildcard {
			continue
		}
		if ptr == nil {
			ptr = &holderList{}
		}
		if ptr.count < maxPTRPerAddress {
			ptr.names = append(ptr.names, h.name)
		}
		ptr.count++
	}
	var was *holderList
	if n, ok := e.names.get(rev); ok {
		was = n.ptr
	}
	e.stats.capped[cappedPTR] += b2i(ptrCapped(ptr)) - b2i(ptrCapped(was))
	switch {
	case was == nil && ptr == nil:
		return
	case was == nil:
		e.ref(rev, zi, 1)
	case ptr == nil:
		e.edit(rev, zi).ptr = nil
		e.ref(rev, zi, -1)
		return
	}
	e.edit(rev, zi).ptr = ptr
}

func ptrCapped(l *holderList) bool       { return l != nil && l.count > maxPTRPerAddress }
func conflictsCapped(l *holderList) bool { return l != nil && l.count-1 > maxFactsPerKind }

// capped counts (d = 1) or takes back (d = -1) what a host's answers leave out.
func (e *engine) capped(h *hostInfo, d int) {
	if h == nil {
		return
	}
	if h.morePort > 0 {
		e.stats.capped[cappedSRV] += d
	}
	if h.nEntries > maxFactsPerKind || len(h.addrs) > maxFactsPerKind || h.morePort > 0 || h.conflict != nil && h.conflict.n > maxFactsPerKind {
		e.stats.capped[cappedTXT] += d
	}
}

// linkWildcards points the parent of every wildcard the generation changed at its node.
func (e *engine) linkWildcards() {
	for _, c := range e.changed {
		parent, ok := strings.CutPrefix(c.name, "*.")
		if !ok {
			continue
		}
		child, _ := e.names.get(c.name)
		if child != nil && child.host == nil {
			child = nil // an ENT under a wildcard is no source of synthesis
		}
		if p, ok := e.names.get(parent); ok && p.wildcard != child {
			e.edit(parent, p.zone).wildcard = child
		}
	}
}

// edit returns the node of name that this generation may change: a copy of the published one,
// or a new one (an ENT until given more).
func (e *engine) edit(name string, zone uint8) *node {
	n, ok := e.names.get(name)
	if ok && n.gen == e.gen {
		return n
	}
	cp := &node{zone: zone}
	if ok {
		*cp = *n
	}
	cp.gen = e.gen
	e.names.set(name, cp)
	e.changed = append(e.changed, nameChange{name: name, old: n})
	return cp
}

// ref counts a name that is more than an ENT (d = 1), or takes it back (d = -1), on the name
// and every ancestor below the apex: a name exists while its count is positive.
func (e *engine) ref(name string, zone uint8, d int32) {
	apex := e.cfg.zones[zone]
	for off := 0; ; {
		sub := name[off:]
		if sub == apex {
			return
		}
		n := e.edit(sub, zone)
		if n.refs += d; n.refs <= 0 {
			e.names.delete(sub)
		}
		next, end := dns.NextLabel(name, off)
		if end {
			return
		}
		off = next
	}
}

// publish freezes the generation built so far.
func (e *engine) publish(serial uint32) *Table {
	t := &Table{
		names:     e.names.publish(),
		conflicts: e.conflicts.publish(),
		glue:      e.glue,
		ttl:       e.cfg.ttl,
		serial:    serial,
	}
	for _, z := range e.cfg.zones {
		t.zones = append(t.zones, newZone(z, e.cfg.ttl, serial, e.cfg.ns.name))
	}
	if e.published {
		e.journal.add(e.serial, serial, e.changed)
	}
	t.journal = e.journal
	e.published, e.serial = true, serial
	e.changed = nil
	e.conflictsChanged = false
	e.gen++
	return t
}

// keyOf is where h belongs in host order now.
func (e *engine) keyOf(h *hostState) hostKey {
	first := h.holders[0]
	return hostKey{rec: first, idx: e.indexOf(first, h)}
}

func compareKeys(a, b hostKey) int {
	if a.rec == b.rec {
		return cmp.Compare(a.idx, b.idx)
	}
	return cmp.Or(compareRecs(a.rec, b.rec), cmp.Compare(a.idx, b.idx))
}

// compareRecs is entry order, made total: entries of one namespace/name sort by source, and
// in their source's order.
func compareRecs(a, b *entryRec) int {
	return cmp.Or(compareEntryPtrs(a.e, b.e), cmp.Compare(a.id.source, b.id.source), cmp.Compare(a.id.dup, b.id.dup))
}

// zoneOf returns the most specific zone that contains name (either case).
func (e *engine) zoneOf(name string) (uint8, bool) {
	best := -1
	for i, z := range e.cfg.zones {
		if inZone(name, z) && (best < 0 || len(z) > len(e.cfg.zones[best])) {
			best = i
		}
	}
	return uint8(max(best, 0)), best >= 0
}

// parseAddresses appends the single addresses among raw (IPs and /32 or /128 CIDRs) to out and
// a problem for every other value to problems.
func parseAddresses(key, field string, raw []string, problems []Problem) (out []netip.Addr, _ []Problem) {
	for _, s := range raw {
		a, reason, err := parseAddress(s)
		if err != nil {
			problems = append(problems, Problem{kindAddress, reason, key, fmt.Sprintf("%s %q: %v", field, s, err)})
			continue
		}
		out = append(out, a)
	}
	return out, problems
}

// parseAddress accepts an IPv4 or IPv6 address, or a CIDR of exactly one address. On error
// it also returns the reason the value is skipped.
func parseAddress(s string) (netip.Addr, string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			return netip.Addr{}, reasonInvalid, fmt.Errorf("not an IP address or CIDR")
		}
		if !p.IsSingleIP() {
			return netip.Addr{}, reasonCIDR, fmt.Errorf("a range, not one address")
		}
		a = p.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}, reasonInvalid, fmt.Errorf("has an IPv6 zone")
	}
	a = a.Unmap()
	if a.IsUnspecified() {
		return netip.Addr{}, reasonUnspecified, fmt.Errorf("the unspecified address")
	}
	return a, "", nil
}

// entryNames names the entries of a host's problem: the first few, and how many more.
func entryNames(h *hostInfo) string { return namesAndMore(h.entries, h.nEntries) }

// recNames names the entries of a problem: the first few, and how many more.
func recNames(recs []*entryRec) string {
	names := make([]string, 0, min(len(recs), maxEntriesNamed))
	for _, r := range recs[:min(len(recs), maxEntriesNamed)] {
		names = append(names, r.id.key)
	}
	return namesAndMore(names, len(recs))
}

// namesAndMore joins the first names of n, and says how many more there are.
func namesAndMore(names []string, n int) string {
	if n <= maxEntriesNamed {
		return strings.Join(names, ",")
	}
	return strings.Join(names[:maxEntriesNamed], ",") + " and " + strconv.Itoa(n-maxEntriesNamed) + " more"
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
