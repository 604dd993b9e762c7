package test

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// marker is what the stand-in for the internet answers for every name: a query that reaches it
// has leaked out of the cluster.
const marker = "127.0.0.99"

// startInternet runs the stand-in for the node's upstream resolvers (public DNS, where
// `global` is a real TLD): it answers every A question with the marker.
func startInternet(t *testing.T) *coreDNS {
	t.Helper()
	// {{"{{ .Name }}"}}: the harness reads the Corefile as a Go template too.
	return startCoreDNS(t, `.:{{.Port}} {
    bind 127.0.0.1
    template IN A {
        answer "{{"{{ .Name }}"}} 60 IN A `+marker+`"
    }
}
`)
}

// onTestPort makes a Corefile's port-53 server blocks listen on the harness's port, on loopback
// where a block does not bind already.
func onTestPort(corefile string) string { return onPort(corefile, "{{.Port}}") }

// onPort makes a Corefile's port-53 server blocks listen on port, on loopback where a block does
// not bind already.
func onPort(corefile, port string) string {
	var out []string
	for _, line := range strings.SplitAfter(corefile, "\n") {
		if strings.HasSuffix(strings.TrimRight(line, "\n"), ":53 {") && !strings.HasPrefix(line, " ") {
			line = strings.Replace(line, ":53 {", ":"+port+" {", 1)
		}
		out = append(out, line)
	}
	s := strings.Join(out, "")
	if !strings.Contains(s, "bind ") {
		s = strings.ReplaceAll(s, ":"+port+" {\n", ":"+port+" {\n    bind 127.0.0.1\n")
	}
	return s
}

// nodeCacheCorefile is the Corefile node-cache (kubernetes/dns cmd/node-cache, not in the Go
// module proxy, so emulated here) runs, built as its app/configmap.go updateCorefile builds it:
// from its template (ConfigMap node-local-dns, as the installer rendered it) it puts the kube-dns
// ConfigMap's upstreamNameservers, or else /etc/resolv.conf (here: the stand-in for the
// internet), for __PILLAR__UPSTREAM__SERVERS__ and the kube-dns-upstream Service (here: the
// cluster DNS) for __PILLAR__CLUSTER__DNS__, blanks __PILLAR__DNS__SERVER__, and appends one
// block per stubDomains key in its stubDomainBlock template ("\nZONE:53 {\n errors\n cache 30\n
// bind LOCALIP\n forward . SERVERS\n}\n"). What differs from node-cache: the port (the harness's,
// not 53 on a link-local address), and the health and prometheus lines, dropped (they would
// bind fixed ports).
func nodeCacheCorefile(t *testing.T, template string, kubeDNS *corev1.ConfigMap, localIP, clusterDNS, internet string) string {
	t.Helper()
	upstream := internet
	var stubs map[string][]string
	if kubeDNS != nil {
		if u := kubeDNS.Data["upstreamNameservers"]; u != "" {
			var list []string
			if err := json.Unmarshal([]byte(u), &list); err != nil {
				t.Fatalf("upstreamNameservers: %v", err)
			}
			upstream = strings.Join(list, " ")
		}
		if s := kubeDNS.Data["stubDomains"]; s != "" {
			if err := json.Unmarshal([]byte(s), &stubs); err != nil {
				t.Fatalf("stubDomains: %v", err)
			}
		}
	}
	c := strings.NewReplacer("__PILLAR__UPSTREAM__SERVERS__", upstream, "__PILLAR__CLUSTER__DNS__", clusterDNS,
		"__PILLAR__LOCAL__DNS__", localIP, "__PILLAR__DNS__SERVER__", "").Replace(template)
	for _, zone := range slices.Sorted(func(yield func(string) bool) {
		for z := range stubs {
			if !yield(z) {
				return
			}
		}
	}) {
		c += "\n" + zone + ":53 {\n    errors\n    cache 30\n    bind " + localIP + "\n    forward . " + strings.Join(stubs[zone], " ") + "\n}\n"
	}
	var kept []string
	for _, line := range strings.SplitAfter(c, "\n") {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "health" || f[0] == "prometheus") {
			continue
		}
		kept = append(kept, line)
	}
	return onTestPort(strings.Join(kept, ""))
}

