package stubdomain

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

var fuzzServers = []netip.AddrPort{netip.MustParseAddrPort("10.0.0.53:53"), netip.MustParseAddrPort("[fd00::35]:5353")}

// FuzzServerBlock: any Corefile. Where SetServerBlock accepts it, the bytes outside our block
// never change (removing the block from the result gives what removing it from the input
// gives), a second apply changes nothing, and on a Corefile without our block apply then
// remove is the identity.
func FuzzServerBlock(f *testing.F) {
	for _, s := range []string{
		kubeadmCorefile, "", ".:53 {\n    forward . /etc/resolv.conf\n}", ".:53 {\r\n    errors\r\n}\r\n",
		"import /etc/coredns/custom/*.server\n.:53 {\n    whoami\n}",
		"# BEGIN coredns-istio global\nglobal:53 {\n    forward . 10.0.0.1\n}\n# END coredns-istio global\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, corefile string) {
		out, err := SetServerBlock(corefile, "global", fuzzServers)
		if err != nil {
			return
		}
		again, err := SetServerBlock(out, "global", fuzzServers)
		if err != nil || again != out {
			t.Fatalf("a second apply changed the Corefile (%v):\n%q\n%q", err, out, again)
		}
		removed, err := RemoveServerBlock(out, "global")
		if err != nil {
			t.Fatalf("remove after apply: %v\n%q", err, out)
		}
		before, err := RemoveServerBlock(corefile, "global")
		if err != nil {
			t.Fatalf("the input has a block that apply replaced but remove cannot take out: %v", err)
		}
		if removed != before {
			t.Fatalf("bytes outside our block changed:\n%q\n%q", before, removed)
		}
		if s, _ := ServerBlockServers(corefile, "global"); s == nil && removed != corefile {
			t.Fatalf("apply then remove is not the identity:\n%q\n%q", corefile, removed)
		}
	})
}

// FuzzStubDomains: any stubDomains value. Where SetStubDomain accepts it, every other domain
// keeps its value and position, a second apply changes nothing, and remove after apply gives
// the input's other domains (reformatted) back.
func FuzzStubDomains(f *testing.F) {
	for _, s := range []string{
		"", `{"acme.local": ["1.2.3.4"]}`, `{"global": ["10.0.0.1"], "b": ["::1"]}`, `{"Global.": ["x"], "global": []}`,
		`{"a":["1.1.1.1"],"a":["2.2.2.2"]}`, `[]`, `{"global": "nope"}`, "{\n  \"\\u0067lobal\": [\"1.1.1.1:53\"]\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stubDomains string) {
		out, err := SetStubDomain(stubDomains, "global", fuzzServers)
		if err != nil {
			return
		}
		if got, err := StubDomainServers(out, "global"); err != nil || !slices.Equal(got, []string{"10.0.0.53", "[fd00::35]:5353"}) {
			t.Fatalf("after apply global forwards to %v (%v)", got, err)
		}
		if again, err := SetStubDomain(out, "global", fuzzServers); err != nil || again != out {
			t.Fatalf("a second apply changed stubDomains (%v):\n%q\n%q", err, out, again)
		}
		removed, err := RemoveStubDomain(out, "global")
		if err != nil {
			t.Fatal(err)
		}
		zone, _ := normalizeZone("global")
		others := func(s string) []string {
			entries, err := parseStubDomains(s)
			if err != nil {
				t.Fatalf("%q: %v", s, err)
			}
			var out []string
			for _, e := range entries {
				if !keyNamesZone(e.key, zone) {
					v, _ := json.Marshal(json.RawMessage(e.value))
					out = append(out, e.key+"="+compactJSON(v))
				}
			}
			return out
		}
		if got, want := others(removed), others(stubDomains); !slices.Equal(got, want) {
			t.Fatalf("other domains changed:\n%s\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
	})
}
