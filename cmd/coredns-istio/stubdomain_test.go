package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
)

// runWith runs the subcommand against client and returns its exit status and output.
func runWith(t *testing.T, client kubernetes.Interface, args ...string) (int, string, string) {
	t.Helper()
	saved := newKubeClient
	t.Cleanup(func() { newKubeClient = saved })
	newKubeClient = func(string, string) (kubernetes.Interface, error) {
		if client == nil {
			t.Fatal("the API was used")
		}
		return client, nil
	}
	var stdout, stderr strings.Builder
	code := stubdomainMain(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestStubdomainUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout or stderr
	}{
		{nil, 2, "Usage: coredns-istio stubdomain COMMAND"},
		{[]string{"-h"}, 0, "Commands:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"apply", "-h"}, 0, "-dry-run"},
		{[]string{"watch", "--help"}, 0, "-leader-elect-namespace"},
		{[]string{"apply", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"apply", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"apply", "--ip", "10.0.0.53", "--service", "a/b"}, 2, "--ip and --service exclude each other"},
		{[]string{"apply", "--ip", "nonsense"}, 2, `--ip: bad server address "nonsense"`},
		{[]string{"apply", "--service", "nonamespace"}, 2, "want NAMESPACE/NAME"},
		{[]string{"apply", "--target", "bind"}, 2, `unknown target "bind"`},
		{[]string{"apply", "--zones", "a..b"}, 2, "--zones"},
		{[]string{"status", "--dry-run"}, 2, "not defined: -dry-run"},
		{[]string{"apply", "--leader-elect=false"}, 2, "not defined: -leader-elect"},
		{[]string{"watch", "--leader-elect-lease-duration=1s", "--leader-elect-renew-deadline=2s"}, 2, "lease duration > renew deadline"},
	} {
		code, stdout, stderr := runWith(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.out) {
			t.Errorf("%v: exit %d, want %d, with %q in:\n%s%s", tc.args, code, tc.code, tc.out, stdout, stderr)
		}
	}
}

func TestStubdomainCommands(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiocoredns"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.0.0.53", ClusterIPs: []string{"10.0.0.53", "fd00:10::35"},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}},
		},
	}
	kubeDNS := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns"},
		Data:       map[string]string{"upstreamNameservers": `["8.8.8.8"]`},
	}
	client := fake.NewClientset([]runtime.Object{svc, kubeDNS}...)

	code, out, errOut := runWith(t, client, "status")
	if code != 1 || !strings.Contains(out, "target: kube-dns (no CoreDNS, and ConfigMap kube-system/kube-dns exists)") ||
		!strings.Contains(out, "global: not configured") {
		t.Errorf("status before apply: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = runWith(t, client, "apply", "--dry-run")
	if code != 0 || !strings.Contains(out, "+++ kube-system/kube-dns stubDomains") || !strings.Contains(out, "dry run, nothing written") {
		t.Errorf("apply --dry-run: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = runWith(t, client, "apply")
	if code != 0 || !strings.Contains(out, "servers: 10.0.0.53,fd00:10::35 (Service istio-system/istiocoredns)") ||
		!strings.Contains(out, "ConfigMap kube-system/kube-dns: updated") {
		t.Errorf("apply: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runWith(t, client, "apply")
	if code != 0 || !strings.Contains(out, "unchanged") {
		t.Errorf("second apply: exit %d\n%s", code, out)
	}
	code, out, _ = runWith(t, client, "status")
	if code != 0 || !strings.Contains(out, "global: forwards to 10.0.0.53,fd00:10::35") || !strings.Contains(out, "matches") {
		t.Errorf("status after apply: exit %d\n%s", code, out)
	}
	code, out, _ = runWith(t, client, "status", "--ip", "10.0.0.9")
	if code != 1 || !strings.Contains(out, "differs") {
		t.Errorf("status with other servers: exit %d\n%s", code, out)
	}
	code, out, _ = runWith(t, client, "remove")
	if code != 0 || !strings.Contains(out, "updated (without global)") {
		t.Errorf("remove: exit %d\n%s", code, out)
	}
	cm, err := client.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "kube-dns", metav1.GetOptions{})
	if err != nil || len(cm.Data) != 1 || cm.Data["upstreamNameservers"] != `["8.8.8.8"]` {
		t.Errorf("after remove: %v %q", err, cm.Data)
	}

	// Errors: status exits 2, apply 1.
	code, _, errOut = runWith(t, client, "status", "--service", "istio-system/missing")
	if code != 2 || !strings.Contains(errOut, "istio-system/missing") {
		t.Errorf("status without the Service: exit %d\n%s", code, errOut)
	}
	code, _, errOut = runWith(t, fake.NewClientset(), "apply", "--ip", "10.0.0.53")
	if code != 1 || !strings.Contains(errOut, "cannot tell which cluster DNS runs; use --target") {
		t.Errorf("apply without a cluster DNS: exit %d\n%s", code, errOut)
	}
}

// Behind NodeLocal DNSCache (the add-on, mounting kube-dns) status names the cache's leak, apply
// configures both hops (kube-dns's stubDomains, created, for the cache; CoreDNS's Corefile) and
// remove takes both back.
func TestStubdomainNodeLocal(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiocoredns"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.0.0.53", Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}},
	}
	corefile := ".:53 {\n    errors\n    forward . /etc/resolv.conf\n    reload\n}\n"
	coredns := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"}, Data: map[string]string{"Corefile": corefile}}
	cache := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "node-local-dns"},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "kube-dns-config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-dns"}}}},
			{Name: "config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "node-local-dns"}}}},
		}}}}}
	client := fake.NewClientset(svc, coredns, cache)
	get := func(name string) *corev1.ConfigMap {
		cm, err := client.CoreV1().ConfigMaps("kube-system").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return cm
	}

	code, out, errOut := runWith(t, client, "status")
	if code != 1 || !strings.Contains(out, "node-local cache: global: not configured") || !strings.Contains(out, "node's upstream resolvers") {
		t.Errorf("status before apply: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runWith(t, client, "apply")
	if code != 0 || !strings.Contains(out, "node-local cache: takes effect") {
		t.Errorf("apply: exit %d\n%s%s", code, out, errOut)
	}
	if kd := get("kube-dns"); kd == nil || strings.Join(strings.Fields(kd.Data["stubDomains"]), "") != `{"global":["10.0.0.53"]}` {
		t.Errorf("kube-dns after apply: %v", kd)
	}
	if c := get("coredns").Data["Corefile"]; !strings.Contains(c, "forward . 10.0.0.53") {
		t.Errorf("Corefile after apply:\n%s", c)
	}
	if code, out, errOut = runWith(t, client, "status"); code != 0 {
		t.Errorf("status after apply: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = runWith(t, client, "remove"); code != 0 {
		t.Errorf("remove: exit %d\n%s%s", code, out, errOut)
	}
	if get("kube-dns") != nil || get("coredns").Data["Corefile"] != corefile {
		t.Errorf("after remove: kube-dns %v, Corefile %q", get("kube-dns"), get("coredns").Data["Corefile"])
	}
}

// watch detects the query path again: NodeLocal DNSCache installed after it started gets its
// hop (kube-dns's stubDomains) without a restart.
func TestStubdomainWatchFollowsThePath(t *testing.T) {
	corefile := ".:53 {\n    errors\n    forward . /etc/resolv.conf\n    reload\n}\n"
	client := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"}, Data: map[string]string{"Corefile": corefile}})
	opts, err := parseStubdomainFlags("watch", []string{"--ip", "10.0.0.53", "--leader-elect=false", "--redetect-interval", "50ms"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stdout, stderr strings.Builder
	go func() { _, err := runWatch(ctx, client, opts, &stdout, &stderr); done <- err }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
		}
	}
	cms := client.CoreV1().ConfigMaps("kube-system")
	eventually("the Corefile's block", func() bool {
		cm, err := cms.Get(ctx, "coredns", metav1.GetOptions{})
		return err == nil && strings.Contains(cm.Data["Corefile"], "forward . 10.0.0.53")
	})

	cache := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "node-local-dns"},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "kube-dns-config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-dns"}}}},
		}}}}}
	if _, err := client.AppsV1().DaemonSets("kube-system").Create(ctx, cache, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the cache's hop", func() bool {
		cm, err := cms.Get(ctx, "kube-dns", metav1.GetOptions{})
		return err == nil && strings.Contains(cm.Data["stubDomains"], "10.0.0.53")
	})
}
