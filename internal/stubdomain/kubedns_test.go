package stubdomain

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// aps parses "ip", "ip:port" and "[ipv6]:port" into AddrPorts (port 0 when absent).
func aps(t *testing.T, ss ...string) []netip.AddrPort {
	t.Helper()
	out := make([]netip.AddrPort, 0, len(ss))
	for _, s := range ss {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			out = append(out, ap)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			t.Fatalf("bad test server %q: %v", s, err)
		}
		out = append(out, netip.AddrPortFrom(a, 0))
	}
	return out
}

func TestSetStubDomain(t *testing.T) {
	const globalOnly = "{\n  \"global\": [\n    \"10.0.0.53\"\n  ]\n}\n"
	tests := []struct {
		name    string
		in      string
		zone    string
		servers []string
		want    string
	}{
		{"absent key is an empty object", "", "global", []string{"10.0.0.53"}, globalOnly},
		{"blank value is an empty object", " \n", "global", []string{"10.0.0.53"}, globalOnly},
		{"empty object", "{}", "global", []string{"10.0.0.53"}, globalOnly},
		{
			"appended after the other domains, which keep order and values",
			`{"z.example": ["1.2.3.4", "1.2.3.5:5353"], "acme.local": ["[fd00::1]:5353"]}`,
			"global", []string{"10.0.0.53"},
			"{\n  \"z.example\": [\n    \"1.2.3.4\",\n    \"1.2.3.5:5353\"\n  ],\n  \"acme.local\": [\n    \"[fd00::1]:5353\"\n  ],\n" +
				"  \"global\": [\n    \"10.0.0.53\"\n  ]\n}\n",
		},
		{
			"replaced in place, between the others",
			`{"a.local":["1.1.1.1"],"global":["9.9.9.9"],"b.local":["2.2.2.2"]}`,
			"global", []string{"10.0.0.53", "10.0.0.54"},
			"{\n  \"a.local\": [\n    \"1.1.1.1\"\n  ],\n  \"global\": [\n    \"10.0.0.53\",\n    \"10.0.0.54\"\n  ],\n" +
				"  \"b.local\": [\n    \"2.2.2.2\"\n  ]\n}\n",
		},
		{
			"key matched case-insensitively and without its trailing dot",
			`{"GLOBAL.": ["9.9.9.9"]}`, "global", []string{"10.0.0.53"}, globalOnly,
		},
		{
			"zone argument normalized",
			`{}`, "Global.", []string{"10.0.0.53"}, globalOnly,
		},
		{
			"a second spelling of the zone is dropped, the first keeps its place",
			`{"global":["1.1.1.1"],"a.local":["2.2.2.2"],"Global.":["3.3.3.3"]}`,
			"global", []string{"10.0.0.53"},
			"{\n  \"global\": [\n    \"10.0.0.53\"\n  ],\n  \"a.local\": [\n    \"2.2.2.2\"\n  ]\n}\n",
		},
		{
			"dual-stack servers with ports; 0 and 53 are left out, mapped IPv4 unmapped",
			"", "global",
			[]string{"10.0.0.53", "10.0.0.54:5353", "[fd00::35]:53", "[fd00::36]:5353", "::ffff:10.0.0.55"},
			"{\n  \"global\": [\n    \"10.0.0.53\",\n    \"10.0.0.54:5353\",\n    \"fd00::35\",\n    \"[fd00::36]:5353\",\n    \"10.0.0.55\"\n  ]\n}\n",
		},
		{
			"other values kept exactly: numbers, HTML characters, nesting",
			`{"odd": {"n": 1.50, "s": "<&>", "l": [true, null]}}`, "global", []string{"10.0.0.53"},
			"{\n  \"odd\": {\n    \"n\": 1.50,\n    \"s\": \"<&>\",\n    \"l\": [\n      true,\n      null\n    ]\n  },\n" +
				"  \"global\": [\n    \"10.0.0.53\"\n  ]\n}\n",
		},
		{
			"already forwarding there: returned unchanged, byte for byte",
			`{"acme.local":["1.2.3.4"],  "global": ["10.0.0.53", "[fd00::36]:5353"]}`,
			"global", []string{"10.0.0.53", "[fd00::36]:5353"},
			`{"acme.local":["1.2.3.4"],  "global": ["10.0.0.53", "[fd00::36]:5353"]}`,
		},
		{
			"same servers in another order is a change",
			`{"global": ["10.0.0.54", "10.0.0.53"]}`, "global", []string{"10.0.0.53", "10.0.0.54"},
			"{\n  \"global\": [\n    \"10.0.0.53\",\n    \"10.0.0.54\"\n  ]\n}\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SetStubDomain(tc.in, tc.zone, aps(t, tc.servers...))
			if err != nil {
				t.Fatalf("SetStubDomain: %v", err)
			}
			if got != tc.want {
				t.Fatalf("SetStubDomain:\n got %q\nwant %q", got, tc.want)
			}
			// A second apply is a no-op, byte for byte.
			again, err := SetStubDomain(got, tc.zone, aps(t, tc.servers...))
			if err != nil || again != got {
				t.Fatalf("second SetStubDomain = %q, %v; want %q", again, err, got)
			}
			// And what it wrote reads back.
			servers, err := StubDomainServers(got, tc.zone)
			if want, _ := formatServers(aps(t, tc.servers...)); err != nil || !slices.Equal(servers, want) {
				t.Fatalf("StubDomainServers = %q, %v; want %q", servers, err, want)
			}
		})
	}
}

