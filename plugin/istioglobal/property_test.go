package istioglobal

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/hostname"
	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// oracleReply answers q from an oracle table as the handler did before the engine: the
// question's spelling for owners, SOA in the authority section of negative answers.
func oracleReply(t *oTable, q dns.Question, debug bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(q.Name, q.Qtype)
	n, z, _, _ := t.find(q.Name)
	if n == nil {
		if z == nil {
			var names []string
			for _, z := range t.zones {
				names = append(names, z.name)
			}
			z = t.zones[matchZone(names, q.Name)]
		}
		m.Rcode = dns.RcodeNameError
		m.Ns = z.soa
		return m
	}
	var rrs, extra []dns.RR
	switch q.Qtype {
	case dns.TypeA:
		rrs = n.a
	case dns.TypeAAAA:
		rrs = n.aaaa
	case dns.TypeSRV:
		rrs, extra = n.srv, n.extra
	case dns.TypePTR:
		rrs = n.ptr
	case dns.TypeTXT:
		if debug {
			rrs = n.txt
		}
	case dns.TypeSOA:
		if n == n.oZone.apex {
			rrs = n.oZone.soa
		}
	case dns.TypeNS:
		if n == n.oZone.apex {
			rrs, extra = n.oZone.ns, n.extra
		}
	case dns.TypeANY:
		switch {
		case n == n.oZone.apex:
			rrs = n.oZone.soa
		case len(n.a) > 0:
			rrs = n.a
		case len(n.aaaa) > 0:
			rrs = n.aaaa
		case len(n.srv) > 0:
			rrs = n.srv
		case len(n.ptr) > 0:
			rrs = n.ptr
		case debug && !n.pending:
			rrs = n.txt
		}
	}
	if len(rrs) == 0 {
		if n.pending && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY) {
			m.Rcode = dns.RcodeServerFailure
			return m
		}
		m.Ns = n.oZone.soa
		return m
	}
	for _, rr := range rrs {
		cp := dns.Copy(rr)
		cp.Header().Name = q.Name
		m.Answer = append(m.Answer, cp)
	}
	m.Extra = extra
	return m
}

// reply is what the plugin answers q from the table it serves.
func servedReply(t *testing.T, ig *IstioGlobal, q dns.Question) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(q.Name, q.Qtype)
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rcode, err := ig.ServeDNS(context.Background(), rec, m)
	if err != nil {
		t.Fatalf("%s %s: %v", q.Name, dns.TypeToString[q.Qtype], err)
	}
	if rec.Msg == nil { // SERVFAIL and the like: the server writes them
		out := new(dns.Msg)
		out.Rcode = rcode
		return out
	}
	if _, err := rec.Msg.Pack(); err != nil {
		t.Fatalf("%s %s does not pack: %v", q.Name, dns.TypeToString[q.Qtype], err)
	}
	return rec.Msg
}

// sameReply reports how two replies differ, or "".
func sameReply(got, want *dns.Msg) string {
	section := func(rrs []dns.RR) string {
		var s []string
		for _, rr := range rrs {
			s = append(s, rr.String())
		}
		return strings.Join(s, "\n\t")
	}
	if got.Rcode != want.Rcode {
		return fmt.Sprintf("rcode %s, want %s", dns.RcodeToString[got.Rcode], dns.RcodeToString[want.Rcode])
	}
	for _, s := range []struct {
		name      string
		got, want []dns.RR
	}{{"answer", got.Answer, want.Answer}, {"authority", got.Ns, want.Ns}, {"additional", got.Extra, want.Extra}} {
		if g, w := section(s.got), section(s.want); g != w {
			return fmt.Sprintf("%s:\n\t%s\nwant:\n\t%s", s.name, g, w)
		}
	}
	return ""
}

// world generates random entries from small pools, so that random events collide: the same
// host in several entries, shared addresses, wildcards over hosts, ties in creation time,
// hosts in other zones, bad values.
type world struct {
	r        *rand.Rand
	hosts    []string
	addrs    []string
	ports    []Port
	names    int  // entries of each namespace
	batch    int  // events at most per commit
	perEntry int  // hosts, addresses and ports at most per entry
	bulk     bool // the first batch creates every entry, as an initial sync does
}

// sparse is the world of few collisions of each kind but many kinds.
func sparse(r *rand.Rand) *world {
	return &world{r: r, hosts: worldHosts, addrs: worldAddrs, ports: worldPorts, names: 12, batch: 4, perEntry: 3}
}

