package stubdomain

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func configMapVolume(volume, configMap string, items ...corev1.KeyToPath) corev1.Volume {
	return corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: configMap}, Items: items}}}
}

func daemonSet(name string, volumes ...corev1.Volume) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Volumes: volumes}}}}
}

// The NodeLocal DNSCache shapes clusters run: the current add-on (node-local-dns, mounting
// kube-dns for its stubDomains and its own template as Corefile.base), older installs
// (nodelocaldns, only their own Corefile), and none.
func TestDetectNodeLocal(t *testing.T) {
	addon := daemonSet("node-local-dns",
		corev1.Volume{Name: "xtables-lock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/xtables.lock"}}},
		configMapVolume("kube-dns-config", "kube-dns"),
		configMapVolume("config-volume", "node-local-dns", corev1.KeyToPath{Key: "Corefile", Path: "Corefile.base"}))
	older := daemonSet("nodelocaldns", configMapVolume("config-volume", "nodelocaldns", corev1.KeyToPath{Key: "Corefile", Path: "Corefile"}))
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		want    *NodeLocal
		because string
	}{
		{"the add-on, beside CoreDNS", []runtime.Object{addon, deployment("coredns")},
			&NodeLocal{DaemonSet: "node-local-dns", ConfigMap: "node-local-dns", KubeDNS: true}, "mounting ConfigMap kube-dns"},
		{"the add-on before ConfigMap kube-dns exists", []runtime.Object{addon},
			&NodeLocal{DaemonSet: "node-local-dns", ConfigMap: "node-local-dns", KubeDNS: true}, "stubDomains"},
		{"an older nodelocaldns, beside kube-dns", []runtime.Object{older, deployment("kube-dns")},
			&NodeLocal{DaemonSet: "nodelocaldns", ConfigMap: "nodelocaldns"}, "its own Corefile (ConfigMap nodelocaldns)"},
		{"none", []runtime.Object{deployment("coredns")}, nil, ""},
	} {
		got, why, err := DetectNodeLocal(context.Background(), fake.NewClientset(tc.objs...), "kube-system")
		if err != nil || (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want || !strings.Contains(why, tc.because) {
			t.Errorf("%s: %+v (%s), %v; want %+v (…%s…)", tc.name, got, why, err, tc.want, tc.because)
		}
	}

	// Not allowed to look: an error that names the permission, never "no cache".
	client := fake.NewClientset(addon)
	client.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "node-local-dns", errors.New("no"))
	})
	if _, _, err := DetectNodeLocal(context.Background(), client, "kube-system"); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "grant get on daemonsets node-local-dns, nodelocaldns") {
		t.Errorf("forbidden: %v", err)
	}
}

func coreDNSDeployment(mountPath, configMap string) *appsv1.Deployment {
	d := deployment("coredns")
	d.Spec.Template.Spec.Volumes = []corev1.Volume{configMapVolume("config-volume", "coredns"), configMapVolume("custom-config-volume", configMap)}
	d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "coredns", VolumeMounts: []corev1.VolumeMount{
		{Name: "config-volume", MountPath: "/etc/coredns"}, {Name: "custom-config-volume", MountPath: mountPath}}}}
	return d
}