// TestStubdomainNodeLocalDNSCache: behind NodeLocal DNSCache (the add-on's DaemonSet, which mounts
// ConfigMap kube-dns) a pod's `global` question goes to the cache first, and only the cluster
// domain reaches CoreDNS. Before apply it leaks to the internet; apply must configure the cache
// too (kube-dns's stubDomains, which node-cache turns into a block of its own), not only CoreDNS;
// remove brings the leak back and every ConfigMap as it was.
func TestStubdomainNodeLocalDNSCache(t *testing.T) {
	const ns = "sd-nodelocal"
	createNamespace(t, ns)
	seed := startSeedDNS(t)
	internet := startInternet(t)

	// As installed in iptables mode, with loopback for the link-local address and the ClusterIP.
	template := strings.ReplaceAll(readFile("../internal/stubdomain/testdata/node-local-dns.Corefile"), "169.254.20.10 10.96.0.10", "127.0.0.1")
	applyConfigMap(t, ns, "node-local-dns", map[string]string{"k8s-app": "node-local-dns"}, map[string]string{"Corefile": template})
	clusterCorefile := ".:53 {\n    errors\n    forward . " + internet.Addr + "\n    reload\n}\n"
	applyConfigMap(t, ns, "coredns", nil, map[string]string{"Corefile": clusterCorefile})
	deleteConfigMapAtEnd(t, ns, "kube-dns")
	labels := map[string]string{"k8s-app": "node-local-dns"}
	cmVolume := func(volume, configMap string, items ...corev1.KeyToPath) corev1.Volume {
		return corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: configMap}, Items: items, Optional: new(true)}}}
	}
	apply(t, kubeClient.AppsV1().DaemonSets(ns), &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "node-local-dns", Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "node-cache", Image: "registry.k8s.io/dns/k8s-dns-node-cache:1.26.4",
						Args:         []string{"-localip", "169.254.20.10,10.96.0.10", "-conf", "/etc/Corefile", "-upstreamsvc", "kube-dns-upstream"},
						VolumeMounts: []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/coredns"}, {Name: "kube-dns-config", MountPath: "/etc/kube-dns"}}}},
					Volumes: []corev1.Volume{cmVolume("kube-dns-config", "kube-dns"),
						cmVolume("config-volume", "node-local-dns", corev1.KeyToPath{Key: "Corefile", Path: "Corefile.base"})},
				},
			},
		},
	})

	// The query path as the ConfigMaps make it now: the cluster DNS runs its Corefile, the cache
	// its generated one in front of it.
	cachePath := func() *coreDNS {
		t.Helper()
		cluster := startCoreDNS(t, onTestPort(getConfigMap(t, ns, "coredns").Data["Corefile"]))
		kubeDNS, err := kubeClient.CoreV1().ConfigMaps(ns).Get(apiContext(t), "kube-dns", metav1.GetOptions{})
		if err != nil {
			kubeDNS = nil // not created yet: node-cache runs its template alone
		}
		corefile := nodeCacheCorefile(t, getConfigMap(t, ns, "node-local-dns").Data["Corefile"], kubeDNS, "127.0.0.1", cluster.Addr, internet.Addr)
		return startCoreDNS(t, corefile)
	}
	args := []string{"--dns-namespace", ns, "--ip", seed.Addr}

	r := mustStubdomain(t, 1, append([]string{"status"}, args...)...)
	if !strings.Contains(r.stdout, "node-local cache: global: not configured") || !strings.Contains(r.stdout, "leak") {
		t.Errorf("status before apply names no leak: %s", r)
	}
	if got := digShort(t, cachePath().Addr, "httpbin.bar.global"); got != marker {
		t.Fatalf("before apply, through the cache: %q, want the leak's %s", got, marker)
	}

	r = mustStubdomain(t, 0, append([]string{"apply"}, args...)...)
	t.Logf("apply:\n%s", r.stdout)
	if !strings.Contains(r.stdout, "node-local cache: target: kube-dns (") || !strings.Contains(r.stdout, "cluster DNS: target: coredns (") {
		t.Errorf("apply does not name both hops: %s", r)
	}
	if got := digShort(t, cachePath().Addr, "httpbin.bar.global"); got != "127.255.0.2" {
		t.Errorf("after apply, through the cache: %q, want the seed's 127.255.0.2", got)
	}
	mustStubdomain(t, 0, append([]string{"status"}, args...)...)

	mustStubdomain(t, 0, "remove", "--dns-namespace", ns)
	if got := digShort(t, cachePath().Addr, "httpbin.bar.global"); got != marker {
		t.Errorf("after remove, through the cache: %q, want the leak's %s again", got, marker)
	}
	if got := getConfigMap(t, ns, "coredns").Data["Corefile"]; got != clusterCorefile {
		t.Errorf("CoreDNS's Corefile after remove:\n%s", got)
	}
	if got := getConfigMap(t, ns, "node-local-dns").Data["Corefile"]; got != template {
		t.Errorf("the cache's template changed:\n%s", got)
	}
	if _, err := kubeClient.CoreV1().ConfigMaps(ns).Get(apiContext(t), "kube-dns", metav1.GetOptions{}); err == nil {
		t.Error("ConfigMap kube-dns, created by apply, is still there after remove")
	}
	mustStubdomain(t, 1, append([]string{"status"}, args...)...)
}

