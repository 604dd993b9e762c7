package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
)

// stubdomainResult is how one `coredns-istio stubdomain` run ended.
type stubdomainResult struct {
	code           int
	stdout, stderr string
}

func (r stubdomainResult) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// stubdomain runs `coredns-istio stubdomain ARGS... --kubeconfig ADMIN` and returns how it
// ended; it fails the test only if the binary cannot run or takes over a minute.
func stubdomain(t testing.TB, args ...string) stubdomainResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, corednsBinary, append(append([]string{"stubdomain"}, args...), "--kubeconfig", kubeconfig)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) || ctx.Err() != nil {
		t.Fatalf("stubdomain %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stubdomainResult{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// mustStubdomain is stubdomain that fails the test unless the exit status is code.
func mustStubdomain(t testing.TB, code int, args ...string) stubdomainResult {
	t.Helper()
	r := stubdomain(t, args...)
	if r.code != code {
		t.Fatalf("stubdomain %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	return r
}

func getConfigMap(t testing.TB, namespace, name string) *corev1.ConfigMap {
	t.Helper()
	cm, err := kubeClient.CoreV1().ConfigMaps(namespace).Get(apiContext(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ConfigMap %s/%s: %v", namespace, name, err)
	}
	return cm
}

// applyConfigMap creates (or replaces) a ConfigMap for the test; it is deleted at the end.
func applyConfigMap(t testing.TB, namespace, name string, labels, data map[string]string) *corev1.ConfigMap {
	t.Helper()
	return apply(t, kubeClient.CoreV1().ConfigMaps(namespace), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Data:       data,
	})
}

// deleteConfigMapAtEnd deletes a ConfigMap that the binary creates, when the test ends.
func deleteConfigMapAtEnd(t testing.TB, namespace, name string) {
	t.Cleanup(func() {
		err := kubeClient.CoreV1().ConfigMaps(namespace).Delete(apiContext(t), name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting ConfigMap %s/%s: %v", namespace, name, err)
		}
	})
}

// stubDomains decodes the stubDomains key of a kube-dns ConfigMap.
func stubDomains(t testing.TB, cm *corev1.ConfigMap) map[string][]string {
	t.Helper()
	var m map[string][]string
	if err := json.Unmarshal([]byte(cm.Data["stubDomains"]), &m); err != nil {
		t.Fatalf("stubDomains of %s/%s: %v\n%s", cm.Namespace, cm.Name, err, cm.Data["stubDomains"])
	}
	return m
}

// kubeadmCorefileReload is the Corefile kubeadm writes into kube-system/coredns.
var kubeadmCorefileReload = readFile("../internal/stubdomain/testdata/kubeadm.Corefile")

// kubeadmCorefile is the same without reload, as older kubeadm wrote it.
var kubeadmCorefile = strings.Replace(kubeadmCorefileReload, "    reload\n", "", 1)

// aksCorefile is the shape of AKS's Corefile: it imports coredns-custom's *.server keys.
var aksCorefile = readFile("../internal/stubdomain/testdata/aks.Corefile")

// startSeedDNS runs coredns-istio serving the global zone from a ServiceEntry file:
// httpbin.bar.global → 127.255.0.2. It is what the cluster DNS forwards to.
func startSeedDNS(t *testing.T) *coreDNS {
	t.Helper()
	seed, err := filepath.Abs("../corefile/serviceentries/httpbin-bar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoreDNS(t, filesCorefile(seed))
	c.waitReady(t, 20*time.Second)
	return c
}

// digShort returns dig +short's answer for an A query, trimmed.
func digShort(t *testing.T, addr, name string) string {
	t.Helper()
	return strings.TrimSpace(dig(t, addr, name, "A", "+short"))
}

// TestStubdomainKubeDNS merges into an existing kube-dns ConfigMap, idempotently, and removes
// exactly what it added; --dry-run writes nothing; status tells matches apart.
func TestStubdomainKubeDNS(t *testing.T) {
	const ns = "sd-kubedns"
	createNamespace(t, ns)
	orig := map[string]string{
		"stubDomains":         "{\"acme.local\": [\"1.2.3.4\"],\n \"corp.example\": [\"10.1.0.1:5353\"]}\n",
		"upstreamNameservers": "[\"8.8.8.8\", \"8.8.4.4\"]\n",
		"unrelated":           "  keep\tme exactly \n\n",
	}
	created := applyConfigMap(t, ns, "kube-dns", nil, orig)
	others := func(cm *corev1.ConfigMap) {
		t.Helper()
		for _, k := range []string{"upstreamNameservers", "unrelated"} {
			if cm.Data[k] != orig[k] {
				t.Errorf("%s changed: %q, was %q", k, cm.Data[k], orig[k])
			}
		}
		sd := stubDomains(t, cm)
		if !slices.Equal(sd["acme.local"], []string{"1.2.3.4"}) || !slices.Equal(sd["corp.example"], []string{"10.1.0.1:5353"}) {
			t.Errorf("other stub domains changed: %v", sd)
		}
	}

	// --dry-run: the diff, nothing written.
	r := mustStubdomain(t, 0, "apply", "--dns-namespace", ns, "--ip", "10.0.0.53", "--dry-run")
	for _, want := range []string{"target: kube-dns (", "--- sd-kubedns/kube-dns stubDomains", `+    "10.0.0.53"`, "nothing written"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run: no %q in\n%s", want, r)
		}
	}
	if cm := getConfigMap(t, ns, "kube-dns"); cm.ResourceVersion != created.ResourceVersion {
		t.Errorf("--dry-run wrote: resourceVersion %s → %s", created.ResourceVersion, cm.ResourceVersion)
	}

	r = mustStubdomain(t, 0, "apply", "--dns-namespace", ns, "--ip", "10.0.0.53")
	if !strings.Contains(r.stdout, "ConfigMap sd-kubedns/kube-dns: updated") {
		t.Errorf("apply: %s", r)
	}
	applied := getConfigMap(t, ns, "kube-dns")
	others(applied)
	if sd := stubDomains(t, applied); !slices.Equal(sd["global"], []string{"10.0.0.53"}) || len(sd) != 3 || len(applied.Data) != 3 {
		t.Errorf("after apply: %q", applied.Data)
	}

	// Idempotent: the second apply writes nothing.
	r = mustStubdomain(t, 0, "apply", "--dns-namespace", ns, "--ip", "10.0.0.53")
	if !strings.Contains(r.stdout, "unchanged") {
		t.Errorf("second apply: %s", r)
	}
	if cm := getConfigMap(t, ns, "kube-dns"); cm.ResourceVersion != applied.ResourceVersion {
		t.Errorf("second apply wrote: resourceVersion %s → %s", applied.ResourceVersion, cm.ResourceVersion)
	}

	// status: 0 when it matches, 1 when not.
	r = mustStubdomain(t, 0, "status", "--dns-namespace", ns, "--ip", "10.0.0.53")
	if !strings.Contains(r.stdout, "global: forwards to 10.0.0.53") || !strings.Contains(r.stdout, "matches") {
		t.Errorf("status: %s", r)
	}
	r = mustStubdomain(t, 1, "status", "--dns-namespace", ns, "--ip", "10.0.0.54,10.0.0.53")
	if !strings.Contains(r.stdout, "differs") {
		t.Errorf("status against other servers: %s", r)
	}
	mustStubdomain(t, 1, "status", "--dns-namespace", ns, "--ip", "10.0.0.53", "--zones", "global,mesh")

	// remove: exactly our entry goes.
	r = mustStubdomain(t, 0, "remove", "--dns-namespace", ns, "--dry-run")
	if !strings.Contains(r.stdout, `-    "10.0.0.53"`) {
		t.Errorf("remove --dry-run: %s", r)
	}
	if cm := getConfigMap(t, ns, "kube-dns"); cm.ResourceVersion != applied.ResourceVersion {
		t.Error("remove --dry-run wrote")
	}
	mustStubdomain(t, 0, "remove", "--dns-namespace", ns)
	removed := getConfigMap(t, ns, "kube-dns")
	others(removed)
	if sd := stubDomains(t, removed); len(sd) != 2 || sd["global"] != nil {
		t.Errorf("after remove: %v", sd)
	}
	r = mustStubdomain(t, 0, "remove", "--dns-namespace", ns)
	if !strings.Contains(r.stdout, "unchanged") || getConfigMap(t, ns, "kube-dns").ResourceVersion != removed.ResourceVersion {
		t.Errorf("second remove wrote: %s", r)
	}
	mustStubdomain(t, 1, "status", "--dns-namespace", ns, "--ip", "10.0.0.53")
}

// TestStubdomainRefusesBrokenConfig: unparsable config and a server block someone else wrote
// are refused with a message naming the problem, and nothing is written.
func TestStubdomainRefusesBrokenConfig(t *testing.T) {
	for _, tc := range []struct {
		ns, target, configMap string
		data                  map[string]string
		want                  []string // in stderr
	}{
		{"sd-badjson", "kube-dns", "kube-dns",
			map[string]string{"stubDomains": `{"acme.local": ["1.2.3.4"],}`},
			[]string{"sd-badjson/kube-dns", "stubDomains is not valid JSON"}},
		{"sd-badcorefile", "coredns", "coredns",
			map[string]string{"Corefile": kubeadmCorefileReload + "acme.local:53 {\n    forward . 1.2.3.4\n"},
			[]string{"sd-badcorefile/coredns", "Corefile"}},
		{"sd-foreign", "auto", "coredns",
			map[string]string{"Corefile": kubeadmCorefileReload + "global:53 {\n    forward . 10.9.9.9\n}\n"},
			[]string{"sd-foreign/coredns", "did not write", "refusing"}},
	} {
		t.Run(tc.ns, func(t *testing.T) {
			createNamespace(t, tc.ns)
			before := applyConfigMap(t, tc.ns, tc.configMap, nil, tc.data)
			r := stubdomain(t, "apply", "--target", tc.target, "--dns-namespace", tc.ns, "--ip", "10.0.0.53")
			if r.code == 0 {
				t.Errorf("apply succeeded: %s", r)
			}
			for _, want := range tc.want {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("no %q in the message: %s", want, r)
				}
			}
			t.Logf("apply: %s", strings.TrimSpace(r.stderr))
			// status cannot tell either: 2 for an error; 1 when the zone is someone else's.
			wantStatus := 2
			if tc.ns == "sd-foreign" {
				wantStatus = 1
			}
			if r := mustStubdomain(t, wantStatus, "status", "--target", tc.target, "--dns-namespace", tc.ns, "--ip", "10.0.0.53"); tc.ns == "sd-foreign" && !strings.Contains(r.stdout, "not configured by coredns-istio") {
				t.Errorf("status: %s", r)
			}
			if tc.ns == "sd-foreign" {
				mustStubdomain(t, 0, "remove", "--dns-namespace", tc.ns) // Not ours: left alone.
			}
			if cm := getConfigMap(t, tc.ns, tc.configMap); cm.ResourceVersion != before.ResourceVersion {
				t.Errorf("written: resourceVersion %s → %s: %q", before.ResourceVersion, cm.ResourceVersion, cm.Data)
			}
		})
	}
}

// TestStubdomainCoreDNS writes our block into a kubeadm Corefile, warns that it has no reload,
// and the block, run as a Corefile, forwards the global zone to coredns-istio for real.
func TestStubdomainCoreDNS(t *testing.T) {
	seed := startSeedDNS(t)
	const ns = "sd-coredns"
	createNamespace(t, ns)
	before := applyConfigMap(t, ns, "coredns", map[string]string{"k8s-app": "kube-dns"}, map[string]string{"Corefile": kubeadmCorefile})

	r := mustStubdomain(t, 0, "apply", "--dns-namespace", ns, "--ip", seed.Addr)
	if !strings.Contains(r.stdout, "target: coredns (ConfigMap sd-coredns/coredns has a Corefile)") {
		t.Errorf("target: %s", r)
	}
	if !strings.Contains(r.stderr, "warning:") || !strings.Contains(r.stderr, "reload") {
		t.Errorf("no warning about the missing reload: %s", r)
	}
	cm := getConfigMap(t, ns, "coredns")
	corefile := cm.Data["Corefile"]
	if !strings.HasPrefix(corefile, kubeadmCorefile) {
		t.Errorf("the existing blocks changed:\n%s", corefile)
	}
	if cm.Labels["k8s-app"] != "kube-dns" || len(cm.Labels) != 1 {
		t.Errorf("labels changed: %v", cm.Labels)
	}
	if r := mustStubdomain(t, 0, "apply", "--dns-namespace", ns, "--ip", seed.Addr); !strings.Contains(r.stdout, "unchanged") ||
		getConfigMap(t, ns, "coredns").ResourceVersion != cm.ResourceVersion {
		t.Errorf("second apply wrote: %s", r)
	}
	mustStubdomain(t, 0, "status", "--dns-namespace", ns, "--ip", seed.Addr)

	// Our block, on its own, is a working Corefile: on a test port it forwards to the seed.
	block := managedBlock(t, corefile, "global")
	if !strings.Contains(block, "global:53 {") || !strings.Contains(block, "forward . "+seed.Addr) {
		t.Fatalf("block:\n%s", block)
	}
	t.Logf("the block written:\n%s", block)
	cluster := startCoreDNS(t, strings.Replace(block, "global:53 {", "global:{{.Port}} {\n    bind 127.0.0.1", 1))
	if got := digShort(t, cluster.Addr, "httpbin.bar.global"); got != "127.255.0.2" {
		t.Errorf("dig httpbin.bar.global through the block: %q", got)
	}

	// remove gives the Corefile back byte for byte.
	mustStubdomain(t, 0, "remove", "--dns-namespace", ns)
	if got := getConfigMap(t, ns, "coredns").Data["Corefile"]; got != before.Data["Corefile"] {
		t.Errorf("after remove:\n%s", got)
	}

	// With reload: no warning.
	const ns2 = "sd-coredns-reload"
	createNamespace(t, ns2)
	applyConfigMap(t, ns2, "coredns", nil, map[string]string{"Corefile": kubeadmCorefileReload})
	r = mustStubdomain(t, 0, "apply", "--dns-namespace", ns2, "--ip", "10.0.0.53")
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("a warning with reload present: %s", r)
	}
}

// managedBlock returns the lines between our BEGIN and END markers for zone in corefile.
func managedBlock(t *testing.T, corefile, zone string) string {
	t.Helper()
	begin := "# BEGIN coredns-istio stubdomain " + zone + " "
	end := "# END coredns-istio stubdomain " + zone
	var out []string
	in := false
	for line := range strings.SplitSeq(corefile, "\n") {
		switch {
		case strings.HasPrefix(line, begin):
			in = true
		case line == end:
			return strings.Join(out, "\n") + "\n"
		case in:
			out = append(out, line)
		}
	}
	t.Fatalf("no managed block for %s in:\n%s", zone, corefile)
	return ""
}

// TestStubdomainKubeDNSForwardsThroughDnsmasq creates the kube-dns ConfigMap, then runs
// dnsmasq configured from its stubDomains as kube-dns does, and resolves through it.
func TestStubdomainKubeDNSForwardsThroughDnsmasq(t *testing.T) {
	seed := startSeedDNS(t)
	const ns = "sd-dnsmasq"
	createNamespace(t, ns)
	deleteConfigMapAtEnd(t, ns, "kube-dns")
	r := mustStubdomain(t, 0, "apply", "--target", "kube-dns", "--dns-namespace", ns, "--ip", seed.Addr)
	if !strings.Contains(r.stdout, "ConfigMap sd-dnsmasq/kube-dns: created") {
		t.Errorf("apply: %s", r)
	}
	sd := stubDomains(t, getConfigMap(t, ns, "kube-dns"))
	if !slices.Equal(sd["global"], []string{seed.Addr}) {
		t.Fatalf("stubDomains = %v", sd)
	}
	addr := startDnsmasq(t, dnsmasqServers(t, sd)...)
	if got := digShort(t, addr, "httpbin.bar.global"); got != "127.255.0.2" {
		t.Errorf("dig @dnsmasq httpbin.bar.global: %q", got)
	}

	// Our created ConfigMap goes again with remove.
	mustStubdomain(t, 0, "remove", "--target", "kube-dns", "--dns-namespace", ns)
	if _, err := kubeClient.CoreV1().ConfigMaps(ns).Get(apiContext(t), "kube-dns", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after remove: %v", err)
	}
}

// dnsmasqServers turns stubDomains into dnsmasq flags as kube-dns's dnsmasq-nanny does:
// --server=/DOMAIN/IP, or /DOMAIN/IP#PORT.
func dnsmasqServers(t *testing.T, stubDomains map[string][]string) []string {
	t.Helper()
	var args []string
	for domain, servers := range stubDomains {
		for _, s := range servers {
			if host, port, err := net.SplitHostPort(s); err == nil {
				s = host + "#" + port
			}
			args = append(args, "--server=/"+domain+"/"+s)
		}
	}
	slices.Sort(args)
	return args
}

// TestStubdomainAKS: with AKS's coredns ConfigMap (reconciled by the addon manager) the blocks
// go to coredns-custom, and the coredns ConfigMap is not touched.
func TestStubdomainAKS(t *testing.T) {
	const ns = "sd-aks"
	createNamespace(t, ns)
	coredns := applyConfigMap(t, ns, "coredns",
		map[string]string{"addonmanager.kubernetes.io/mode": "Reconcile", "k8s-app": "kube-dns"},
		map[string]string{"Corefile": aksCorefile})
	deleteConfigMapAtEnd(t, ns, "coredns-custom")

	r := mustStubdomain(t, 0, "apply", "--dns-namespace", ns, "--ip", "10.0.0.53,fd00:10::35")
	if !strings.Contains(r.stdout, "target: coredns-custom (") || !strings.Contains(r.stdout, "addon manager") {
		t.Errorf("target: %s", r)
	}
	custom := getConfigMap(t, ns, "coredns-custom")
	block := custom.Data["coredns-istio.server"]
	if !strings.Contains(block, "global:53 {") || !strings.Contains(block, "forward . 10.0.0.53 fd00:10::35") || len(custom.Data) != 1 {
		t.Errorf("coredns-custom: %q", custom.Data)
	}
	if cm := getConfigMap(t, ns, "coredns"); cm.ResourceVersion != coredns.ResourceVersion {
		t.Error("the coredns ConfigMap was written")
	}
	mustStubdomain(t, 0, "status", "--dns-namespace", ns, "--ip", "10.0.0.53,fd00:10::35")
	r = mustStubdomain(t, 0, "apply", "--dns-namespace", ns, "--ip", "10.0.0.53,fd00:10::35")
	if !strings.Contains(r.stdout, "unchanged") || getConfigMap(t, ns, "coredns-custom").ResourceVersion != custom.ResourceVersion {
		t.Errorf("second apply wrote: %s", r)
	}
	// We created coredns-custom: remove deletes it again.
	mustStubdomain(t, 0, "remove", "--dns-namespace", ns)
	if _, err := kubeClient.CoreV1().ConfigMaps(ns).Get(apiContext(t), "coredns-custom", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after remove: %v", err)
	}

	// An existing coredns-custom (as AKS creates it) keeps its other keys, and stays.
	other := "acme.local:53 {\n    forward . 1.2.3.4\n}\n"
	applyConfigMap(t, ns, "coredns-custom", map[string]string{"addonmanager.kubernetes.io/mode": "EnsureExists"}, map[string]string{"acme.server": other})
	mustStubdomain(t, 0, "apply", "--dns-namespace", ns, "--ip", "10.0.0.53")
	if cm := getConfigMap(t, ns, "coredns-custom"); cm.Data["acme.server"] != other || !strings.Contains(cm.Data["coredns-istio.server"], "forward . 10.0.0.53\n") {
		t.Errorf("coredns-custom: %q", cm.Data)
	}
	mustStubdomain(t, 0, "remove", "--dns-namespace", ns)
	if cm := getConfigMap(t, ns, "coredns-custom"); len(cm.Data) != 1 || cm.Data["acme.server"] != other {
		t.Errorf("after remove: %q", cm.Data)
	}
	if cm := getConfigMap(t, ns, "coredns"); cm.ResourceVersion != coredns.ResourceVersion {
		t.Error("the coredns ConfigMap was written")
	}
}

// dnsService is coredns-istio's Service as Istio's istiocoredns had it, in namespace ns.
func dnsService(ns string, dualStack bool, clusterIP string) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "istiocoredns"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "istiocoredns"},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
			},
		},
	}
	if dualStack {
		policy := corev1.IPFamilyPolicyRequireDualStack
		svc.Spec.IPFamilyPolicy = &policy
	}
	if clusterIP != "" {
		svc.Spec.ClusterIP = clusterIP
		svc.Spec.ClusterIPs = []string{clusterIP}
	}
	return svc
}

