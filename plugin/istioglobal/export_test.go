package istioglobal

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// Every exportTo form under each policy and default: the scope served, or why not.
func TestScopeOf(t *testing.T) {
	forms := []struct {
		name     string
		exportTo []string
	}{
		{"empty", nil},
		{"star", []string{"*"}},
		{"dot", []string{"."}},
		{"list", []string{"client-b", "client-a"}},
		{"dot-and-list", []string{"client-a", "."}},
		{"duplicates", []string{"client-a", "client-a"}},
		{"tilde", []string{"~"}},
		{"tilde-and-list", []string{"~", "client-a"}},
		{"star-and-dot", []string{"*", "."}},
		{"bad-namespace", []string{"Client_A"}},
		{"empty-value", []string{""}},
	}
	policies := []struct {
		name   string
		policy exportPolicy
		want   map[string]string // form → scope, or "skip:REASON"
	}{
		{"any/default-star", exportPolicy{}, map[string]string{
			"empty": "*", "star": "*", "dot": "[sync]", "list": "[client-a,client-b]", "dot-and-list": "[client-a,sync]",
			"duplicates": "[client-a]", "tilde": "skip:not_exported",
		}},
		{"any/default-dot", exportPolicy{defaultTo: []string{"."}}, map[string]string{
			"empty": "[sync]", "star": "*", "dot": "[sync]", "list": "[client-a,client-b]", "dot-and-list": "[client-a,sync]",
			"duplicates": "[client-a]", "tilde": "skip:not_exported",
		}},
		{"any/default-tilde", exportPolicy{defaultTo: []string{"~"}}, map[string]string{
			"empty": "skip:not_exported", "star": "*", "dot": "[sync]", "list": "[client-a,client-b]", "dot-and-list": "[client-a,sync]",
			"duplicates": "[client-a]", "tilde": "skip:not_exported",
		}},
		{"any/default-list", exportPolicy{defaultTo: []string{"istio-system", "."}}, map[string]string{
			"empty": "[istio-system,sync]", "star": "*", "dot": "[sync]", "list": "[client-a,client-b]", "dot-and-list": "[client-a,sync]",
			"duplicates": "[client-a]", "tilde": "skip:not_exported",
		}},
		{"mesh/default-star", exportPolicy{meshOnly: true}, map[string]string{
			"empty": "*", "star": "*", "dot": "skip:not_exported", "list": "skip:not_exported", "dot-and-list": "skip:not_exported",
			"duplicates": "skip:not_exported", "tilde": "skip:not_exported",
		}},
		{"mesh/default-dot", exportPolicy{meshOnly: true, defaultTo: []string{"."}}, map[string]string{
			"empty": "skip:not_exported", "star": "*", "dot": "skip:not_exported", "list": "skip:not_exported", "dot-and-list": "skip:not_exported",
			"duplicates": "skip:not_exported", "tilde": "skip:not_exported",
		}},
	}
	for _, p := range policies {
		for _, f := range forms {
			t.Run(p.name+"/"+f.name, func(t *testing.T) {
				want, ok := p.want[f.name]
				if !ok {
					want = "skip:invalid_export_to" // what Istio's validation rejects, under every policy
				}
				sc, problem := p.policy.scopeOf(&Entry{Namespace: "sync", Name: "se", ExportTo: f.exportTo})
				got := sc.String()
				if problem != nil {
					got = "skip:" + problem.Reason
					if problem.Kind != kindEntry || problem.Entry != "sync/se" || problem.Detail == "" {
						t.Errorf("problem %+v", problem)
					}
				}
				if got != want {
					t.Errorf("exportTo %q: %s, want %s (%v)", f.exportTo, got, want, problem)
				}
			})
		}
	}
}

// The answers each policy gives Admiral-shaped entries: a sync namespace, exportTo the client
// namespaces.
func TestExportPolicyAnswers(t *testing.T) {
	exported := func(name, host string, to ...string) Entry {
		e := se("admiral-sync", name, 0, hosts(host), "240.0.0.1")
		e.ExportTo = to
		return e
	}
	entries := []Entry{
		exported("everyone", "a.foo.global"),
		exported("star", "b.foo.global", "*"),
		exported("clients", "stage.greeting.global", "client-a", "istio-system"),
		exported("self", "d.foo.global", "."),
		exported("nowhere", "e.foo.global", "~"),
	}
	a := func(name string) test.Case {
		return test.Case{Qname: name, Qtype: dns.TypeA, Answer: []dns.RR{test.A(name + " 30 IN A 240.0.0.1")}}
	}
	nx := func(name string) test.Case {
		return test.Case{Qname: name, Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa}}
	}
	for _, tc := range []struct {
		name     string
		policy   exportPolicy
		cases    []test.Case
		problems []string
	}{
		{"any", exportPolicy{}, []test.Case{a("a.foo.global."), a("b.foo.global."), a("stage.greeting.global."), a("d.foo.global."), nx("e.foo.global.")},
			[]string{"entry/not_exported"}},
		{"mesh", exportPolicy{meshOnly: true}, []test.Case{a("a.foo.global."), a("b.foo.global."), nx("stage.greeting.global."), nx("d.foo.global."), nx("e.foo.global.")},
			[]string{"entry/not_exported", "entry/not_exported", "entry/not_exported"}},
		{"any, empty means nowhere", exportPolicy{defaultTo: []string{"~"}}, []test.Case{nx("a.foo.global."), a("b.foo.global."), a("stage.greeting.global.")},
			[]string{"entry/not_exported", "entry/not_exported"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb, e := buildEngine(entries, tableConfig{zones: []string{"global."}, ttl: 30, ns: defaultNameServer([]string{"global."}, nil), export: tc.policy}, 1)
			ig := newIstioGlobal()
			ig.Zones = []string{"global."}
			ig.table.Store(tb)
			runCases(t, ig, tc.cases)
			assertProblems(t, e.allProblems(), tc.problems...)
		})
	}
}

