package istioglobal

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coredns/caddy"
)

const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c1
  cluster: {server: "https://127.0.0.1:6443"}
- name: c2
  cluster: {server: "https://127.0.0.2:6443"}
users:
- name: u
  user: {token: "t"}
contexts:
- name: one
  context: {cluster: c1, user: u}
- name: two
  context: {cluster: c2, user: u}
current-context: one
`

func TestParse(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	seFile := filepath.Join(dir, "se.yaml")
	for path, data := range map[string]string{kubeconfig: testKubeconfig, seFile: ""} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a cluster, whatever runs the test

	for i, tc := range []struct {
		input string
		err   string // substring; empty: must parse
		check func(t *testing.T, ig *IstioGlobal)
	}{
		{input: `istioglobal {
			kubeconfig ` + kubeconfig + `
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			wantZones(t, ig, "global.")
			k := kubeOf(t, ig)
			if k.config.Host != "https://127.0.0.1:6443" || ig.ttl != 30 {
				t.Errorf("host %q ttl %d, want the current context and the default TTL", k.config.Host, ig.ttl)
			}
		}},
		{input: `istioglobal global mesh {
			kubeconfig ` + kubeconfig + ` two
			namespaces foo bar
			ttl 0
			fallthrough bar.global
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			wantZones(t, ig, "global.", "mesh.")
			k := kubeOf(t, ig)
			if k.config.Host != "https://127.0.0.2:6443" || !slices.Equal(k.namespaces, []string{"foo", "bar"}) {
				t.Errorf("host %q namespaces %v, want context two and foo bar", k.config.Host, k.namespaces)
			}
			if ig.ttl != 0 || !ig.Fall.Through("x.bar.global.") || ig.Fall.Through("x.foo.global.") {
				t.Errorf("ttl %d fallthrough %v", ig.ttl, ig.Fall.Zones)
			}
		}},
		{input: `istioglobal {
			files ` + seFile + ` ` + dir + `
			ttl 3600
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if len(ig.sources) != 1 || ig.ttl != 3600 {
				t.Fatalf("%d sources, want only the files", len(ig.sources))
			}
			if fs, ok := ig.sources[0].(*fileSource); !ok || !slices.Equal(fs.paths, []string{seFile, dir}) {
				t.Errorf("sources %#v", ig.sources[0])
			}
		}},
		{input: `istioglobal {
			files ` + seFile + `
			kubeconfig ` + kubeconfig + `
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if len(ig.sources) != 2 {
				t.Errorf("%d sources, want files and kubeconfig feeding one table", len(ig.sources))
			}
		}},
		{input: `istioglobal {
			fallthrough
			files ` + seFile + `
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if !ig.Fall.Through("anything.global.") {
				t.Error("fallthrough with no zones must cover every zone")
			}
		}},

		{input: `istioglobal {
			files ` + seFile + `
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if v4, v6 := ig.allocator.Capacity(); v4 == 0 || v6 == 0 || ig.store != nil {
				t.Errorf("default: capacity %d/%d store %v, want both default ranges, not persisted", v4, v6, ig.store)
			}
		}},
		{input: `istioglobal {
			files ` + seFile + `
			autoallocate off
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if ig.allocator != nil {
				t.Error("autoallocate off still allocates")
			}
		}},
		{input: `istioglobal {
			kubeconfig ` + kubeconfig + `
			autoallocate 240.241.0.0/24
			allocations istio-system/coredns-istio-vips 10m
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if v4, v6 := ig.allocator.Capacity(); v4 == 0 || v6 != 0 {
				t.Errorf("capacity %d/%d, want IPv4 only", v4, v6)
			}
			if ig.store == nil || ig.store.Key() != "istio-system/coredns-istio-vips" || len(ig.sources) != 2 {
				t.Errorf("store %+v, sources %d", ig.store, len(ig.sources))
			}
		}},

		{input: `istioglobal {
			files ` + seFile + `
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if ig.txt {
				t.Error("TXT facts on by default: they disclose the mesh's namespaces and names")
			}
		}},
		{input: `istioglobal {
			files ` + seFile + `
			txt on
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if !ig.txt {
				t.Error("txt on answers no TXT")
			}
		}},
		{input: `istioglobal {
			files ` + seFile + `
			debug on
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if !ig.txt {
				t.Error("the deprecated debug on answers no TXT")
			}
		}},

		{input: `istioglobal {
			files ` + seFile + `
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if ig.export.meshOnly || ig.export.defaultTo != nil {
				t.Errorf("default export policy %+v, want any namespace, empty exportTo = *", ig.export)
			}
		}},
		{input: `istioglobal {
			files ` + seFile + `
			visibility mesh
			default_export_to . istio-system
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if !ig.export.meshOnly || !slices.Equal(ig.export.defaultTo, []string{".", "istio-system"}) {
				t.Errorf("export policy %+v", ig.export)
			}
		}},

		// Errors.
		{input: `istioglobal {
			files ` + seFile + `
			txt maybe
		}`, err: "needs on or off"},
		{input: `istioglobal {
			files ` + seFile + `
			visibility some
		}`, err: "want any"},
		{input: `istioglobal {
			files ` + seFile + `
			default_export_to
		}`, err: "needs values"},
		{input: `istioglobal {
			files ` + seFile + `
			default_export_to ~ foo
		}`, err: `"~" (no namespace) must be the only value`},
		{input: `istioglobal {
			files ` + seFile + `
			default_export_to Not_A_Namespace
		}`, err: "not a namespace"},
		{input: `istioglobal {
			files ` + seFile + `
			autoallocate
		}`, err: "needs CIDRs, or off"},
		{input: `istioglobal {
			files ` + seFile + `
			autoallocate 240.241.0.0/33
		}`, err: `"240.241.0.0/33" is not a CIDR`},
		{input: `istioglobal {
			files ` + seFile + `
			autoallocate 240.241.0.0/16 240.241.1.0/24
		}`, err: "overlaps"},
		{input: `istioglobal {
			kubeconfig ` + kubeconfig + `
			allocations coredns-istio-vips
		}`, err: "is not NAMESPACE/NAME"},
		{input: `istioglobal {
			kubeconfig ` + kubeconfig + `
			allocations istio-system/Bad_Name
		}`, err: "is not NAMESPACE/NAME"},
		{input: `istioglobal {
			kubeconfig ` + kubeconfig + `
			allocations istio-system/vips soon
		}`, err: `grace "soon" is not a duration`},
		{input: `istioglobal {
			kubeconfig ` + kubeconfig + `
			autoallocate off
			allocations istio-system/vips
		}`, err: "needs autoallocate, which is off"},
		{input: `istioglobal {
			files ` + seFile + `
			allocations istio-system/vips
		}`, err: "needs the Kubernetes API"},
		{input: `istioglobal`, err: "in-cluster"},
		{input: `istioglobal {
			kubeconfig
		}`, err: "in-cluster"},
		{input: `istioglobal {
			kubeconfig /does/not/exist
		}`, err: "/does/not/exist"},
		{input: `istioglobal {
			kubeconfig ` + kubeconfig + ` nosuchcontext
		}`, err: "nosuchcontext"},
		{input: `istioglobal {
			kubeconfig ` + kubeconfig + ` one extra
		}`, err: "at most a path and a context"},
		{input: `istioglobal {
			kubeconfig ` + kubeconfig + `
			kubeconfig ` + kubeconfig + `
		}`, err: "more than once"},
		{input: `istioglobal {
			files
		}`, err: "at least one path"},
		{input: `istioglobal {
			files /no/such/file.yaml
		}`, err: "/no/such/file.yaml"},
		{input: `istioglobal {
			files ` + seFile + `
			namespaces
		}`, err: "at least one namespace"},
		{input: `istioglobal {
			files ` + seFile + `
			namespaces foo Not_A_Namespace
		}`, err: `"Not_A_Namespace" is not a namespace name`},
		{input: `istioglobal {
			files ` + seFile + `
			ttl
		}`, err: "exactly one number"},
		{input: `istioglobal {
			files ` + seFile + `
			ttl 10 20
		}`, err: "exactly one number"},
		{input: `istioglobal {
			files ` + seFile + `
			ttl abc
		}`, err: `"abc" is not a number of seconds`},
		{input: `istioglobal {
			files ` + seFile + `
			ttl -1
		}`, err: `"-1" is not a number of seconds`},
		{input: `istioglobal {
			files ` + seFile + `
			ttl 3601
		}`, err: "from 0 to 3600"},
		{input: `istioglobal global in-addr.arpa {
			files ` + seFile + `
			nameserver 10.96.0.53 FD00::53
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			want := nameServer{name: "ns.dns.global.", addrs: []netip.Addr{netip.MustParseAddr("10.96.0.53"), netip.MustParseAddr("fd00::53")}}
			if !reflect.DeepEqual(ig.ns, want) {
				t.Errorf("nameserver %+v, want %+v", ig.ns, want)
			}
		}},
		{input: `istioglobal in-addr.arpa mesh {
			files ` + seFile + `
			nameserver istiocoredns.istio-system.svc.cluster.local
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if ig.ns.name != "istiocoredns.istio-system.svc.cluster.local." || len(ig.ns.addrs) != 0 {
				t.Errorf("nameserver %+v, want the name elsewhere, no addresses", ig.ns)
			}
		}},
		{input: `istioglobal in-addr.arpa mesh {
			files ` + seFile + `
		}`, check: func(t *testing.T, ig *IstioGlobal) {
			if ig.ns.name != "ns.dns.mesh." || len(ig.ns.addrs) != 0 {
				t.Errorf("default nameserver %+v, want ns.dns. and the first forward zone", ig.ns)
			}
		}},
		{input: `istioglobal {
			files ` + seFile + `
			nameserver
		}`, err: "needs the addresses"},
		{input: `istioglobal {
			files ` + seFile + `
			nameserver ns.x.global
		}`, err: "inside the zones served here"},
		{input: `istioglobal {
			files ` + seFile + `
			nameserver 10.0.0.1 nope
		}`, err: `"nope" is not an IP address`},
		{input: `istioglobal {
			files ` + seFile + `
			nameserver 0.0.0.0
		}`, err: `"0.0.0.0" is not an IP address`},
		{input: `istioglobal {
			files ` + seFile + `
			nonsense
		}`, err: `unknown property "nonsense"`},
		{input: `istioglobal {
			files ` + seFile + `
		}
		istioglobal {
			files ` + seFile + `
		}`, err: "can only be used once per Server Block"},
	} {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			c := caddy.NewTestController("dns", tc.input)
			c.ServerBlockKeys = []string{"global.:53"}
			ig, err := parse(c)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parse(%q) error %v, want one containing %q", tc.input, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse(%q): %v", tc.input, err)
			}
			tc.check(t, ig)
		})
	}
}