// crowded is a world where every cap is passed: one hot host in half the entries (more than 32
// entries, 32 ports and 32 addresses), and one address in half the entries (more than 32
// holders).
func crowded(r *rand.Rand) *world {
	w := &world{r: r, names: 60, batch: 40, perEntry: 6, bulk: true}
	for i := range 50 {
		w.hosts = append(w.hosts, fmt.Sprintf("h%d.c.global", i))
	}
	w.hosts = append(w.hosts, "*.c.global", "*.h1.c.global")
	for i := range 40 {
		w.addrs = append(w.addrs, fmt.Sprintf("10.1.0.%d", i))
		w.ports = append(w.ports, Port{fmt.Sprintf("p%d", i), uint32(1000 + i), "TCP"})
	}
	w.addrs = append([]string{"10.2.0.1"}, w.addrs...)
	w.addrs = append(w.addrs, "10.2.0.2", "fd00::9")
	return w
}

var (
	worldHosts = []string{
		"h0.a.global", "h1.a.global", "h2.b.global", "H3.b.global", "deep.h0.a.global",
		"*.a.global", "*.h0.a.global", "*.w.global", "x.w.global",
		"_http._tcp.h0.a.global", // the SRV name of h0's port "http"
		"5.0.0.10.in-addr.arpa", "api.example.com", "bad host", "global", "ns.dns.global",
		strings.Repeat("l", 63) + "." + strings.Repeat("m", 63) + "." + strings.Repeat("n", 63) + ".o.global",
	}
	worldAddrs = []string{
		"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "fd00::1", "fd00::2", "::ffff:10.0.0.3",
		"240.241.0.2", "240.241.0.0/30", "10.0.0.4/32", "10.9.0.0/16", "hello", "0.0.0.0", "fe80::1%eth0",
	}
	worldPorts = []Port{
		{"http", 80, "HTTP"}, {"http", 8080, "HTTP"}, {"dns", 53, "UDP"}, {"", 9, "TCP"},
		{"grpc", 9000, "GRPC"}, {"HTTP", 81, "http"}, {"bad_port", 1, "TCP"}, {"zero", 0, "TCP"},
		{strings.Repeat("p", 40), 82, "TCP"},
	}
)

func (w *world) pick(n int) int { return w.r.IntN(n) }

func (w *world) entry(namespace, name string) *Entry {
	e := &Entry{Namespace: namespace, Name: name, Created: epoch.Add(time.Duration(w.pick(4)) * time.Second)}
	for range 1 + w.pick(w.perEntry) {
		e.Hosts = append(e.Hosts, w.hosts[w.pick(len(w.hosts))])
	}
	if w.pick(2) == 0 {
		e.Hosts = append(e.Hosts, w.hosts[0]) // the hot host
	}
	if w.pick(8) == 0 {
		e.Hosts = nil
	}
	for range w.pick(w.perEntry) {
		e.Addresses = append(e.Addresses, w.addrs[w.pick(len(w.addrs))])
	}
	if w.pick(2) == 0 {
		e.Addresses = append(e.Addresses, w.addrs[0]) // the shared address
	}
	if w.pick(3) == 0 {
		for _, h := range e.Hosts {
			e.StatusAddresses = append(e.StatusAddresses, StatusAddress{Host: h, Value: w.addrs[w.pick(len(w.addrs))]})
		}
	}
	for range w.pick(w.perEntry) {
		e.Ports = append(e.Ports, w.ports[w.pick(len(w.ports))])
	}
	// Scopes collide too: the same host in entries of different scopes and addresses.
	switch w.pick(10) {
	case 0:
		e.ExportTo = []string{"."}
	case 1:
		e.ExportTo = []string{"*"}
	case 2:
		e.ExportTo = []string{"a"}
	case 3:
		e.ExportTo = []string{"b", "a", "."}
	case 4:
		e.ExportTo = []string{"~"}
	case 5:
		e.ExportTo = []string{"~", "a"}
	}
	if w.pick(6) == 0 {
		e.Labels = map[string]string{optOutLabel: "false"}
	}
	return e
}

// events returns a batch of random creates, updates and deletes.
func (w *world) events() []change {
	var out []change
	if w.bulk {
		w.bulk = false
		for _, namespace := range []string{"a", "b"} {
			for i := range w.names {
				name := fmt.Sprintf("e%d", i)
				out = append(out, change{id: entryID{key: namespace + "/" + name}, entry: w.entry(namespace, name)})
			}
		}
		return out
	}
	for range 1 + w.pick(w.batch) {
		namespace, name := []string{"a", "b"}[w.pick(2)], fmt.Sprintf("e%d", w.pick(w.names))
		id := entryID{key: namespace + "/" + name, dup: int32(w.pick(2) * w.pick(2)), source: int32(w.pick(2))}
		c := change{id: id}
		if w.pick(4) != 0 {
			c.entry = w.entry(namespace, name)
		}
		out = append(out, c)
	}
	return out
}

