package istioglobal

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/coredns/coredns/plugin/transfer"
	"github.com/miekg/dns"
)

var transferZones = []string{"global.", "in-addr.arpa.", "ip6.arpa."}

// drain reads a transfer to its end.
func drain(t *testing.T, ig *IstioGlobal, zone string, serial uint32) []dns.RR {
	t.Helper()
	ch, err := ig.Transfer(zone, serial)
	if err != nil {
		t.Fatalf("Transfer(%s, %d): %v", zone, serial, err)
	}
	var out []dns.RR
	for rrs := range ch {
		out = append(out, rrs...)
	}
	return out
}

// zoneRecords checks that rrs is an AXFR of zone at serial (SOA first and last, the NS after the
// first) and returns the records between the SOAs, sorted, as text.
func zoneRecords(t *testing.T, rrs []dns.RR, zone string, serial uint32) []string {
	t.Helper()
	if len(rrs) < 3 {
		t.Fatalf("AXFR of %s: %d records", zone, len(rrs))
	}
	first, ok1 := rrs[0].(*dns.SOA)
	last, ok2 := rrs[len(rrs)-1].(*dns.SOA)
	if !ok1 || !ok2 || first.Serial != serial || last.Serial != serial || first.Hdr.Name != zone {
		t.Fatalf("AXFR of %s: begins with %v, ends with %v; want its SOA at serial %d", zone, rrs[0], rrs[len(rrs)-1], serial)
	}
	if ns, ok := rrs[1].(*dns.NS); !ok || ns.Hdr.Name != zone {
		t.Errorf("AXFR of %s: the second record is %v, want the zone's NS", zone, rrs[1])
	}
	return rrTexts(rrs[1 : len(rrs)-1])
}

func rrTexts(rrs []dns.RR) []string {
	out := make([]string, len(rrs))
	for i, rr := range rrs {
		out[i] = rr.String()
	}
	slices.Sort(out)
	return out
}