// Entries for one host with different scopes and different addresses: the widest scope's
// addresses are answered (mesh-wide, else the oldest entry's scope), the others are shadowed,
// named in the TXT facts and counted as problems. Same addresses, or no addresses, never
// conflict; one scope's entries add up as ever.
func TestScopeConflicts(t *testing.T) {
	entry := func(name string, age int, exportTo []string, addrs ...string) Entry {
		e := se("ns-"+name, name, age, hosts("h.x.global"), addrs...)
		e.ExportTo = exportTo
		e.Ports = []Port{{"p-" + name, 80, "TCP"}}
		return e
	}
	mesh, clients, others := []string{"*"}, []string{"client-a"}, []string{"client-b"}
	for _, tc := range []struct {
		name    string
		entries []Entry
		want    []string // A answers
		txt     []string // the scope facts
		problem bool
	}{
		{"mesh wins over older namespaces", []Entry{entry("narrow", 0, clients, "10.0.0.2"), entry("wide", 1, mesh, "10.0.0.1")},
			[]string{"10.0.0.1"}, []string{"scope=* answered", "shadowed=ns-narrow/narrow (exportTo [client-a])"}, true},
		{"oldest among namespace lists", []Entry{entry("b", 1, others, "10.0.0.2"), entry("a", 0, clients, "10.0.0.1")},
			[]string{"10.0.0.1"}, []string{"scope=[client-a] answered", "shadowed=ns-b/b (exportTo [client-b])"}, true},
		{"a superset is another address set", []Entry{entry("a", 0, clients, "10.0.0.1"), entry("b", 1, others, "10.0.0.1", "10.0.0.2")},
			[]string{"10.0.0.1"}, []string{"scope=[client-a] answered", "shadowed=ns-b/b (exportTo [client-b])"}, true},
		{"same addresses: no conflict", []Entry{entry("a", 0, clients, "10.0.0.1"), entry("b", 1, mesh, "10.0.0.1")},
			[]string{"10.0.0.1"}, nil, false},
		{"no addresses: no conflict", []Entry{entry("a", 0, mesh), entry("b", 1, clients, "10.0.0.2")},
			[]string{"10.0.0.2"}, nil, false},
		{"one scope adds up", []Entry{entry("a", 0, clients, "10.0.0.1"), entry("b", 1, clients, "10.0.0.2")},
			[]string{"10.0.0.1", "10.0.0.2"}, nil, false},
		{"the answered scope's entries add up", []Entry{entry("a", 0, mesh, "10.0.0.1"), entry("c", 2, clients, "10.0.0.3"), entry("b", 1, mesh, "10.0.0.2")},
			[]string{"10.0.0.1", "10.0.0.2"}, []string{"scope=* answered", "shadowed=ns-c/c (exportTo [client-a])"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb, e := buildEngine(tc.entries, tableConfig{zones: []string{"global."}, ttl: 30, ns: defaultNameServer([]string{"global."}, nil)}, 1)
			ig := newIstioGlobal()
			ig.Zones, ig.txt = []string{"global."}, true
			ig.table.Store(tb)
			var got []string
			for _, rr := range query(t, ig, "h.x.global.", dns.TypeA).Answer {
				got = append(got, rr.(*dns.A).A.String())
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("A %v, want %v", got, tc.want)
			}
			var all, facts []string
			for _, rr := range query(t, ig, "h.x.global.", dns.TypeTXT).Answer {
				all = append(all, rr.(*dns.TXT).Txt...)
			}
			for _, s := range all {
				if strings.HasPrefix(s, "scope=") || strings.HasPrefix(s, "shadowed=") {
					facts = append(facts, s)
				}
			}
			for _, e := range tc.entries {
				for _, f := range facts {
					if strings.HasPrefix(f, "shadowed="+e.key()+" ") && slices.Contains(all, "port=p-"+e.Name+"/80/TCP") {
						t.Errorf("the port of shadowed %s is served", e.key())
					}
				}
			}
			if fmt.Sprint(facts) != fmt.Sprint(tc.txt) {
				t.Errorf("TXT facts %q, want %q", facts, tc.txt)
			}
			var want []string
			if tc.problem {
				want = []string{"host/scope_conflict"}
			}
			assertProblems(t, e.allProblems(), want...)
		})
	}
}

func query(t *testing.T, ig *IstioGlobal, name string, qtype uint16) *dns.Msg {
	t.Helper()
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	if _, err := ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion(name, qtype)); err != nil || rec.Msg == nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return rec.Msg
}