func TestSetStubDomainErrors(t *testing.T) {
	ok := []string{"10.0.0.53"}
	tests := []struct {
		name    string
		in      string
		zone    string
		servers []netip.AddrPort
		wantErr string
	}{
		{"trailing comma", `{"acme.local": ["1.2.3.4"],}`, "global", aps(t, ok...),
			`stubDomains is not valid JSON: invalid character '}' looking for beginning of object key string at offset 27 (line 1)`},
		{"error on a later line", "{\"a\": [\"1\"]\n ,, }", "global", aps(t, ok...),
			`stubDomains is not valid JSON: invalid character ',' looking for beginning of object key string at offset 14 (line 2)`},
		{"truncated", `{"a": [`, "global", aps(t, ok...), `stubDomains is not valid JSON: unexpected end of input at offset 7`},
		{"two objects", `{} {}`, "global", aps(t, ok...), `stubDomains is not valid JSON: more data after the object at offset 4`},
		{"an array", `[]`, "global", aps(t, ok...), `stubDomains is not a JSON object but an array`},
		{"a string", `"global"`, "global", aps(t, ok...), `stubDomains is not a JSON object but a string`},
		{"null", `null`, "global", aps(t, ok...), `stubDomains is not a JSON object but null`},
		{"zone value a string", `{"global": "1.2.3.4"}`, "global", aps(t, ok...),
			`stubDomains["global"] is not a list of strings: "1.2.3.4"`},
		{"zone value null", `{"a.local": ["1.1.1.1"], "Global": null}`, "global", aps(t, ok...),
			`stubDomains["Global"] is not a list of strings: null`},
		{"zone value numbers", `{"global": [1, 2]}`, "global", aps(t, ok...),
			`stubDomains["global"] is not a list of strings: [1,2]`},
		{"no servers", `{}`, "global", nil, `no servers to forward to`},
		{"invalid server", `{}`, "global", []netip.AddrPort{{}}, `server 1 is not a valid IP address`},
		{"zoned IPv6 server", `{}`, "global", aps(t, "fe80::1%eth0"), `an IPv6 zone (%eth0) cannot be used`},
		{"unspecified server", `{}`, "global", aps(t, "0.0.0.0"), `the unspecified address is not a DNS server`},
		{"root zone", `{}`, ".", aps(t, ok...), `the root zone cannot be forwarded`},
		{"zone with a space", `{}`, "glo bal", aps(t, ok...), `zone "glo bal" is not a domain name: character ' '`},
		{"zone with an empty label", `{}`, "a..b", aps(t, ok...), `zone "a..b" is not a domain name: empty or over-long label`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SetStubDomain(tc.in, tc.zone, tc.servers)
			if err == nil {
				t.Fatalf("SetStubDomain = %q, want an error containing %q", got, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("SetStubDomain error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestRemoveStubDomain(t *testing.T) {
	tests := []struct {
		name, in, zone, want string
	}{
		{"the others are kept, in order", `{"b.local":["2.2.2.2"],"global":["10.0.0.53"],"a.local":["1.1.1.1:5353"]}`, "global",
			"{\n  \"b.local\": [\n    \"2.2.2.2\"\n  ],\n  \"a.local\": [\n    \"1.1.1.1:5353\"\n  ]\n}\n"},
		{"the last domain: the key goes", `{"global": ["10.0.0.53"]}`, "global", ""},
		{"every spelling of the zone goes", `{"global":["1.1.1.1"],"GLOBAL.":["2.2.2.2"]}`, "Global", ""},
		{"a value of the wrong shape goes too", `{"global":"1.2.3.4","a.local":["1.1.1.1"]}`, "global",
			"{\n  \"a.local\": [\n    \"1.1.1.1\"\n  ]\n}\n"},
		{"zone absent: unchanged, byte for byte", `{"a.local":  ["1.1.1.1"]}`, "global", `{"a.local":  ["1.1.1.1"]}`},
		{"a zone that merely ends like ours stays", `{"x.global":["1.1.1.1"]}`, "global", `{"x.global":["1.1.1.1"]}`},
		{"absent key", "", "global", ""},
		{"empty object stays as it is", "{}", "global", "{}"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RemoveStubDomain(tc.in, tc.zone)
			if err != nil {
				t.Fatalf("RemoveStubDomain: %v", err)
			}
			if got != tc.want {
				t.Fatalf("RemoveStubDomain:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	for _, bad := range []string{`{"global": [}`, `[]`} {
		if got, err := RemoveStubDomain(bad, "global"); err == nil {
			t.Errorf("RemoveStubDomain(%q) = %q, want an error", bad, got)
		}
	}
}

func TestRemoveStubDomainUndoesSet(t *testing.T) {
	// Remove after Set gives back the other domains (in SetStubDomain's format).
	in := `{"a.local": ["1.1.1.1"], "b.local": ["2.2.2.2", "[fd00::2]:5353"]}`
	set, err := SetStubDomain(in, "global", aps(t, "10.0.0.53", "[fd00::35]:5353"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := RemoveStubDomain(set, "global")
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"a.local\": [\n    \"1.1.1.1\"\n  ],\n  \"b.local\": [\n    \"2.2.2.2\",\n    \"[fd00::2]:5353\"\n  ]\n}\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestStubDomainServers(t *testing.T) {
	tests := []struct {
		name, in, zone string
		want           []string
		wantErr        string
	}{
		{name: "absent key", in: "", zone: "global", want: nil},
		{name: "zone absent", in: `{"a.local":["1.1.1.1"]}`, zone: "global", want: nil},
		{name: "configured", in: `{"a.local":["1.1.1.1"],"global":["10.0.0.53","[fd00::35]:5353"]}`, zone: "global",
			want: []string{"10.0.0.53", "[fd00::35]:5353"}},
		{name: "trailing dot and case", in: `{"Global.":["10.0.0.53"]}`, zone: "GLOBAL", want: []string{"10.0.0.53"}},
		{name: "last spelling wins, as in kube-dns", in: `{"global":["1.1.1.1"],"global.":["2.2.2.2"]}`, zone: "global",
			want: []string{"2.2.2.2"}},
		{name: "empty list is configured and empty", in: `{"global":[]}`, zone: "global", want: []string{}},
		{name: "wrong shape", in: `{"global": "1.2.3.4"}`, zone: "global", wantErr: `stubDomains["global"] is not a list of strings`},
		{name: "not an object", in: `[]`, zone: "global", wantErr: `stubDomains is not a JSON object but an array`},
		{name: "bad JSON", in: `{"global": ["1.2.3.4"]`, zone: "global", wantErr: `stubDomains is not valid JSON`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := StubDomainServers(tc.in, tc.zone)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("StubDomainServers = %q, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("StubDomainServers: %v", err)
			}
			if !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("StubDomainServers = %#v, want %#v", got, tc.want)
			}
		})
	}
}