// queried is what the table answers, through ServeDNS, for every name it holds in zone: the
// records a transfer must carry (A, AAAA, SRV, PTR; the apex's NS).
func queried(t *testing.T, ig *IstioGlobal, zone string) []string {
	t.Helper()
	tab := ig.table.Load()
	zi := uint8(slices.Index(ig.Zones, zone))
	var out []string
	for _, shard := range tab.names.shards {
		for name, n := range shard {
			if n.zone != zi {
				continue
			}
			types := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR}
			if n.apex {
				types = []uint16{dns.TypeNS}
			}
			for _, qt := range types {
				r := serve(t, ig, name, qt)
				for _, rr := range r.Answer {
					out = append(out, rr.String())
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func serve(t *testing.T, ig *IstioGlobal, name string, qtype uint16) *dns.Msg {
	t.Helper()
	w := dnstest.NewRecorder(&test.ResponseWriter{})
	if _, err := ig.ServeDNS(t.Context(), w, new(dns.Msg).SetQuestion(name, qtype)); err != nil {
		t.Fatal(err)
	}
	return w.Msg
}

// transferEntries are the seeds with what a transfer must also carry: ports (SRV), a shared
// address (a PTR with two holders), reverse names in both families.
func transferEntries() []Entry {
	entries := slices.Clone(seeds)
	withPorts := se("foo", "ports", 8, hosts("ports.foo.global"), "240.0.0.20", "fd00:255::20")
	withPorts.Ports = []Port{{Name: "http", Number: 80, Protocol: "HTTP"}, {Name: "grpc", Number: 9000, Protocol: "GRPC"}}
	return append(entries, withPorts, se("foo", "shares", 9, hosts("shares.foo.global"), "240.0.0.20"))
}

func TestAXFREqualsTheTable(t *testing.T) {
	ig := newTestPlugin(transferEntries(), transferZones...)
	serial := ig.table.Load().serial
	for _, zone := range transferZones {
		got := zoneRecords(t, drain(t, ig, zone, 0), zone, serial)
		if want := queried(t, ig, zone); !slices.Equal(got, want) {
			t.Errorf("AXFR of %s:\n%s\nwant what the table answers:\n%s", zone, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	// Spot checks that the comparison is not of two empty lists.
	axfr := strings.Join(zoneRecords(t, drain(t, ig, "global.", 0), "global.", serial), "\n")
	for _, want := range []string{"httpbin.bar.global.\t30\tIN\tA\t127.255.0.2", "*.wild.global.\t30\tIN\tA\t240.0.0.10",
		"_http._tcp.ports.foo.global.\t30\tIN\tSRV\t0 100 80 ports.foo.global."} {
		if !strings.Contains(axfr, want) {
			t.Errorf("AXFR of global. lacks %q:\n%s", want, axfr)
		}
	}
	if reverse := strings.Join(zoneRecords(t, drain(t, ig, "in-addr.arpa.", 0), "in-addr.arpa.", serial), "\n"); !strings.Contains(reverse, "20.0.0.240.in-addr.arpa.\t30\tIN\tPTR\tshares.foo.global.") {
		t.Errorf("AXFR of in-addr.arpa. lacks the shared address's second holder:\n%s", reverse)
	}
}

func TestTransferNotAuthoritative(t *testing.T) {
	ig := newTestPlugin(seeds)
	for _, zone := range []string{"bar.global.", "example.com.", "arpa."} {
		if _, err := ig.Transfer(zone, 0); err != transfer.ErrNotAuthoritative {
			t.Errorf("Transfer(%s) = %v, want ErrNotAuthoritative", zone, err)
		}
	}
	unsynced := newIstioGlobal()
	unsynced.Zones = []string{"global."}
	if _, err := unsynced.Transfer("global.", 0); err == nil || err == transfer.ErrNotAuthoritative {
		t.Errorf("Transfer before the first sync = %v, want an error", err)
	}
}

// history publishes generations of one engine into ig, keeping each one's AXFR.
type history struct {
	t      *testing.T
	ig     *IstioGlobal
	e      *engine
	serial uint32
	axfrs  map[uint32]map[string][]string // serial → zone → records
}

func newHistory(t *testing.T, entries []Entry, first uint32) *history {
	ig := newIstioGlobal()
	ig.Zones = transferZones
	h := &history{t: t, ig: ig, serial: first - 1, axfrs: map[uint32]map[string][]string{}}
	h.e = newEngine(tableConfig{zones: transferZones, ttl: ig.ttl, ns: defaultNameServer(transferZones, nil)})
	var s snapshots
	h.e.apply(s.diff(entries))
	h.publish()
	return h
}

// next is the next serial, wrapping as RFC 1982 does, and skipping 0 as serialClock does.
func (h *history) next() uint32 {
	if h.serial++; h.serial == 0 {
		h.serial++
	}
	return h.serial
}

// publish commits the engine's changes as the next serial.
func (h *history) publish() {
	h.t.Helper()
	tab := h.e.commit(h.next)
	if tab == nil {
		return
	}
	h.ig.table.Store(tab)
	zones := map[string][]string{}
	for _, z := range transferZones {
		zones[z] = zoneRecords(h.t, drain(h.t, h.ig, z, 0), z, tab.serial)
	}
	h.axfrs[tab.serial] = zones
}

func (h *history) set(entries ...Entry) {
	var changes []change
	for i := range entries {
		changes = append(changes, change{id: entryID{key: entries[i].key()}, entry: &entries[i]})
	}
	h.e.apply(changes)
	h.publish()
}

func (h *history) remove(keys ...string) {
	var changes []change
	for _, k := range keys {
		changes = append(changes, change{id: entryID{key: k}})
	}
	h.e.apply(changes)
	h.publish()
}

// checkIXFR asks for an IXFR of every zone from serial from and checks that it is one
// condensed difference (RFC 1995) that turns from's AXFR into the current one.
func (h *history) checkIXFR(from uint32) {
	h.t.Helper()
	cur := h.ig.table.Load().serial
	for _, zone := range transferZones {
		rrs := drain(h.t, h.ig, zone, from)
		soas := []int{}
		for i, rr := range rrs {
			if _, ok := rr.(*dns.SOA); ok {
				soas = append(soas, i)
			}
		}
		serialAt := func(i int) uint32 { return rrs[i].(*dns.SOA).Serial }
		if len(soas) != 4 || soas[0] != 0 || soas[1] != 1 || soas[3] != len(rrs)-1 ||
			serialAt(0) != cur || serialAt(1) != from || serialAt(soas[2]) != cur || serialAt(soas[3]) != cur {
			h.t.Fatalf("IXFR of %s from %d to %d: SOAs at %v of %d records: %v", zone, from, cur, soas, len(rrs), rrs)
		}
		state := map[string]bool{}
		for _, r := range h.axfrs[from][zone] {
			state[r] = true
		}
		for _, r := range rrTexts(rrs[2:soas[2]]) {
			if !state[r] {
				h.t.Errorf("IXFR of %s from %d deletes %s, which it did not hold", zone, from, r)
			}
			delete(state, r)
		}
		for _, r := range rrTexts(rrs[soas[2]+1 : soas[3]]) {
			if state[r] {
				h.t.Errorf("IXFR of %s from %d adds %s, which it held", zone, from, r)
			}
			state[r] = true
		}
		got := make([]string, 0, len(state))
		for r := range state {
			got = append(got, r)
		}
		slices.Sort(got)
		if want := h.axfrs[cur][zone]; !slices.Equal(got, want) {
			h.t.Errorf("IXFR of %s from %d applied:\n%s\nwant the AXFR at %d:\n%s", zone, from, strings.Join(got, "\n"), cur, strings.Join(want, "\n"))
		}
	}
}

func TestIXFRDifferences(t *testing.T) {
	// Serials that wrap (RFC 1982): 2^32-3 up through 0 and on.
	h := newHistory(t, transferEntries(), 1<<32-3)
	start := h.serial
	created := se("foo", "new", 10, hosts("new.foo.global"), "240.0.0.30", "fd00:255::30")
	h.set(created)
	updated := created
	updated.Addresses = []string{"240.0.0.31"}
	h.set(updated)
	h.remove(seeds[0].key())                                                        // httpbin.bar.global: and the ENT bar.global.
	h.set(se("foo", "wild2", 11, hosts("*.w2.foo.global"), "240.0.0.40"))           // a wildcard
	h.set(se("foo", "shared", 12, hosts("third.foo.global"), "240.0.0.20"))         // a third holder of a shared address
	h.set(se("foo", "moved", 13, hosts("ports.foo.global"), "240.0.0.21"))          // a second entry for a host
	h.set(se("foo", "wild", 4, hosts("*.wild.global"), "240.0.0.10", "240.0.0.50")) // the wildcard grows
	if !serialLess(start, h.serial) || h.serial > 10 {
		t.Fatalf("serials went %d to %d: the test wants them to wrap", start, h.serial)
	}
	for from := range h.axfrs {
		if from != h.serial {
			h.checkIXFR(from)
		}
	}
}

// TestIXFRRandom: whatever the changes, an IXFR from any serial the journal holds leads to the
// current AXFR.
func TestIXFRRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 13))
	h := newHistory(t, nil, 100)
	for step := range 200 {
		i := rng.IntN(12)
		key := (&Entry{Namespace: "r", Name: fmt.Sprintf("e%d", i)}).key()
		if rng.IntN(4) == 0 {
			h.remove(key)
		} else {
			host := fmt.Sprintf("h%d.r.global", rng.IntN(8))
			if rng.IntN(5) == 0 {
				host = fmt.Sprintf("*.w%d.r.global", rng.IntN(3))
			}
			var addrs []string
			for range rng.IntN(3) + 1 {
				addrs = append(addrs, fmt.Sprintf("240.0.%d.%d", rng.IntN(2), rng.IntN(6)))
			}
			if rng.IntN(3) == 0 {
				addrs = append(addrs, fmt.Sprintf("fd00::%d", rng.IntN(6)))
			}
			e := se("r", fmt.Sprintf("e%d", i), i, hosts(host), addrs...)
			if rng.IntN(3) == 0 {
				e.Ports = []Port{{Name: "http", Number: uint32(80 + rng.IntN(3)), Protocol: "HTTP"}}
			}
			h.set(e)
		}
		if step%20 == 19 {
			for from := range h.axfrs {
				if from != h.serial {
					h.checkIXFR(from)
				}
			}
		}
	}
}

func TestIXFRCurrentAndNewer(t *testing.T) {
	h := newHistory(t, seeds, 1<<32-2)
	h.set(se("foo", "new", 10, hosts("new.foo.global"), "240.0.0.30"))   // serial 2^32-1
	h.set(se("foo", "new2", 11, hosts("new2.foo.global"), "240.0.0.31")) // serial 1: 0 is skipped
	cur := h.serial
	for _, serial := range []uint32{cur, cur + 1, cur + 1<<31 - 1} {
		rrs := drain(t, h.ig, "global.", serial)
		if len(rrs) != 1 || rrs[0].(*dns.SOA).Serial != cur {
			t.Errorf("IXFR from %d at %d: %v, want the SOA alone", serial, cur, rrs)
		}
	}
}

func TestIXFROlderThanTheJournal(t *testing.T) {
	h := newHistory(t, seeds, 10)
	first := h.serial
	var last *Table
	for i := range maxJournalNames {
		e := se("foo", fmt.Sprintf("e%d", i), 100+i, hosts(fmt.Sprintf("h%d.foo.global", i)), "240.0.0.1")
		h.e.apply([]change{{id: entryID{key: e.key()}, entry: &e}})
		if tab := h.e.commit(h.next); tab != nil {
			last = tab
		}
	}
	h.ig.table.Store(last)
	rrs := drain(t, h.ig, "global.", first)
	if _, ok := rrs[1].(*dns.SOA); ok {
		t.Fatalf("IXFR from %d, which the journal no longer reaches: a difference, want the whole zone", first)
	}
	if n := len(zoneRecords(t, rrs, "global.", last.serial)); n < maxJournalNames {
		t.Errorf("the AXFR fallback holds %d records, want every host's", n)
	}
	if rrs := drain(t, h.ig, "global.", last.serial-1); len(rrs) < 2 || !isSOA(rrs[1]) {
		t.Errorf("IXFR from the serial before the last: %v, want a difference", rrs[:min(len(rrs), 3)])
	}
}

func isSOA(rr dns.RR) bool {
	_, ok := rr.(*dns.SOA)
	return ok
}

// A bulk change larger than the journal is not kept: an IXFR across it is the whole zone, and
// the journal starts again after it.
func TestIXFRAcrossABulkChange(t *testing.T) {
	h := newHistory(t, seeds, 10)
	before := h.serial
	var bulk []Entry
	for i := range maxJournalNames {
		bulk = append(bulk, se("foo", fmt.Sprintf("b%d", i), 100+i, hosts(fmt.Sprintf("b%d.foo.global", i)), "240.0.1.1"))
	}
	h.set(bulk...)
	after := h.serial
	h.set(se("foo", "small", 10, hosts("small.foo.global"), "240.0.0.99"))
	if rrs := drain(t, h.ig, "global.", before); isSOA(rrs[1]) {
		t.Errorf("IXFR from %d, before the bulk change: a difference, want the whole zone", before)
	}
	h.checkIXFR(after)
}