// TestStubdomainDualStackService: a dual-stack Service's two cluster IPs both become servers.
func TestStubdomainDualStackService(t *testing.T) {
	const ns = "sd-dual"
	createNamespace(t, ns)
	svc := apply(t, kubeClient.CoreV1().Services(ns), dnsService(ns, true, ""))
	if len(svc.Spec.ClusterIPs) != 2 {
		t.Fatalf("a RequireDualStack Service got cluster IPs %v", svc.Spec.ClusterIPs)
	}
	v4, err4 := netip.ParseAddr(svc.Spec.ClusterIPs[0])
	v6, err6 := netip.ParseAddr(svc.Spec.ClusterIPs[1])
	if err4 != nil || err6 != nil || !v4.Is4() || !v6.Is6() || !netip.MustParsePrefix("fd00:10::/112").Contains(v6) {
		t.Fatalf("cluster IPs %v", svc.Spec.ClusterIPs)
	}
	deleteConfigMapAtEnd(t, ns, "kube-dns")
	r := mustStubdomain(t, 0, "apply", "--target", "kube-dns", "--dns-namespace", ns, "--service", ns+"/istiocoredns")
	if !strings.Contains(r.stdout, "servers: "+v4.String()+","+v6.String()+" (Service sd-dual/istiocoredns)") {
		t.Errorf("apply: %s", r)
	}
	if sd := stubDomains(t, getConfigMap(t, ns, "kube-dns")); !slices.Equal(sd["global"], []string{v4.String(), v6.String()}) {
		t.Errorf("stubDomains = %v, want both of %v", sd, svc.Spec.ClusterIPs)
	}
	mustStubdomain(t, 0, "status", "--target", "kube-dns", "--dns-namespace", ns, "--service", ns+"/istiocoredns")
}