// The ConfigMap behind a Corefile's `import DIR/*.server`: AKS imports a relative directory,
// k3s an absolute one; imports inside a server block are snippets, not server blocks.
func TestImportedConfigMap(t *testing.T) {
	k3s := ".:53 {\n    errors\n    import /etc/coredns/custom/*.override\n}\nimport /etc/coredns/custom/*.server\n"
	for _, tc := range []struct {
		name     string
		corefile string
		d        *appsv1.Deployment
		want     *Imported
	}{
		{"AKS", aksCorefile, coreDNSDeployment("/etc/coredns/custom", "coredns-custom"), &Imported{ConfigMap: "coredns-custom", Pattern: "*.server"}},
		{"k3s", k3s, coreDNSDeployment("/etc/coredns/custom/", "coredns-custom"), &Imported{ConfigMap: "coredns-custom", Pattern: "*.server"}},
		{"imported, named otherwise", k3s, coreDNSDeployment("/etc/coredns/custom", "dns-additions"), &Imported{ConfigMap: "dns-additions", Pattern: "*.server"}},
		{"kubeadm: no import", kubeadmCorefile, coreDNSDeployment("/etc/coredns/custom", "coredns-custom"), nil},
		{"only snippets imported", ".:53 {\n    import /etc/coredns/custom/*.server\n}\n", coreDNSDeployment("/etc/coredns/custom", "coredns-custom"), nil},
		{"an import of a directory nothing mounts", k3s, coreDNSDeployment("/srv/elsewhere", "coredns-custom"), nil},
	} {
		got := ImportedConfigMap(tc.corefile, tc.d)
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// What reverts an edit of a ConfigMap: AKS's addon manager, k3s's deploy controller, or nothing.
func TestReconciledBy(t *testing.T) {
	aks := configMap("coredns", nil)
	aks.Labels = map[string]string{addonManagerLabel: "Reconcile"}
	k3s := configMap("coredns", nil)
	k3s.Labels = map[string]string{"objectset.rio.cattle.io/hash": "bce283298811743a0386ab510f2f67ef74240c57"}
	k3sAnnotated := configMap("coredns", nil)
	k3sAnnotated.Annotations = map[string]string{"objectset.rio.cattle.io/id": "", "objectset.rio.cattle.io/owner-name": "coredns"}
	ensure := configMap("coredns", nil)
	ensure.Labels = map[string]string{addonManagerLabel: "EnsureExists"}
	for _, tc := range []struct {
		cm   *corev1.ConfigMap
		want string
	}{
		{aks, "addon manager"}, {k3s, "k3s"}, {k3sAnnotated, "k3s"}, {ensure, ""}, {configMap("coredns", nil), ""},
	} {
		got := reconciledBy(tc.cm)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%v %v: %q, want …%s…", tc.cm.Labels, tc.cm.Annotations, got, tc.want)
		}
	}
}

// nodeLocalCorefile is ConfigMap node-local-dns of the NodeLocal DNSCache add-on
// (cluster/addons/dns/nodelocaldns/nodelocaldns.yaml) as installed in iptables mode: the guide's
// sed has put in the local address, the cluster domain and the kube-dns ClusterIP; node-cache
// fills in __PILLAR__CLUSTER__DNS__ and __PILLAR__UPSTREAM__SERVERS__ when it starts.
var nodeLocalCorefile = mustRead("testdata/node-local-dns.Corefile")

// In NodeLocal DNSCache's own Corefile our block listens where the cache's blocks do (the
// addresses the installer rendered into it); remove gives the Corefile back byte for byte.
func TestNodeLocalCacheTarget(t *testing.T) {
	servers := []netip.AddrPort{netip.MustParseAddrPort("10.96.0.53:53")}
	kubespray := ".:53 {\n    errors\n    cache 30\n    bind 169.254.25.10\n    forward . /etc/resolv.conf\n}\n"
	for _, tc := range []struct {
		name, corefile, bind string
	}{
		{"the add-on, as installed", nodeLocalCorefile, "bind 169.254.20.10 10.96.0.10"},
		{"an installer's rendered Corefile", kubespray, "bind 169.254.25.10"},
	} {
		client := fake.NewClientset(configMap("nodelocaldns", map[string]string{"Corefile": tc.corefile}))
		p := &Patcher{Client: client, Namespace: "kube-system", Target: NodeLocalCache, ConfigMap: "nodelocaldns"}
		if _, err := p.Apply(context.Background(), []string{"global"}, servers); err != nil {
			t.Fatalf("%s: apply: %v", tc.name, err)
		}
		cm, _ := client.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "nodelocaldns", metav1.GetOptions{})
		got := cm.Data["Corefile"]
		if !strings.HasPrefix(got, tc.corefile) || !strings.Contains(got, "global:53 {\n    "+tc.bind+"\n    errors\n") || !strings.Contains(got, "forward . 10.96.0.53") {
			t.Errorf("%s: applied Corefile:\n%s", tc.name, got)
		}
		rep, err := p.Status(context.Background(), []string{"global"}, servers)
		if err != nil || !rep.Match() {
			t.Errorf("%s: status %+v, %v; want a match", tc.name, rep, err)
		}
		if _, err := p.Remove(context.Background(), []string{"global"}); err != nil {
			t.Fatalf("%s: remove: %v", tc.name, err)
		}
		cm, _ = client.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "nodelocaldns", metav1.GetOptions{})
		if cm.Data["Corefile"] != tc.corefile {
			t.Errorf("%s: remove did not give the Corefile back:\n%q\nwant\n%q", tc.name, cm.Data["Corefile"], tc.corefile)
		}
	}

	// A Corefile that binds nothing: our block would take every address of the node.
	client := fake.NewClientset(configMap("nodelocaldns", map[string]string{"Corefile": ".:53 {\n    forward . /etc/resolv.conf\n}\n"}))
	p := &Patcher{Client: client, Namespace: "kube-system", Target: NodeLocalCache, ConfigMap: "nodelocaldns"}
	if _, err := p.Apply(context.Background(), []string{"global"}, servers); err == nil || !strings.Contains(err.Error(), "binds") {
		t.Errorf("no bind: %v", err)
	}
}