// questions are every name either table has, names below wildcards and ENTs, names that do
// not exist, and their upper-case spellings, with every type the plugin answers.
func questions(ot *oTable, t *Table) []dns.Question {
	names := map[string]bool{"nothere.global.": true, "a.b.c.w.global.": true, "q.h0.a.global.": true, "9.9.9.9.in-addr.arpa.": true}
	for n := range ot.names {
		names[n] = true
		names["sub."+n] = true
	}
	for _, s := range t.names.shards {
		for n := range s {
			names[n] = true
		}
	}
	var qs []dns.Question
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for n := range names {
			if !yield(n) {
				return
			}
		}
	}) {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeTXT, dns.TypeSOA, dns.TypeNS, dns.TypeANY} {
			qs = append(qs, dns.Question{Name: n, Qtype: qt, Qclass: dns.ClassINET})
		}
		qs = append(qs, dns.Question{Name: strings.ToUpper(n), Qtype: dns.TypeA, Qclass: dns.ClassINET})
	}
	return qs
}

// TestIncrementalEqualsFromScratch applies long random event sequences to the engine and,
// after every commit, checks that every question is answered exactly as by a table the
// oracle builds from scratch from the same entries, and that the problems and counts agree.
func TestIncrementalEqualsFromScratch(t *testing.T) {
	zones := []string{"global.", "w.global.", "in-addr.arpa.", "ip6.arpa."}
	small, err := vip.New([]netip.Prefix{netip.MustParsePrefix("240.241.0.0/29"), netip.MustParsePrefix("fd00::/125")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	steps := 100
	if testing.Short() || raceEnabled {
		steps = 20
	}
	// Persisted allocations as the store hands them out: some hosts have VIPs, the rest wait
	// (SERVFAIL); they change now and then, as the leader writes.
	persisted := [2]map[string]vip.VIPs{
		{"h0.a.global.": {V4: netip.MustParseAddr("240.241.0.9")}, "x.w.global.": {V4: netip.MustParseAddr("10.0.0.1"), V6: netip.MustParseAddr("fd00::7")}},
		{"h2.b.global.": {V6: netip.MustParseAddr("fd00::8")}, "x.w.global.": {V4: netip.MustParseAddr("240.241.0.3")}},
	}
	live := func(i int) allocFunc {
		return func([]string, vip.Reserved) (map[string]vip.VIPs, []string) { return persisted[i%2], nil }
	}
	for _, mode := range []struct {
		name  string
		cfg   tableConfig
		world func(*rand.Rand) *world
		steps int
	}{
		{"no-allocation", tableConfig{}, sparse, steps},
		{"deterministic", tableConfig{alloc: small.Deterministic, pool: small.Overlaps}, sparse, steps},
		{"persisted", tableConfig{alloc: live(0), pool: small.Overlaps}, sparse, steps},
		{"mesh-only", tableConfig{export: exportPolicy{meshOnly: true}}, sparse, steps / 2},
		{"default-own-namespace", tableConfig{export: exportPolicy{defaultTo: []string{"."}}}, sparse, steps / 2},
		{"crowded", tableConfig{}, crowded, steps / 5},
		{"crowded-deterministic", tableConfig{alloc: small.Deterministic, pool: small.Overlaps}, crowded, steps / 5},
	} {
		for seed := range uint64(8) {
			t.Run(fmt.Sprintf("%s/seed%d", mode.name, seed), func(t *testing.T) {
				cfg := mode.cfg
				cfg.zones, cfg.ttl, cfg.ns = zones, 30, defaultNameServer(zones, []string{"127.0.0.1"})
				w := mode.world(rand.New(rand.NewPCG(seed, 7)))
				e := newEngine(cfg)
				ig := newIstioGlobal()
				ig.Zones, ig.txt = zones, true
				// A reader on the latest generation throughout: under -race, a change to a
				// published generation is a reported race.
				reader := newIstioGlobal()
				reader.Zones, reader.txt = zones, true
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() {
					defer close(done)
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if reader.table.Load() == nil {
							continue
						}
						name, _ := hostname.Canonical(strings.TrimPrefix(w.hosts[i%len(w.hosts)], "*."))
						for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypePTR, dns.TypeSRV} {
							m := new(dns.Msg).SetQuestion(cmp.Or(name, "x.global."), qt)
							reader.ServeDNS(context.Background(), &discardWriter{}, m)
						}
					}
				}()
				defer func() { close(stop); <-done }()
				current := map[entryID]*Entry{}
				type generation struct {
					tb      *Table
					oracle  *oTable
					entries []Entry
				}
				var prev *generation
				serial := uint32(0)
				var reached [cappedKinds]int
				if strings.HasPrefix(mode.name, "crowded") {
					defer func() {
						if reached[cappedPTR] == 0 || reached[cappedSRV] == 0 || reached[cappedTXT] == 0 {
							t.Errorf("the crowded world never passed every cap: capped %v at most", reached)
						}
					}()
				}
				for step := range mode.steps {
					if mode.name == "persisted" && step%7 == 6 {
						cfg.alloc = live(step / 7)
						e.setAlloc(cfg.alloc)
					}
					tb, entries, oracle := commitStep(e, ig, cfg, current, w.events(), &serial)
					reader.table.Store(tb)
					// The generation before still answers as it did: readers on it see no change.
					if prev != nil && step%5 == 0 {
						answersAsOracle(t, ig, prev.tb, prev.oracle, prev.entries, fmt.Sprintf("step %d, the generation before", step))
					}
					answersAsOracle(t, ig, tb, oracle, entries, fmt.Sprintf("step %d, now", step))
					prev = &generation{tb, oracle, entries}
					problemsAsOracle(t, e, oracle, fmt.Sprintf("step %d", step))
					counts := map[[2]string]int{}
					for _, p := range e.allProblems() {
						counts[[2]string{p.Kind, p.Reason}]++
					}
					if !maps.Equal(counts, e.problems.counts) {
						t.Fatalf("step %d: problem counts %v, want %v", step, e.problems.counts, counts)
					}
					for i, n := range e.stats.capped {
						reached[i] = max(reached[i], n)
					}
					// capped{txt} counts differently by design (per address, not per holder).
					if got, want := [2]int{e.stats.capped[cappedPTR], e.stats.capped[cappedSRV]}, [2]int{oracle.capped["ptr"], oracle.capped["srv"]}; got != want {
						t.Fatalf("step %d: capped ptr, srv %v, want %v", step, got, want)
					}
					// The metrics' counts: a change of them alone publishes no table.
					if got, want := [5]int{e.stats.entries, len(e.hosts), e.stats.other, e.stats.allocated[0], e.stats.allocated[1]}, [5]int{oracle.entries, oracle.hosts, oracle.other, oracle.allocated[0], oracle.allocated[1]}; got != want {
						t.Fatalf("step %d: entries, hosts, other, allocated IPv4, IPv6 %v, want %v", step, got, want)
					}
				}
			})
		}
	}
}