// TestStubdomainConcurrentWriters: three writers keep get-modify-updating their own keys of
// the ConfigMap while apply and remove run in a loop. Nobody's write is lost.
func TestStubdomainConcurrentWriters(t *testing.T) {
	const ns = "sd-concurrent"
	createNamespace(t, ns)
	applyConfigMap(t, ns, "kube-dns", nil, map[string]string{"upstreamNameservers": `["8.8.8.8"]`})
	cms := kubeClient.CoreV1().ConfigMaps(ns)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	const writers = 3
	var (
		wg        sync.WaitGroup
		last      [writers]int // the last value each writer stored
		writes    [writers]int
		conflicts [writers]int
		errs      = make(chan error, writers)
	)
	backoff := wait.Backoff{Steps: 100, Duration: time.Millisecond, Factor: 1.2, Jitter: 1, Cap: 50 * time.Millisecond}
	for i := range writers {
		wg.Go(func() {
			key := fmt.Sprintf("writer-%d", i)
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				err := retry.RetryOnConflict(backoff, func() error {
					cm, err := cms.Get(ctx, "kube-dns", metav1.GetOptions{})
					if err != nil {
						return err
					}
					if cm.Data == nil {
						cm.Data = map[string]string{}
					}
					cm.Data[key] = fmt.Sprint(n)
					_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
					if apierrors.IsConflict(err) {
						conflicts[i]++
					}
					return err
				})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", key, err)
					return
				}
				last[i], writes[i] = n, writes[i]+1
				time.Sleep(time.Millisecond)
			}
		})
	}

	ourConflicts := 0
	re := regexp.MustCompile(`after (\d+) conflicts`)
	for i := range 21 {
		cmd := "apply"
		if i%2 == 1 {
			cmd = "remove"
		}
		r := mustStubdomain(t, 0, cmd, "--target", "kube-dns", "--dns-namespace", ns, "--ip", "10.0.0.53")
		if m := re.FindStringSubmatch(r.stdout); m != nil {
			var n int
			fmt.Sscan(m[1], &n)
			ourConflicts += n
		}
		if ctx.Err() != nil {
			t.Fatal("out of time")
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("writers stored %v times (%v conflicts); apply/remove retried %d conflicts", writes, conflicts, ourConflicts)

	cm := getConfigMap(t, ns, "kube-dns")
	for i := range writers {
		if got, want := cm.Data[fmt.Sprintf("writer-%d", i)], fmt.Sprint(last[i]); got != want {
			t.Errorf("writer-%d = %q, want its last write %q", i, got, want)
		}
	}
	if cm.Data["upstreamNameservers"] != `["8.8.8.8"]` {
		t.Errorf("upstreamNameservers = %q", cm.Data["upstreamNameservers"])
	}
	if sd := stubDomains(t, cm); len(sd) != 1 || !slices.Equal(sd["global"], []string{"10.0.0.53"}) {
		t.Errorf("stubDomains after the last apply: %v", sd)
	}
}

// stubdomainWatch is a running `coredns-istio stubdomain watch`.
type stubdomainWatch struct {
	proc *process
	out  *syncBuffer
	id   string // its leader-election identity
}

var candidateRE = regexp.MustCompile(`candidate (\S+) for Lease`)

func startStubdomainWatch(t *testing.T, args ...string) *stubdomainWatch {
	t.Helper()
	w := &stubdomainWatch{out: &syncBuffer{}}
	health := net.JoinHostPort("127.0.0.1", strconv.Itoa(port(t)))
	args = append(append([]string{"stubdomain", "watch"}, args...), "--kubeconfig", kubeconfig, "--health-listen", health)
	var err error
	if w.proc, err = startProcess("stubdomain watch", w.out, t.TempDir(), corednsBinary, args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.proc.stop(5 * time.Second)
		if t.Failed() {
			t.Logf("stubdomain watch %s:\n%s", w.id, w.out.String())
		}
	})
	err = poll(context.Background(), 10*time.Second, w.proc, func(context.Context) error {
		if m := candidateRE.FindStringSubmatch(w.out.String()); m != nil {
			w.id = m[1]
			return nil
		}
		return errors.New("no leader election yet")
	})
	if err != nil {
		t.Fatalf("stubdomain watch: %v\n%s", err, w.out.String())
	}
	if err := httpOK(context.Background(), "http://"+health+"/healthz"); err != nil {
		t.Fatalf("stubdomain watch --health-listen: %v", err)
	}
	return w
}