// Every hop of the query path, for the shapes of cluster people run.
func TestDetectPath(t *testing.T) {
	kubeadm := configMap("coredns", map[string]string{"Corefile": kubeadmCorefile})
	aks := configMap("coredns", map[string]string{"Corefile": aksCorefile})
	aks.Labels = map[string]string{addonManagerLabel: "Reconcile"}
	k3sCorefile := ".:53 {\n    errors\n    forward . /etc/resolv.conf\n    reload\n}\nimport /etc/coredns/custom/*.server\n"
	k3s := configMap("coredns", map[string]string{"Corefile": k3sCorefile})
	k3s.Annotations = map[string]string{"objectset.rio.cattle.io/id": "", "objectset.rio.cattle.io/owner-name": "coredns"}
	k3sNoImport := configMap("coredns", map[string]string{"Corefile": kubeadmCorefile})
	k3sNoImport.Labels = map[string]string{"objectset.rio.cattle.io/hash": "0123"}
	addon := daemonSet("node-local-dns", configMapVolume("kube-dns-config", "kube-dns"),
		configMapVolume("config-volume", "node-local-dns", corev1.KeyToPath{Key: "Corefile", Path: "Corefile.base"}))
	older := daemonSet("nodelocaldns", configMapVolume("config-volume", "nodelocaldns"))
	custom := coreDNSDeployment("/etc/coredns/custom", "coredns-custom")

	type hop struct {
		target    Target
		configMap string
	}
	for _, tc := range []struct {
		name string
		objs []runtime.Object
		want []hop
	}{
		{"kube-dns", []runtime.Object{deployment("kube-dns"), configMap("kube-dns", nil)}, []hop{{KubeDNS, "kube-dns"}}},
		{"CoreDNS", []runtime.Object{kubeadm, deployment("coredns")}, []hop{{CoreDNS, "coredns"}}},
		{"CoreDNS behind the node-local-dns add-on", []runtime.Object{kubeadm, deployment("coredns"), addon, configMap("kube-dns", nil)},
			[]hop{{KubeDNS, "kube-dns"}, {CoreDNS, "coredns"}}},
		{"the add-on before ConfigMap kube-dns exists", []runtime.Object{kubeadm, deployment("coredns"), addon},
			[]hop{{KubeDNS, "kube-dns"}, {CoreDNS, "coredns"}}},
		{"CoreDNS behind an older nodelocaldns", []runtime.Object{kubeadm, deployment("coredns"), older},
			[]hop{{NodeLocalCache, "nodelocaldns"}, {CoreDNS, "coredns"}}},
		{"kube-dns behind the add-on: one edit for both", []runtime.Object{deployment("kube-dns"), addon},
			[]hop{{KubeDNS, "kube-dns"}}},
		{"AKS", []runtime.Object{aks, custom}, []hop{{CoreDNSCustom, "coredns-custom"}}},
		{"k3s", []runtime.Object{k3s, custom}, []hop{{CoreDNSCustom, "coredns-custom"}}},
		{"k3s behind the add-on", []runtime.Object{k3s, custom, addon}, []hop{{KubeDNS, "kube-dns"}, {CoreDNSCustom, "coredns-custom"}}},
	} {
		hops, err := DetectPath(context.Background(), fake.NewClientset(tc.objs...), "kube-system", Auto)
		var got []hop
		for _, h := range hops {
			got = append(got, hop{h.Target, h.ConfigMap})
			if h.Why == "" || h.Role == "" {
				t.Errorf("%s: hop %+v says neither what nor why", tc.name, h)
			}
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %+v, %v; want %v", tc.name, hops, err, tc.want)
		}
	}

	// A k3s-managed Corefile that imports nothing: refused, naming the way out.
	_, err := DetectPath(context.Background(), fake.NewClientset(k3sNoImport, deployment("coredns")), "kube-system", Auto)
	if !errors.Is(err, ErrReconciled) || !strings.Contains(err.Error(), "k3s") || !strings.Contains(err.Error(), "import /etc/coredns/custom/*.server") {
		t.Errorf("reconciled, no import: %v", err)
	}
	// --target names the cluster DNS; the cache in front of it is still found.
	hops, err := DetectPath(context.Background(), fake.NewClientset(addon), "kube-system", CoreDNS)
	if err != nil || len(hops) != 2 || hops[1].Target != CoreDNS || hops[1].Why != "--target" {
		t.Errorf("--target coredns behind the add-on: %+v, %v", hops, err)
	}
}