// entriesInOrder lists entries as the sources would hand them to the oracle: by source, and
// within one in their order (dup).
func entriesInOrder(m map[entryID]*Entry) []Entry {
	ids := slices.SortedFunc(func(yield func(entryID) bool) {
		for id := range m {
			if !yield(id) {
				return
			}
		}
	}, func(a, b entryID) int {
		if a.source != b.source {
			return int(a.source - b.source)
		}
		return int(a.dup - b.dup)
	})
	out := make([]Entry, len(ids))
	for i, id := range ids {
		out[i] = *m[id]
	}
	return out
}

// commitStep applies batch to the engine and to current (the entries as the sources have them),
// commits, and has ig serve the latest generation. It returns that generation, the entries in
// source order, and the oracle's table built from scratch from them.
func commitStep(e *engine, ig *IstioGlobal, cfg tableConfig, current map[entryID]*Entry, batch []change, serial *uint32) (*Table, []Entry, *oTable) {
	for _, c := range batch {
		if c.entry == nil {
			delete(current, c.id)
		} else {
			current[c.id] = c.entry
		}
	}
	e.apply(batch)
	if tb := e.commit(func() uint32 { *serial++; return *serial }); tb != nil {
		ig.table.Store(tb)
	}
	tb := ig.table.Load()
	entries := entriesInOrder(current)
	return tb, entries, oracleBuild(entries, cfg, tb.serial)
}

// answersAsOracle fails unless tb, served by ig, answers every question as oracle does.
func answersAsOracle(t *testing.T, ig *IstioGlobal, tb *Table, oracle *oTable, entries []Entry, where string) {
	t.Helper()
	ig.table.Store(tb)
	for _, q := range questions(oracle, tb) {
		if diff := sameReply(servedReply(t, ig, q), oracleReply(oracle, q, true)); diff != "" {
			t.Fatalf("%s, %s %s: %s\nentries:\n%s", where, q.Name, dns.TypeToString[q.Qtype], diff, describe(entries))
		}
	}
}

// problemsAsOracle fails unless the engine has the oracle's problems.
func problemsAsOracle(t *testing.T, e *engine, oracle *oTable, where string) {
	t.Helper()
	if got, want := problemTexts(e.allProblems()), problemTexts(oracle.problems); !slices.Equal(got, want) {
		t.Fatalf("%s: problems\n\t%s\nwant\n\t%s", where, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

func problemTexts(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

func describe(entries []Entry) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "  %s/%s created=%s hosts=%q addrs=%q status=%v ports=%v exportTo=%q labels=%v\n",
			e.Namespace, e.Name, e.Created.Format("05"), e.Hosts, e.Addresses, e.StatusAddresses, e.Ports, e.ExportTo, e.Labels)
	}
	return b.String()
}
