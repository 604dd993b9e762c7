package istioglobal

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
)

// A change publishes a generation that shares every shard it did not touch with the one
// before, and leaves the one before as it was: readers still on it see no change.
func TestGenerationsShareAndStay(t *testing.T) {
	entries := benchDebugEntries(10_000)
	e := newEngine(tableConfig{zones: []string{"global.", "in-addr.arpa."}, ttl: 30, ns: defaultNameServer([]string{"global."}, nil)})
	var s snapshots
	e.apply(s.diff(entries))
	before := e.commit(func() uint32 { return 1 })

	changed := entries[42]
	changed.Addresses = []string{"241.0.0.1"}
	e.apply([]change{{id: entryID{key: changed.key()}, entry: &changed}})
	after := e.commit(func() uint32 { return 2 })
	if after == nil {
		t.Fatal("a change published nothing")
	}

	shared := 0
	for i := range shardCount {
		if reflect.ValueOf(before.names.shards[i]).UnsafePointer() == reflect.ValueOf(after.names.shards[i]).UnsafePointer() {
			shared++
		}
	}
	// The host (its node points at new data), its SRV name, the old and new reverse names and
	// the ENTs above them: a handful of shards.
	if copied := shardCount - shared; copied > 12 {
		t.Errorf("one change copied %d of %d shards", copied, shardCount)
	}
	if got := before.node(benchName(42)).host.addrs[0].String(); got != benchAddr(42) {
		t.Errorf("the earlier generation answers %s for the changed host, want %s", got, benchAddr(42))
	}
	if got := after.node(benchName(42)).host.addrs[0].String(); got != "241.0.0.1" {
		t.Errorf("the new generation answers %s, want 241.0.0.1", got)
	}
	oldPTR := benchPTRName(42)
	if before.node(oldPTR) == nil || after.node(oldPTR) != nil {
		t.Errorf("reverse name %s: before %v, after %v; want it in the earlier generation only", oldPTR, before.node(oldPTR), after.node(oldPTR))
	}

	// The journal has the difference: the names the change touched, with their earlier nodes.
	j := e.journal.gens[len(e.journal.gens)-1]
	if j.serial != 2 {
		t.Errorf("journal's last generation leads to serial %d, want 2", j.serial)
	}
	touched := map[string]*node{}
	for _, c := range j.changes {
		touched[c.name] = c.old
	}
	for _, name := range []string{benchName(42), benchSRVName(42), oldPTR} {
		if old, ok := touched[name]; !ok || old != before.node(name) {
			t.Errorf("journal: %s missing or not its earlier node (%v)", name, ok)
		}
	}
	if len(j.changes) > 16 {
		t.Errorf("journal: %d names for one change", len(j.changes))
	}
}

// The journal stays bounded however many generations are published.
func TestJournalIsBounded(t *testing.T) {
	e := newEngine(tableConfig{zones: []string{"global."}, ttl: 30})
	serial := uint32(0)
	next := func() uint32 { serial++; return serial }
	for i := range 3000 {
		en := Entry{Namespace: "foo", Name: "e", Hosts: []string{fmt.Sprintf("h%d.foo.global", i)}, Addresses: []string{"240.0.0.1"}}
		e.apply([]change{{id: entryID{key: en.key()}, entry: &en}})
		e.commit(next)
	}
	if e.journal.names > maxJournalNames {
		t.Errorf("journal holds %d names, want at most %d", e.journal.names, maxJournalNames)
	}
	if last := e.journal.gens[len(e.journal.gens)-1]; last.serial != serial {
		t.Errorf("journal ends at serial %d, want %d", last.serial, serial)
	}
}

// Replicas in deterministic mode see the same entries through different histories (one synced
// at once, the other through creates, deletes and re-creates in another order): they serve the
// same VIPs, as the plugin README promises.
func TestReplicasAgreeOnVIPs(t *testing.T) {
	a, err := vip.New([]netip.Prefix{netip.MustParsePrefix("240.241.0.0/28"), netip.MustParsePrefix("fd00::/124")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tableConfig{zones: []string{"global."}, ttl: 30, alloc: a.Deterministic, pool: a.Overlaps}
	var entries []Entry
	for i := range 12 {
		e := Entry{Namespace: "foo", Name: fmt.Sprintf("e%d", i), Created: epoch.Add(time.Duration(i%4) * time.Second),
			Hosts: []string{fmt.Sprintf("h%d.foo.global", i)}}
		if i%5 == 0 {
			e.Addresses = []string{fmt.Sprintf("240.241.0.%d", i+1)} // reserved inside the pool
		}
		entries = append(entries, e)
	}
	var s snapshots
	synced := newEngine(cfg)
	synced.apply(s.diff(entries))
	one := synced.commit(func() uint32 { return 1 })

	replayed := newEngine(cfg)
	var other *Table // the replica's latest generation
	serial := uint32(0)
	step := func(c change) {
		replayed.apply([]change{c})
		if tb := replayed.commit(func() uint32 { serial++; return serial }); tb != nil {
			other = tb
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, i := range r.Perm(len(entries)) {
		e := entries[i]
		id := entryID{key: e.key()}
		step(change{id: id, entry: &e})
		if r.IntN(3) == 0 { // gone and back
			step(change{id: id})
			step(change{id: id, entry: &e})
		}
	}
	for _, e := range entries {
		name := e.Hosts[0] + "."
		got, want := other.node(name).host.addrs, one.node(name).host.addrs
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v after a history of changes, %v synced at once", name, got, want)
		}
	}
	if allocated := synced.statistics().allocated; allocated[0] < 8 || allocated[1] < 8 {
		t.Errorf("allocated %v: the test wants most hosts to hold a VIP", allocated)
	}
}
