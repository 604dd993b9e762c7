package istioglobal

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/hostname"
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// The fuzz targets. Their seed corpora are in testdata/fuzz/<target>; `make fuzz` runs each for a
// while, and `make test` runs the corpora as regression tests.

// fuzzZones are the zones of the fuzzed tables: forward, a sub-zone and both reverse trees.
var fuzzZones = []string{"global.", "w.global.", "in-addr.arpa.", "ip6.arpa."}

func fuzzConfig() tableConfig {
	return tableConfig{zones: fuzzZones, ttl: 30, ns: defaultNameServer(fuzzZones, []string{"127.0.0.1"})}
}

// fuzzPlugin serves tb, with TXT on, and a next plugin for what falls through.
func fuzzPlugin(tb *Table) *IstioGlobal {
	ig := newIstioGlobal()
	ig.Zones, ig.txt = fuzzZones, true
	ig.Next = test.NextHandler(dns.RcodeRefused, nil)
	ig.table.Store(tb)
	return ig
}

// mustPack serves m and fails unless the reply, if the plugin wrote one, packs.
func mustPack(t *testing.T, ig *IstioGlobal, m *dns.Msg) {
	t.Helper()
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	ig.ServeDNS(context.Background(), rec, m)
	if rec.Msg == nil {
		return
	}
	if _, err := rec.Msg.Pack(); err != nil {
		t.Fatalf("reply to %v does not pack: %v\n%v", m.Question, err, rec.Msg)
	}
}

// crowdedTable is a populated table for FuzzServeDNS: the seeds, a wildcard, shared addresses,
// many ports and holders, so that the caps are reached.
func crowdedTable() *Table {
	entries := append([]Entry(nil), seeds...)
	for i := range 40 {
		e := se("crowd", "e"+string(rune('a'+i%26))+string(rune('a'+i/26)), i, hosts("hot.w.global", "h"+string(rune('a'+i%26))+".w.global"), "10.1.0.1", "fd00::1")
		e.Ports = []Port{{Name: "p" + string(rune('a'+i%26)), Number: uint32(1000 + i), Protocol: "TCP"}}
		entries = append(entries, e)
	}
	entries = append(entries, se("crowd", "wild", 50, hosts("*.w.global"), "10.1.0.2"))
	return build(entries, fuzzConfig(), 1)
}

// FuzzServeDNS: any message, against a populated table: no panic, and every reply packs.
func FuzzServeDNS(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"httpbin.bar.global.", dns.TypeA}, {"HOT.w.GLOBAL.", dns.TypeTXT}, {"x.y.w.global.", dns.TypeAAAA},
		{"_pa._tcp.hot.w.global.", dns.TypeSRV}, {"1.0.1.10.in-addr.arpa.", dns.TypePTR}, {"global.", dns.TypeANY},
		{"global.", dns.TypeAXFR}, {"w.global.", dns.TypeSOA},
	} {
		m := new(dns.Msg).SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	ig := fuzzPlugin(crowdedTable())
	f.Fuzz(func(t *testing.T, data []byte) {
		m := new(dns.Msg)
		if err := m.Unpack(data); err != nil {
			return // the server drops what does not unpack
		}
		mustPack(t, ig, m)
	})
}

// FuzzServiceEntryDocument: any YAML or JSON document through the files decoder and the
// Kubernetes source's conversion into a table beside the seeds: no panic; the two conversions
// agree; what is skipped is counted; every answer about the entry's names packs.
func FuzzServiceEntryDocument(f *testing.F) {
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: foo}\nspec: {hosts: [a.foo.global], addresses: [240.0.0.1], ports: [{name: http, number: 80, protocol: HTTP}]}\n"))
	f.Add([]byte(`{"apiVersion":"networking.istio.io/v1alpha3","kind":"ServiceEntry","metadata":{"name":"b","namespace":"bar"},"spec":{"hosts":["*.w.global","B.Bar.Global."],"addresses":["fd00::1/128","hello","10.0.0.0/8"],"exportTo":["~","."]}}`))
	f.Add([]byte("kind: ServiceEntry\napiVersion: networking.istio.io/v1\nmetadata: {name: c}\nspec: {hosts: [c.global]}\nstatus: {addresses: [{host: c.global, value: 240.240.0.9}, {host: other.global, value: '::'}]}\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\n"))
	base := append([]Entry(nil), seeds...)
	f.Fuzz(func(t *testing.T, doc []byte) {
		entries, problems := readDocuments("fuzz.yaml", doc)
		if len(entries) == 0 {
			for _, p := range problems {
				if p.Kind != kindEntry || p.Reason != reasonUnparsable || p.Detail == "" {
					t.Fatalf("an unreadable document gave problem %+v", p)
				}
			}
			return
		}
		// The Kubernetes source converts the API object with the informer transform.
		se, err := decodeServiceEntry(doc)
		if err != nil || se == nil {
			t.Fatalf("readDocuments found an entry that decodeServiceEntry does not: %v", err)
		}
		if se.Namespace == "" {
			se.Namespace = "default"
		}
		cached, err := toCachedEntry(se)
		if err != nil {
			t.Fatal(err)
		}
		fromKube := cached.(*cachedEntry).Entry
		if got, want := fromKube, entries[0]; !got.same(&want) {
			t.Fatalf("the Kubernetes conversion differs from the files':\n%+v\n%+v", got, want)
		}
		for _, e := range []Entry{entries[0], fromKube} {
			tb, eng := buildEngine(append(cloneEntries(base), e), fuzzConfig(), 1)
			counts := map[[2]string]int{}
			for _, p := range eng.allProblems() {
				counts[[2]string{p.Kind, p.Reason}]++
			}
			if len(counts) != len(eng.problems.counts) {
				t.Fatalf("problems %v, counted %v", counts, eng.problems.counts)
			}
			ig := fuzzPlugin(tb)
			for _, h := range e.Hosts {
				name, err := hostname.Canonical(h)
				if err != nil {
					continue
				}
				for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeSRV, dns.TypeANY} {
					mustPack(t, ig, new(dns.Msg).SetQuestion(name, qt))
				}
				for _, p := range e.Ports {
					if srv := "_" + strings.ToLower(p.Name) + "._tcp." + name; len(srv) < 250 {
						mustPack(t, ig, new(dns.Msg).SetQuestion(dns.Fqdn(srv), dns.TypeSRV))
					}
				}
			}
			for _, a := range append(append([]string(nil), e.Addresses...), statusValues(e)...) {
				if addr, err := netip.ParseAddr(strings.SplitN(a, "/", 2)[0]); err == nil {
					if rev, err := dns.ReverseAddr(addr.String()); err == nil {
						mustPack(t, ig, new(dns.Msg).SetQuestion(rev, dns.TypePTR))
					}
				}
			}
		}
	})
}

