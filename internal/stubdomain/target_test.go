package stubdomain

import (
	"context"
	"errors"
	"net/netip"
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

func TestParseTarget(t *testing.T) {
	for _, s := range []string{"auto", "kube-dns", "coredns", "coredns-custom"} {
		if got, err := ParseTarget(s); err != nil || string(got) != s {
			t.Errorf("ParseTarget(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := ParseTarget("CoreDNS"); err == nil {
		t.Error("ParseTarget(CoreDNS): no error")
	}
}

func TestParseServers(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: FormatServers of the result, or "error"
	}{
		{"10.0.0.53", "10.0.0.53"},
		{"10.0.0.53:53", "10.0.0.53"},
		{"10.0.0.53:5353", "10.0.0.53:5353"},
		{" 10.0.0.53 , fd00::35 ", "10.0.0.53,fd00::35"},
		{"[fd00::35]:5353", "[fd00::35]:5353"},
		{"[fd00::35]", "fd00::35"},
		{"::ffff:10.0.0.1", "10.0.0.1"},
		{"127.0.0.1:1053", "127.0.0.1:1053"},
		{"", "error"},
		{",", "error"},
		{"10.0.0.53:0", "error"},
		{"10.0.0.300", "error"},
		{"example.com", "error"},
		{"0.0.0.0", "error"},
		{"fe80::1%eth0", "error"},
		{"[10.0.0.1", "error"},
		{"dns://10.0.0.53:5353", "10.0.0.53:5353"},
		{"10.0.0.53:99999", "error"},
	} {
		got, err := ParseServers(tc.in)
		if err != nil {
			if tc.want != "error" {
				t.Errorf("ParseServers(%q): %v", tc.in, err)
			}
			continue
		}
		if s := FormatServers(got); s != tc.want {
			t.Errorf("ParseServers(%q) = %s, want %s", tc.in, s, tc.want)
		}
	}
}

func TestParseZones(t *testing.T) {
	got, err := ParseZones("global, Mesh.Example.,global")
	if err != nil || strings.Join(got, ",") != "global,mesh.example" {
		t.Errorf("ParseZones = %v, %v", got, err)
	}
	for _, bad := range []string{"", ".", "a..b", "a b", "glo/bal"} {
		if _, err := ParseZones(bad); err == nil {
			t.Errorf("ParseZones(%q): no error", bad)
		}
	}
}

func service(ips []string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiocoredns"},
		Spec:       corev1.ServiceSpec{ClusterIP: ips[0], ClusterIPs: ips, Ports: ports},
	}
}

func TestServiceServers(t *testing.T) {
	udp := func(name string, port int32) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolUDP}
	}
	tcp := func(name string, port int32) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP}
	}
	for _, tc := range []struct {
		name string
		svc  *corev1.Service
		want string // or an error substring after "error: "
	}{
		{"istio's", service([]string{"10.0.0.53"}, udp("dns", 53), tcp("dns-tcp", 53)), "10.0.0.53"},
		{"dual-stack", service([]string{"10.0.0.53", "fd00:10::35"}, udp("dns", 53)), "10.0.0.53,fd00:10::35"},
		{"named dns wins", service([]string{"10.0.0.53"}, udp("other", 53), udp("dns", 1053)), "10.0.0.53:1053"},
		{"udp 53", service([]string{"10.0.0.53"}, udp("metrics", 9153), udp("x", 53)), "10.0.0.53"},
		{"only udp port", service([]string{"10.0.0.53"}, tcp("dns", 53), udp("u", 5353)), "10.0.0.53:5353"},
		{"no udp", service([]string{"10.0.0.53"}, tcp("dns", 53)), "error: no UDP port"},
		{"ambiguous", service([]string{"10.0.0.53"}, udp("a", 1), udp("b", 2)), "error: several UDP ports"},
		{"headless", service([]string{"None"}, udp("dns", 53)), "error: no cluster IP"},
		{"old, ClusterIP only", &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.9", Ports: []corev1.ServicePort{udp("dns", 53)}}}, "10.0.0.9"},
	} {
		got, err := ServiceServers(tc.svc)
		if want, ok := strings.CutPrefix(tc.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, want)
			}
			continue
		}
		if err != nil || FormatServers(got) != tc.want {
			t.Errorf("%s: %s, %v; want %s", tc.name, FormatServers(got), err, tc.want)
		}
	}
}

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name}, Data: data}
}

