package stubdomain

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// crlfCorefile has comments, tabs, odd indentation and CRLF line endings.
var crlfCorefile = strings.ReplaceAll(`# cluster DNS, edited by hand
.:53 {
	errors   # log them
  health {
	    lameduck 5s
  }
	kubernetes cluster.local in-addr.arpa ip6.arpa {
		pods insecure
		fallthrough in-addr.arpa ip6.arpa
	}
	forward . 8.8.8.8 8.8.4.4
	cache 30
	reload
}
# the end
`, "\n", "\r\n")

// foreignCorefile already forwards global somewhere: somebody else's block.
var foreignCorefile = kubeadmCorefile + `global:53 {
    forward . 1.2.3.4
}
`

const (
	beginGlobal = "# BEGIN coredns-istio stubdomain global (managed by `coredns-istio stubdomain`; do not edit)\n"
	endGlobal   = "# END coredns-istio stubdomain global\n"
)

// globalBlock is our block for global forwarding to hosts, with "\n" line endings.
func globalBlock(hosts string) string {
	return beginGlobal + "global:53 {\n    errors\n    cache 30\n    forward . " + hosts + "\n}\n" + endGlobal
}

func TestServerBlock(t *testing.T) {
	want := "# BEGIN coredns-istio stubdomain global (managed by `coredns-istio stubdomain`; do not edit)\n" +
		"global:53 {\n" +
		"    errors\n" +
		"    cache 30\n" +
		"    forward . 10.0.0.53 fd00::35\n" +
		"}\n" +
		"# END coredns-istio stubdomain global\n"
	if got := ServerBlock("global", aps(t, "10.0.0.53", "fd00::35")); got != want {
		t.Fatalf("ServerBlock:\n%s\nwant:\n%s", got, want)
	}
	if got := ServerBlock("Mesh.Example.", aps(t, "10.0.0.53:5353", "[fd00::35]:5353", "[fd00::36]:53")); !strings.Contains(got,
		"mesh.example:53 {\n") || !strings.Contains(got, "forward . 10.0.0.53:5353 [fd00::35]:5353 fd00::36\n") ||
		!strings.HasPrefix(got, "# BEGIN coredns-istio stubdomain mesh.example (") {
		t.Fatalf("ServerBlock(Mesh.Example.) =\n%s", got)
	}
	// On its own it is a valid Corefile (an AKS coredns-custom *.server key).
	if err := ValidateCorefile(ServerBlock("global", aps(t, "10.0.0.53"))); err != nil {
		t.Fatalf("ServerBlock does not parse: %v", err)
	}
}

