package istioglobal

import (
	"errors"
	"slices"

	"github.com/coredns/coredns/plugin/transfer"
	"github.com/miekg/dns"
)

// transferBatch is the most records one send of a transfer carries; the transfer plugin packs
// them into messages of at most 64 KiB.
const transferBatch = 512

// What answered a transfer: the kind label of transfers.
const (
	xfrFull        = "axfr"          // an AXFR
	xfrIncremental = "ixfr"          // an IXFR answered from the journal
	xfrFallback    = "ixfr_fallback" // an IXFR for a serial the journal does not reach: the whole zone
	xfrCurrent     = "ixfr_current"  // an IXFR for the current serial (or a newer one): the SOA alone
)

var errNotSynced = errors.New("not synced yet: no table to transfer")

// Transfer implements transfer.Transferer for each zone the plugin serves, forward and reverse:
// serial 0 is an AXFR, any other an IXFR (RFC 1995) from that serial. Both send one published
// generation. The TXT records are not transferred: they describe this server's view of the
// entries, and with txt off there are none.
func (ig *IstioGlobal) Transfer(zone string, serial uint32) (<-chan []dns.RR, error) {
	zi := slices.Index(ig.Zones, zone)
	if zi < 0 {
		return nil, transfer.ErrNotAuthoritative
	}
	t := ig.table.Load()
	if t == nil {
		return nil, errNotSynced
	}
	kind, del, add := xfrFull, []dns.RR(nil), []dns.RR(nil)
	switch {
	case serial == 0:
	case serial == t.serial || serialLess(t.serial, serial):
		kind = xfrCurrent
	default:
		var ok bool
		if del, add, ok = t.difference(uint8(zi), serial); ok {
			kind = xfrIncremental
		} else {
			kind = xfrFallback
		}
	}
	transfers.WithLabelValues(kind).Inc()
	ch := make(chan []dns.RR)
	go func() {
		defer close(ch)
		soa := t.zones[zi].soa
		switch kind {
		case xfrCurrent:
			ch <- soa
		case xfrIncremental:
			// One condensed difference (RFC 1995 section 5): the new SOA, the old SOA, what
			// goes, the new SOA, what comes, the new SOA.
			old := *soa[0].(*dns.SOA)
			old.Serial = serial
			ch <- []dns.RR{soa[0], &old}
			sendBatched(ch, del)
			ch <- soa
			sendBatched(ch, add)
			ch <- soa
		default:
			t.axfr(uint8(zi), ch)
		}
	}()
	return ch, nil
}

// axfr sends zone zi: its SOA, its NS, every name's records, and the SOA again.
func (t *Table) axfr(zi uint8, ch chan<- []dns.RR) {
	z := t.zones[zi]
	ch <- z.soa
	ch <- z.ns
	batch := make([]dns.RR, 0, transferBatch)
	for _, shard := range t.names.shards {
		for name, n := range shard {
			if n.zone != zi {
				continue
			}
			if batch = n.records(batch, name, t.ttl); len(batch) >= transferBatch {
				ch <- batch
				batch = make([]dns.RR, 0, transferBatch)
			}
		}
	}
	if len(batch) > 0 {
		ch <- batch
	}
	ch <- z.soa
}

// records appends what a transfer carries for the node of name: its addresses, SRV and PTR
// records. The apex's SOA and NS are the zone's; an ENT has nothing.
func (n *node) records(out []dns.RR, name string, ttl uint32) []dns.RR {
	if n == nil {
		return out
	}
	if n.host != nil {
		out = appendAddresses(out, name, n.host.addrs, true, ttl)
		out = appendAddresses(out, name, n.host.addrs, false, ttl)
	}
	out = append(out, srvRecords(name, n.srv, ttl)...)
	return append(out, ptrRecords(name, n.ptr, ttl)...)
}

// difference is what changed in zone zi since serial from, condensed into one difference: the
// records to delete and to add. ok is false when the journal does not reach back to from.
func (t *Table) difference(zi uint8, from uint32) (del, add []dns.RR, ok bool) {
	gens := t.journal.gens
	i := slices.IndexFunc(gens, func(g journalGen) bool { return g.from == from })
	if i < 0 {
		return nil, nil, false
	}
	// Each name as it was at from: its node before the first generation that changed it.
	then := map[string]*node{}
	var names []string
	for _, g := range gens[i:] {
		for _, c := range g.changes {
			if _, seen := then[c.name]; !seen {
				then[c.name] = c.old
				names = append(names, c.name)
			}
		}
	}
	for _, name := range names {
		before, after := then[name], t.node(name)
		if before != nil && before.zone != zi {
			before = nil
		}
		if after != nil && after.zone != zi {
			after = nil
		}
		d, a := diffRecords(before.records(nil, name, t.ttl), after.records(nil, name, t.ttl))
		del, add = append(del, d...), append(add, a...)
	}
	return del, add, true
}

// diffRecords returns the records of before that after lacks, and those of after that before
// lacks.
func diffRecords(before, after []dns.RR) (del, add []dns.RR) {
	if len(before) == 0 || len(after) == 0 {
		return before, after
	}
	in := func(rrs []dns.RR) map[string]bool {
		m := make(map[string]bool, len(rrs))
		for _, rr := range rrs {
			m[rr.String()] = true
		}
		return m
	}
	had, has := in(before), in(after)
	for _, rr := range before {
		if !has[rr.String()] {
			del = append(del, rr)
		}
	}
	for _, rr := range after {
		if !had[rr.String()] {
			add = append(add, rr)
		}
	}
	return del, add
}

// sendBatched sends rrs in batches of at most transferBatch.
func sendBatched(ch chan<- []dns.RR, rrs []dns.RR) {
	for len(rrs) > 0 {
		n := min(len(rrs), transferBatch)
		ch <- rrs[:n]
		rrs = rrs[n:]
	}
}