// TestStubdomainK3s: k3s's deploy controller re-applies ConfigMap coredns, and its Corefile
// imports /etc/coredns/custom/*.server from ConfigMap coredns-custom, which the CoreDNS
// Deployment mounts there. apply writes coredns-custom and leaves the k3s-managed Corefile byte
// for byte; CoreDNS, run as k3s mounts it, answers through our imported block.
func TestStubdomainK3s(t *testing.T) {
	const ns = "sd-k3s"
	createNamespace(t, ns)
	seed := startSeedDNS(t)
	internet := startInternet(t)
	corefile := ".:53 {\n    errors\n    forward . " + internet.Addr + "\n    cache 30\n    reload\n}\nimport /etc/coredns/custom/*.server\n"
	coredns := apply(t, kubeClient.CoreV1().ConfigMaps(ns), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "coredns", Annotations: map[string]string{
			"objectset.rio.cattle.io/applied": "H4sIAAAAAAAA/wEAAP//AAAAAAAAAAA", "objectset.rio.cattle.io/id": "", "objectset.rio.cattle.io/owner-gvk": "k3s.cattle.io/v1, Kind=Addon",
			"objectset.rio.cattle.io/owner-name": "coredns", "objectset.rio.cattle.io/owner-namespace": "kube-system"}},
		Data: map[string]string{"Corefile": corefile, "NodeHosts": "127.0.0.1 k3s-server\n"},
	})
	deleteConfigMapAtEnd(t, ns, "coredns-custom")
	labels := map[string]string{"k8s-app": "kube-dns"}
	apply(t, kubeClient.AppsV1().Deployments(ns), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "coredns", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "coredns", Image: "rancher/mirrored-coredns-coredns:1.12.0", Args: []string{"-conf", "/etc/coredns/Corefile"},
						VolumeMounts: []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true},
							{Name: "custom-config-volume", MountPath: "/etc/coredns/custom", ReadOnly: true}}}},
					Volumes: []corev1.Volume{
						{Name: "config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"}, Items: []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}, {Key: "NodeHosts", Path: "NodeHosts"}}}}},
						{Name: "custom-config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "coredns-custom"}, Optional: new(true)}}},
					},
				},
			},
		},
	})
	args := []string{"--dns-namespace", ns, "--ip", seed.Addr}

	mustStubdomain(t, 1, append([]string{"status"}, args...)...)
	r := mustStubdomain(t, 0, append([]string{"apply"}, args...)...)
	if !strings.Contains(r.stdout, "target: coredns-custom (") || !strings.Contains(r.stdout, "k3s") {
		t.Errorf("apply: %s", r)
	}
	if got := getConfigMap(t, ns, "coredns"); got.ResourceVersion != coredns.ResourceVersion || got.Data["Corefile"] != corefile {
		t.Errorf("the k3s-managed ConfigMap changed: %v", got.Data)
	}
	mustStubdomain(t, 0, append([]string{"status"}, args...)...)

	// CoreDNS as k3s mounts it: the Corefile, and coredns-custom's keys in custom/, every block on
	// one port. (The imported files are not read through the harness's template, so the port is
	// fixed here; the harness's own port gets a block of its own, for its readiness check.)
	dnsPort := strconv.Itoa(port(t))
	custom := t.TempDir()
	for k, v := range getConfigMap(t, ns, "coredns-custom").Data {
		if err := os.WriteFile(filepath.Join(custom, k), []byte(onPort(v, dnsPort)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mounted := strings.Replace(onPort(corefile, dnsPort), "/etc/coredns/custom/", custom+"/", 1)
	startCoreDNS(t, mounted+"harness.invalid:{{.Port}} {\n    bind 127.0.0.1\n    whoami\n}\n")
	addr := net.JoinHostPort("127.0.0.1", dnsPort)
	if got := digShort(t, addr, "httpbin.bar.global"); got != "127.255.0.2" {
		t.Errorf("through k3s's CoreDNS with the imported block: %q, want 127.255.0.2", got)
	}
	if got := digShort(t, addr, "example.com"); got != marker {
		t.Errorf("other names: %q, want the upstream's %s", got, marker)
	}

	mustStubdomain(t, 0, "remove", "--dns-namespace", ns)
	if got := getConfigMap(t, ns, "coredns"); got.ResourceVersion != coredns.ResourceVersion {
		t.Errorf("remove touched the k3s-managed ConfigMap: %v", got.Data)
	}
	mustStubdomain(t, 1, append([]string{"status"}, args...)...)
}