func TestSetServerBlock(t *testing.T) {
	const trailer = "example.org:53 {\n    whoami\n}\n"
	mesh := strings.ReplaceAll(globalBlock("10.9.9.9"), "global", "mesh")
	tests := []struct {
		name    string
		in      string
		zone    string
		servers []string
		want    string
	}{
		{"kubeadm: appended after a blank line", kubeadmCorefile, "global", []string{"10.0.0.53", "fd00::35"},
			kubeadmCorefile + "\n" + globalBlock("10.0.0.53 fd00::35")},
		{"CRLF, tabs and comments kept; the block uses CRLF", crlfCorefile, "global", []string{"10.0.0.53"},
			crlfCorefile + "\r\n" + strings.ReplaceAll(globalBlock("10.0.0.53"), "\n", "\r\n")},
		{"imports kept and not read", aksCorefile, "global", []string{"10.0.0.53"},
			aksCorefile + "\n" + globalBlock("10.0.0.53")},
		{"no newline at the end", strings.TrimSuffix(kubeadmCorefile, "\n"), "global", []string{"10.0.0.53"},
			kubeadmCorefile + "\n" + strings.TrimSuffix(globalBlock("10.0.0.53"), "\n")},
		{"empty Corefile", "", "global", []string{"10.0.0.53"}, globalBlock("10.0.0.53")},
		{"replaced in place with new servers, the rest untouched",
			kubeadmCorefile + "\n" + globalBlock("10.0.0.53") + "\n" + trailer, "global", []string{"10.0.0.60", "fd00::60"},
			kubeadmCorefile + "\n" + globalBlock("10.0.0.60 fd00::60") + "\n" + trailer},
		{"replaced in place at the very end without a newline",
			kubeadmCorefile + "\n" + strings.TrimSuffix(globalBlock("10.0.0.53"), "\n"), "global", []string{"10.0.0.60"},
			kubeadmCorefile + "\n" + strings.TrimSuffix(globalBlock("10.0.0.60"), "\n")},
		{"a block edited by hand inside the markers is rewritten",
			kubeadmCorefile + "\n" + beginGlobal + "global {\n  forward . 9.9.9.9\n  log\n}\n" + endGlobal, "global", []string{"10.0.0.53"},
			kubeadmCorefile + "\n" + globalBlock("10.0.0.53")},
		{"zone normalized", kubeadmCorefile, "GLOBAL.", []string{"10.0.0.53"}, kubeadmCorefile + "\n" + globalBlock("10.0.0.53")},
		{"dual-stack servers with ports", kubeadmCorefile, "global",
			[]string{"10.0.0.53", "10.0.0.54:5353", "[fd00::35]:53", "[fd00::36]:5353"},
			kubeadmCorefile + "\n" + globalBlock("10.0.0.53 10.0.0.54:5353 fd00::35 [fd00::36]:5353")},
		{"another zone's block is left alone", kubeadmCorefile + "\n" + mesh, "global", []string{"10.0.0.53"},
			kubeadmCorefile + "\n" + mesh + "\n" + globalBlock("10.0.0.53")},
		{"blocks that are not for global:53 do not conflict",
			".:53 {\n    forward . 8.8.8.8\n}\ncluster.local {\n    whoami\n}\nglobal:5353 {\n    whoami\n}\n" +
				"tls://global {\n    whoami\n}\nfoo.global:53 notglobal {\n    whoami\n}\n",
			"global", []string{"10.0.0.53"},
			".:53 {\n    forward . 8.8.8.8\n}\ncluster.local {\n    whoami\n}\nglobal:5353 {\n    whoami\n}\n" +
				"tls://global {\n    whoami\n}\nfoo.global:53 notglobal {\n    whoami\n}\n\n" + globalBlock("10.0.0.53")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SetServerBlock(tc.in, tc.zone, aps(t, tc.servers...))
			if err != nil {
				t.Fatalf("SetServerBlock: %v", err)
			}
			if got != tc.want {
				t.Fatalf("SetServerBlock:\n%s", UnifiedDiff("want→got", tc.want, got))
			}
			if err := ValidateCorefile(got); err != nil {
				t.Fatalf("result does not validate: %v", err)
			}
			// Idempotent: a second Set gives the same bytes.
			again, err := SetServerBlock(got, tc.zone, aps(t, tc.servers...))
			if err != nil || again != got {
				t.Fatalf("second SetServerBlock differs (%v):\n%s", err, UnifiedDiff("once→twice", got, again))
			}
			// What it wrote reads back.
			servers, err := ServerBlockServers(got, tc.zone)
			if want, _ := formatServers(aps(t, tc.servers...)); err != nil || !slices.Equal(servers, want) {
				t.Fatalf("ServerBlockServers = %q, %v; want %q", servers, err, want)
			}
		})
	}
}