func cloneEntries(e []Entry) []Entry { return append([]Entry(nil), e...) }

func statusValues(e Entry) []string {
	var out []string
	for _, sa := range e.StatusAddresses {
		out = append(out, sa.Value)
	}
	return out
}

// byteSource is a rand.Source that plays back the fuzzer's bytes, so that the property test's
// random world is driven by the fuzzer; once they run out it goes on with a fixed sequence
// (never a constant: rand's rejection sampling would wait forever for another value).
type byteSource struct {
	data []byte
	n    uint64
}

func (s *byteSource) Uint64() uint64 {
	if len(s.data) >= 8 {
		v := binary.LittleEndian.Uint64(s.data)
		s.data = s.data[8:]
		return v
	}
	s.data = nil
	s.n += 0x9e3779b97f4a7c15 // splitmix64
	z := s.n
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// FuzzIncrementalEqualsFromScratch: event sequences chosen by the fuzzer, applied to the
// engine one batch a commit; after each, every question is answered exactly as by the oracle's
// table built from scratch, and the problems agree.
func FuzzIncrementalEqualsFromScratch(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte(strings.Repeat("\x00\xff\x10\x80", 64)))
	f.Add([]byte(strings.Repeat("coredns-istio", 40)))
	f.Fuzz(incrementalCase)
}

func incrementalCase(t *testing.T, data []byte) {
	if len(data) > 4096 {
		return
	}
	src := &byteSource{data: data}
	w := sparse(rand.New(src))
	cfg := fuzzConfig()
	if len(data) > 0 && data[0]&1 == 1 {
		cfg.export = exportPolicy{meshOnly: data[0]&2 == 2, defaultTo: map[bool][]string{true: {"."}}[data[0]&4 == 4]}
	}
	e := newEngine(cfg)
	ig := fuzzPlugin(nil)
	current := map[entryID]*Entry{}
	serial := uint32(0)
	for step := 0; step < 20 && len(src.data) > 0; step++ {
		tb, entries, oracle := commitStep(e, ig, cfg, current, w.events(), &serial)
		answersAsOracle(t, ig, tb, oracle, entries, fmt.Sprintf("step %d", step))
		problemsAsOracle(t, e, oracle, fmt.Sprintf("step %d", step))
	}
}

// FuzzCorefile: any istioglobal block: parse never panics, and what it accepts is a usable
// configuration (zones, a source).
func FuzzCorefile(f *testing.F) {
	for _, s := range []string{
		"istioglobal {\n files testdata\n}",
		"istioglobal global in-addr.arpa {\n files testdata\n ttl 5\n txt on\n visibility mesh\n default_export_to . istio-system\n autoallocate 240.241.0.0/16 fd00::/64\n nameserver 127.0.0.1 ::1\n fallthrough in-addr.arpa\n}",
		"istioglobal {\n files testdata\n autoallocate off\n namespaces a b\n debug off\n}",
		"istioglobal {\n files\n ttl 99999\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		if strings.Contains(input, "kubeconfig") || strings.Contains(input, "import") {
			return // would read files of this machine that the fuzzer should not steer
		}
		c := caddy.NewTestController("dns", input)
		c.ServerBlockKeys = []string{"global.:53"}
		ig, err := parse(c)
		if err != nil {
			return
		}
		if len(ig.Zones) == 0 || len(ig.sources) == 0 || ig.ttl > maxTTL {
			t.Fatalf("accepted %q: zones %v, %d sources, ttl %d", input, ig.Zones, len(ig.sources), ig.ttl)
		}
	})
}