func deployment(name string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name}}
}

func TestDetect(t *testing.T) {
	aks := configMap("coredns", map[string]string{"Corefile": aksCorefile})
	aks.Labels = map[string]string{"addonmanager.kubernetes.io/mode": "Reconcile"}
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		want    Target
		because string
	}{
		{"kubeadm", []runtime.Object{configMap("coredns", map[string]string{"Corefile": ".:53 {\n}\n"}), deployment("coredns")}, CoreDNS, "has a Corefile"},
		{"CoreDNS Deployment only", []runtime.Object{deployment("coredns")}, CoreDNS, "Deployment kube-system/coredns exists"},
		{"AKS", []runtime.Object{aks, configMap("coredns-custom", nil), coreDNSDeployment("/etc/coredns/custom", "coredns-custom")}, CoreDNSCustom, "imports *.server from ConfigMap kube-system/coredns-custom"},
		{"AKS, its Deployment not readable", []runtime.Object{aks}, CoreDNSCustom, "imports custom/*.server: ConfigMap kube-system/coredns-custom, as on AKS and k3s; the ConfigMap is re-applied by the addon manager"},
		{"a coredns-custom that nothing imports", []runtime.Object{configMap("coredns", map[string]string{"Corefile": ""}), configMap("coredns-custom", nil)}, CoreDNS, "has a Corefile"},
		{"CoreDNS beside an old kube-dns ConfigMap", []runtime.Object{configMap("coredns", map[string]string{"Corefile": ""}), configMap("kube-dns", nil)}, CoreDNS, "Corefile"},
		{"coredns ConfigMap without Corefile", []runtime.Object{configMap("coredns", nil), deployment("kube-dns")}, KubeDNS, "Deployment kube-system/kube-dns"},
		{"GKE kube-dns", []runtime.Object{deployment("kube-dns"), configMap("kube-dns", nil)}, KubeDNS, "Deployment kube-system/kube-dns"},
		{"kube-dns ConfigMap only", []runtime.Object{configMap("kube-dns", nil)}, KubeDNS, "ConfigMap kube-system/kube-dns"},
	} {
		client := fake.NewClientset(tc.objs...)
		h, err := detectCluster(context.Background(), client, "kube-system")
		if err != nil || h.Target != tc.want || !strings.Contains(h.Why, tc.because) {
			t.Errorf("%s: detectCluster = %s (%s), %v; want %s (…%s…)", tc.name, h.Target, h.Why, err, tc.want, tc.because)
		}
	}

	_, err := detectCluster(context.Background(), fake.NewClientset(configMap("other", nil)), "kube-system")
	if !errors.Is(err, ErrUnknownDNS) || !strings.Contains(err.Error(), "use --target") {
		t.Errorf("nothing: err = %v", err)
	}

	// Not allowed to read Deployments: as if there were none; ConfigMaps still decide.
	client := fake.NewClientset(configMap("kube-dns", nil))
	client.PrependReactor("get", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "", errors.New("no"))
	})
	if h, err := detectCluster(context.Background(), client, "kube-system"); err != nil || h.Target != KubeDNS {
		t.Errorf("forbidden Deployments: %s, %v", h.Target, err)
	}
	// Not allowed to read ConfigMaps: an error, not a guess.
	client = fake.NewClientset(configMap("kube-dns", nil))
	client.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "coredns", errors.New("no"))
	})
	if _, err := detectCluster(context.Background(), client, "kube-system"); !apierrors.IsForbidden(err) {
		t.Errorf("forbidden ConfigMaps: err = %v, want Forbidden", err)
	}
}

func TestFormatServers(t *testing.T) {
	got := FormatServers([]netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.1:53"), netip.MustParseAddrPort("[fd00::1]:5353"),
		netip.AddrPortFrom(netip.MustParseAddr("fd00::2"), 0),
	})
	// FormatServers writes what it is given; ParseServer is what turns 53 into 0.
	if got != "10.0.0.1:53,[fd00::1]:5353,fd00::2" {
		t.Errorf("FormatServers = %s", got)
	}
}