// TestSetServerBlockRoundTrip: for every fixture, Set, Set again with other servers, Set back,
// and Remove gives back the original byte for byte.
func TestSetServerBlockRoundTrip(t *testing.T) {
	fixtures := map[string]string{
		"kubeadm":                kubeadmCorefile,
		"crlf":                   crlfCorefile,
		"aks import":             aksCorefile,
		"no final newline":       strings.TrimSuffix(kubeadmCorefile, "\n"),
		"crlf, no final newline": strings.TrimSuffix(crlfCorefile, "\r\n"),
		"trailing blank lines":   kubeadmCorefile + "\n\n",
		"empty":                  "",
		"blank line only":        "\n",
	}
	for name, orig := range fixtures {
		t.Run(name, func(t *testing.T) {
			once, err := SetServerBlock(orig, "global", aps(t, "10.0.0.53"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(once, orig) {
				t.Fatalf("SetServerBlock changed the original text:\n%s", UnifiedDiff(name, orig, once))
			}
			other, err := SetServerBlock(once, "global", aps(t, "10.0.0.54", "[fd00::35]:5353"))
			if err != nil || other == once {
				t.Fatalf("SetServerBlock with other servers = %v, changed: %v", err, other != once)
			}
			back, err := SetServerBlock(other, "global", aps(t, "10.0.0.53"))
			if err != nil || back != once {
				t.Fatalf("SetServerBlock back (%v):\n%s", err, UnifiedDiff(name, once, back))
			}
			removed, err := RemoveServerBlock(other, "global")
			if err != nil {
				t.Fatal(err)
			}
			if removed != orig {
				t.Fatalf("RemoveServerBlock did not restore the original:\n got %q\nwant %q", removed, orig)
			}
		})
	}
}

func TestSetServerBlockForeign(t *testing.T) {
	tests := []struct {
		name, block, wantKeys string
	}{
		{"bare zone", "global {\n    forward . 1.2.3.4\n}\n", `"global"`},
		{"zone:53", "global:53 {\n    forward . 1.2.3.4\n}\n", `"global:53"`},
		{"fully qualified", "global.:53 {\n    forward . 1.2.3.4\n}\n", `"global.:53"`},
		{"dns:// scheme", "dns://global:53 {\n    forward . 1.2.3.4\n}\n", `"dns://global:53"`},
		{"upper case", "GLOBAL {\n    forward . 1.2.3.4\n}\n", `"GLOBAL"`},
		{"one key of several", "example.org global:53 {\n    forward . 1.2.3.4\n}\n", `"example.org global:53"`},
		{"comma-separated keys over two lines", "example.org,\n  Global. {\n    forward . 1.2.3.4\n}\n", `"example.org Global."`},
		{"quoted key", "\"global:53\" {\n    forward . 1.2.3.4\n}\n", `"global:53"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := kubeadmCorefile + "# somebody else's\n" + tc.block
			got, err := SetServerBlock(in, "global", aps(t, "10.0.0.53"))
			if err == nil {
				t.Fatalf("SetServerBlock = %q, want ErrForeignBlock", got)
			}
			if !errors.Is(err, ErrForeignBlock) {
				t.Fatalf("error %v does not wrap ErrForeignBlock", err)
			}
			wantLine := fmt.Sprintf("Corefile:%d:", strings.Count(kubeadmCorefile, "\n")+2)
			if !strings.Contains(err.Error(), wantLine) || !strings.Contains(err.Error(), "server block "+tc.wantKeys) {
				t.Fatalf("error %q does not name %s and keys %s", err, wantLine, tc.wantKeys)
			}
		})
	}
	// The fixture the brief names, and our own block beside a foreign one.
	for _, in := range []string{foreignCorefile, foreignCorefile + "\n" + globalBlock("10.0.0.53")} {
		if _, err := SetServerBlock(in, "global", aps(t, "10.0.0.53")); !errors.Is(err, ErrForeignBlock) {
			t.Errorf("SetServerBlock(foreign) error = %v, want ErrForeignBlock", err)
		}
	}
}

func TestSetServerBlockErrors(t *testing.T) {
	ok := aps(t, "10.0.0.53")
	block := globalBlock("10.0.0.53")
	tests := []struct {
		name, in, zone, wantErr string
	}{
		{"unclosed brace", ".:53 {\n    errors\n    forward . 8.8.8.8 {\n        max_fails 2\n}\n", "global",
			"invalid Corefile: Corefile:1 - unbalanced braces: the server block \".:53\" opened here is never closed"},
		{"stray closing brace", kubeadmCorefile + "}\n", "global",
			"invalid Corefile: Corefile:21 - unbalanced braces: unexpected \"}\" outside a server block"},
		{"one-line block (CoreDNS wants } on its own line)", kubeadmCorefile + "global:53 { forward . 1.2.3.4 }\n", "global",
			"invalid Corefile: Corefile:21 - Error during parsing: Unexpected '}' because no matching opening brace"},
		{"unknown plugin", ".:53 {\n    errors\n    frobnicate\n}\n", "global",
			"invalid Corefile: Corefile:3 - Error during parsing: Unknown directive 'frobnicate'"},
		{"bad key", kubeadmCorefile + "a..b:53 {\n    whoami\n}\n", "global",
			`invalid Corefile: Corefile:21 - server block key "a..b:53": zone is not a valid domain name: a..b`},
		{"port out of range", "example.org:70000 {\n    whoami\n}\n", "global",
			`invalid Corefile: Corefile:1 - server block key "example.org:70000": port 70000 is out of range`},
		{"a zone served twice", kubeadmCorefile + "example.org {\n    whoami\n}\nexample.org.:53 {\n    whoami\n}\n", "global",
			"invalid Corefile: Corefile:24 - dns://example.org.:53 is already served by the server block at line 21"},
		{"BEGIN without END", kubeadmCorefile + "\n" + strings.TrimSuffix(block, endGlobal), "global",
			"Corefile:22: BEGIN marker for zone global without its END marker"},
		{"END without BEGIN", kubeadmCorefile + "\n" + strings.TrimPrefix(block, beginGlobal), "global",
			"Corefile:27: END marker for zone global without its BEGIN marker"},
		{"two BEGIN markers", kubeadmCorefile + "\n" + beginGlobal + block, "global",
			"Corefile:23: a second BEGIN marker for zone global (the first is at line 22)"},
		{"two blocks", kubeadmCorefile + "\n" + block + "\n" + block, "global",
			"Corefile:30: a second BEGIN marker for zone global (the first is at line 22)"},
		{"END before BEGIN", kubeadmCorefile + endGlobal + beginGlobal, "global",
			"Corefile:21: END marker for zone global comes before its BEGIN marker at line 22"},
		{"another zone's marker inside ours", kubeadmCorefile + beginGlobal + "# END coredns-istio stubdomain mesh\n" + endGlobal, "global",
			"Corefile:22: a coredns-istio marker for zone mesh inside the block for zone global (lines 21-23)"},
		{"root zone", kubeadmCorefile, ".", "the root zone cannot be forwarded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SetServerBlock(tc.in, tc.zone, ok)
			if err == nil {
				t.Fatalf("SetServerBlock = %q, want an error containing %q", got, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("SetServerBlock error\n %q\nwant it to contain\n %q", err, tc.wantErr)
			}
			if errors.Is(err, ErrForeignBlock) {
				t.Fatalf("error %v wraps ErrForeignBlock", err)
			}
		})
	}

	if _, err := SetServerBlock(kubeadmCorefile, "global", nil); err == nil || !strings.Contains(err.Error(), "no servers") {
		t.Errorf("no servers: error = %v", err)
	}
	var many []string
	for i := range 16 {
		many = append(many, fmt.Sprintf("10.0.0.%d", i+1))
	}
	if _, err := SetServerBlock(kubeadmCorefile, "global", aps(t, many...)); err == nil || !strings.Contains(err.Error(), "at most 15") {
		t.Errorf("16 servers: error = %v", err)
	}
}

func TestRemoveServerBlock(t *testing.T) {
	const trailer = "example.org:53 {\n    whoami\n}\n"
	mesh := strings.ReplaceAll(globalBlock("10.9.9.9"), "global", "mesh")
	tests := []struct {
		name, in, zone, want string
	}{
		{"appended block and its blank line", kubeadmCorefile + "\n" + globalBlock("10.0.0.53 fd00::35"), "global", kubeadmCorefile},
		{"a block in the middle", kubeadmCorefile + "\n" + globalBlock("10.0.0.53") + "\n" + trailer, "global",
			kubeadmCorefile + "\n" + trailer},
		{"no blank line before it", kubeadmCorefile + globalBlock("10.0.0.53"), "global", kubeadmCorefile},
		{"zone spelled differently", kubeadmCorefile + "\n" + globalBlock("10.0.0.53"), "Global.", kubeadmCorefile},
		{"only our block", globalBlock("10.0.0.53"), "global", ""},
		{"without the block: unchanged", kubeadmCorefile, "global", kubeadmCorefile},
		{"without the block, even unparsable: unchanged", ".:53 {\n", "global", ".:53 {\n"},
		{"another zone's block stays", kubeadmCorefile + "\n" + mesh + "\n" + globalBlock("10.0.0.53"), "global",
			kubeadmCorefile + "\n" + mesh},
		{"a foreign block for the zone is not ours to remove", foreignCorefile, "global", foreignCorefile},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RemoveServerBlock(tc.in, tc.zone)
			if err != nil {
				t.Fatalf("RemoveServerBlock: %v", err)
			}
			if got != tc.want {
				t.Fatalf("RemoveServerBlock:\n%s", UnifiedDiff("want→got", tc.want, got))
			}
		})
	}
	for name, in := range map[string]string{
		"two BEGIN markers":      kubeadmCorefile + "\n" + beginGlobal + globalBlock("10.0.0.53"),
		"BEGIN without END":      kubeadmCorefile + "\n" + beginGlobal,
		"the rest is unparsable": kubeadmCorefile + "}\n\n" + globalBlock("10.0.0.53"),
	} {
		if got, err := RemoveServerBlock(in, "global"); err == nil {
			t.Errorf("%s: RemoveServerBlock = %q, want an error", name, got)
		}
	}
}

func TestServerBlockServers(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
		wantErr  string
	}{
		{name: "absent", in: kubeadmCorefile, want: nil},
		{name: "absent, another zone's block present", in: kubeadmCorefile + strings.ReplaceAll(globalBlock("10.9.9.9"), "global", "mesh")},
		{name: "foreign block is not ours", in: foreignCorefile, want: nil},
		{name: "ours", in: kubeadmCorefile + "\n" + globalBlock("10.0.0.53 [fd00::35]:5353"), want: []string{"10.0.0.53", "[fd00::35]:5353"}},
		{name: "CRLF", in: strings.ReplaceAll(kubeadmCorefile+"\n"+globalBlock("10.0.0.53 fd00::35"), "\n", "\r\n"),
			want: []string{"10.0.0.53", "fd00::35"}},
		{name: "edited by hand, with options", in: beginGlobal + "global {\n  forward . 1.1.1.1 2.2.2.2 {\n    max_fails 3\n  }\n}\n" + endGlobal,
			want: []string{"1.1.1.1", "2.2.2.2"}},
		{name: "no forward line", in: kubeadmCorefile + beginGlobal + "global {\n  whoami\n}\n" + endGlobal,
			wantErr: "Corefile:21: the coredns-istio block for global has no forward line"},
		{name: "forward without servers", in: kubeadmCorefile + beginGlobal + "global {\n  forward .\n}\n" + endGlobal,
			wantErr: "Corefile:23: the forward line of the coredns-istio block for global names no servers"},
		{name: "unbalanced markers", in: kubeadmCorefile + beginGlobal, wantErr: "without its END marker"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ServerBlockServers(tc.in, "global")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ServerBlockServers = %q, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("ServerBlockServers = %#v, %v; want %#v", got, err, tc.want)
			}
		})
	}
}

func TestValidateCorefile(t *testing.T) {
	valid := map[string]string{
		"kubeadm":       kubeadmCorefile,
		"crlf":          crlfCorefile,
		"aks imports":   aksCorefile,
		"foreign block": foreignCorefile,
		"snippet":       "(common) {\n    errors\n    cache 30\n}\n.:53 {\n    import common\n    forward . 8.8.8.8\n}\n",
		"same zone on other ports and transports": "global {\n    whoami\n}\nglobal:5353 {\n    whoami\n}\n" +
			"tls://global {\n    whoami\n}\n",
		"same zone, bound to different addresses": "global {\n    bind 127.0.0.1\n    whoami\n}\nglobal {\n    bind 127.0.0.2\n    whoami\n}\n",
		"reverse zone in CIDR notation":           "10.0.0.0/8 {\n    whoami\n}\n",
		"empty":                                   "",
		"environment placeholders in keys":        ".:{$DNS_PORT} {\n    whoami\n}\n{$EXTRA_ZONE} {\n    whoami\n}\n",
	}
	for name, in := range valid {
		if err := ValidateCorefile(in); err != nil {
			t.Errorf("%s: ValidateCorefile: %v", name, err)
		}
	}
	invalid := []struct{ name, in, wantErr string }{
		{"missing closing brace", ".:53 {\n    errors\n", "Corefile:2 - Syntax error: Unexpected token 'errors', expecting '}'"},
		{"unknown directive in a snippet", "(common) {\n    nonsense\n}\n.:53 {\n    import common\n}\n",
			"Corefile:2 - Error during parsing: Unknown directive 'nonsense'"},
		{"bad key", "a..b {\n    whoami\n}\n", `Corefile:1 - server block key "a..b"`},
		{"invalid reverse CIDR", "0::/64 {\n    whoami\n}\n", `Corefile:1 - server block key "0::/64"`},
		{"same zone twice, one key spelled differently", "global {\n    whoami\n}\nexample.org dns://GLOBAL.:53 {\n    whoami\n}\n",
			"Corefile:4 - dns://global.:53 is already served by the server block at line 1"},
		{"an import with two arguments", ".:53 {\n    import a b\n}\n", "Corefile:2 - Error during parsing: Import takes only one argument"},
	}
	for _, tc := range invalid {
		err := ValidateCorefile(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: ValidateCorefile = %v, want an error containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestHasReload(t *testing.T) {
	tests := []struct {
		name, in string
		want     bool
	}{
		{"kubeadm", kubeadmCorefile, true},
		{"crlf", crlfCorefile, true},
		{"without reload", strings.Replace(kubeadmCorefile, "    reload\n", "", 1), false},
		{"reload commented out", strings.Replace(kubeadmCorefile, "    reload\n", "    # reload\n", 1), false},
		{"reload only in a second block", ".:53 {\n    whoami\n}\nexample.org {\n    reload 10s\n    whoami\n}\n", true},
		{"the word reload as an argument", ".:53 {\n    hosts reload {\n        fallthrough\n    }\n}\n", false},
		{"reload from a snippet", "(s) {\n    reload\n}\n.:53 {\n    import s\n}\n", true},
		{"unparsable", ".:53 {\n    reload\n", false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		if got := HasReload(tc.in); got != tc.want {
			t.Errorf("%s: HasReload = %v, want %v", tc.name, got, tc.want)
		}
	}
}