// TestStubdomainWatch: the watcher re-applies when someone reverts the ConfigMap and follows
// the Service's cluster IP; of two watchers only the Lease holder writes, and the other takes
// over when the holder dies.
func TestStubdomainWatch(t *testing.T) {
	const ns = "sd-watch"
	createNamespace(t, ns)
	svcs := kubeClient.CoreV1().Services(ns)
	svc := apply(t, svcs, dnsService(ns, false, ""))
	applyConfigMap(t, ns, "kube-dns", nil, map[string]string{"upstreamNameservers": `["8.8.8.8"]`})
	t.Cleanup(func() {
		_ = kubeClient.CoordinationV1().Leases(ns).Delete(apiContext(t), "coredns-istio-stubdomain", metav1.DeleteOptions{})
	})
	args := []string{"--target", "kube-dns", "--dns-namespace", ns, "--service", ns + "/istiocoredns",
		"--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=200ms"}

	globalIs := func(want string) func() error {
		return func() error {
			cm, err := kubeClient.CoreV1().ConfigMaps(ns).Get(apiContext(t), "kube-dns", metav1.GetOptions{})
			if err != nil {
				return err
			}
			var sd map[string][]string
			_ = json.Unmarshal([]byte(cm.Data["stubDomains"]), &sd)
			if got := strings.Join(sd["global"], ","); got != want || cm.Data["upstreamNameservers"] != `["8.8.8.8"]` {
				return fmt.Errorf("global → %q, want %q; data %q", got, want, cm.Data)
			}
			return nil
		}
	}
	holder := func() string {
		l, err := kubeClient.CoordinationV1().Leases(ns).Get(apiContext(t), "coredns-istio-stubdomain", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	revert := func() time.Time {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cm := getConfigMap(t, ns, "kube-dns")
			delete(cm.Data, "stubDomains")
			_, err := kubeClient.CoreV1().ConfigMaps(ns).Update(apiContext(t), cm, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}

	a := startStubdomainWatch(t, args...)
	eventually(t, 10*time.Second, globalIs(svc.Spec.ClusterIP))
	if h := holder(); h != a.id {
		t.Errorf("Lease holder %q, want the only watcher %q", h, a.id)
	}

	// Someone reverts the ConfigMap by hand: re-applied within a few seconds.
	start := revert()
	eventually(t, 5*time.Second, globalIs(svc.Spec.ClusterIP))
	t.Logf("re-applied %v after the revert", time.Since(start).Round(time.Millisecond))

	// The Service is recreated with another cluster IP: the config follows.
	if err := svcs.Delete(apiContext(t), svc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var newIP string
	for i := 250; i > 200 && newIP == ""; i-- {
		ip := fmt.Sprintf("10.0.0.%d", i)
		if ip == svc.Spec.ClusterIP {
			continue
		}
		_, err := svcs.Create(apiContext(t), dnsService(ns, false, ip), metav1.CreateOptions{})
		if err == nil {
			newIP = ip
		} else if !apierrors.IsInvalid(err) {
			t.Fatal(err)
		}
	}
	if newIP == "" {
		t.Fatal("no free cluster IP in 10.0.0.201-250")
	}
	start = time.Now()
	eventually(t, 5*time.Second, globalIs(newIP))
	t.Logf("followed the Service from %s to %s in %v", svc.Spec.ClusterIP, newIP, time.Since(start).Round(time.Millisecond))

	// A second watcher stands by: the Lease stays with the first.
	b := startStubdomainWatch(t, args...)
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(b.out.String(), a.id+" leads; "+b.id+" stands by") {
			return errors.New("the second watcher has not seen the leader yet")
		}
		return nil
	})
	if h := holder(); h != a.id {
		t.Errorf("Lease holder %q, want the first watcher %q", h, a.id)
	}

	// The leader dies without a word (SIGKILL): the standby takes over once the lease expires,
	// and does the job.
	if err := a.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	eventually(t, 15*time.Second, func() error {
		if h := holder(); h != b.id {
			return fmt.Errorf("Lease holder %q, want %q", h, b.id)
		}
		return nil
	})
	t.Logf("the standby took the Lease %v after the leader died", time.Since(start).Round(time.Millisecond))
	revert()
	eventually(t, 5*time.Second, globalIs(newIP))

	// SIGTERM: a clean exit that releases the Lease.
	if err := b.proc.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.proc.done:
		if b.proc.err != nil {
			t.Errorf("watch exited with %v after SIGTERM", b.proc.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not exit within 10s of SIGTERM")
	}
	if h := holder(); h != "" {
		t.Errorf("Lease holder %q after a clean exit, want none", h)
	}
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}