func TestSetupRegistersPlugin(t *testing.T) {
	dir := t.TempDir()
	c := caddy.NewTestController("dns", "istioglobal {\n files "+dir+"\n}")
	if err := setup(c); err != nil {
		t.Fatal(err)
	}
	c = caddy.NewTestController("dns", "istioglobal {\n ttl x\n}")
	if err := setup(c); err == nil || !strings.Contains(err.Error(), "plugin/istioglobal") {
		t.Errorf("setup error %v, want it wrapped by plugin.Error", err)
	}
}

func wantZones(t *testing.T, ig *IstioGlobal, zones ...string) {
	t.Helper()
	if !slices.Equal(ig.Zones, zones) {
		t.Errorf("zones %v, want %v", ig.Zones, zones)
	}
}

func kubeOf(t *testing.T, ig *IstioGlobal) *kubeSource {
	t.Helper()
	for _, s := range ig.sources {
		if k, ok := s.(*kubeSource); ok {
			return k
		}
	}
	t.Fatal("no Kubernetes source")
	return nil
}

func TestDefaultNameServerAnswersBindAddresses(t *testing.T) {
	for _, tc := range []struct {
		listen []string
		want   []netip.Addr
	}{
		{[]string{""}, nil},
		{[]string{"127.0.0.1", "::1"}, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}},
		{[]string{"127.0.0.1", "0.0.0.0"}, nil}, // one wildcard: no address all clients reach us at
	} {
		if got := defaultNameServer([]string{"global."}, tc.listen); got.name != "ns.dns.global." || !slices.Equal(got.addrs, tc.want) {
			t.Errorf("bind %q: %+v, want ns.dns.global. with %v", tc.listen, got, tc.want)
		}
	}
}
