package stubdomain

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

var (
	istioDNS     = []netip.AddrPort{netip.MustParseAddrPort("10.0.0.53:0")}
	istioDNSDual = []netip.AddrPort{netip.MustParseAddrPort("10.0.0.53:0"), netip.MustParseAddrPort("[fd00:10::35]:0")}
)

// configMapWrites returns the write actions on ConfigMaps the fake client has seen.
func configMapWrites(client *fake.Clientset) []k8stesting.Action {
	var out []k8stesting.Action
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "configmaps" && a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			out = append(out, a)
		}
	}
	return out
}

func getConfigMap(t *testing.T, client *fake.Clientset, name string) *corev1.ConfigMap {
	t.Helper()
	cm, err := client.CoreV1().ConfigMaps("kube-system").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ConfigMap %s: %v", name, err)
	}
	return cm
}

func stubDomainsOf(t *testing.T, cm *corev1.ConfigMap) map[string][]string {
	t.Helper()
	var m map[string][]string
	if err := json.Unmarshal([]byte(cm.Data["stubDomains"]), &m); err != nil {
		t.Fatalf("stubDomains %q: %v", cm.Data["stubDomains"], err)
	}
	return m
}

func TestApplyKubeDNSMerges(t *testing.T) {
	const upstream = `["8.8.8.8", "8.8.4.4"]`
	client := fake.NewClientset(configMap("kube-dns", map[string]string{
		"stubDomains":         `{"acme.local": ["1.2.3.4"], "corp": ["10.1.0.1:5353"]}`,
		"upstreamNameservers": upstream,
		"unrelated":           "keep me\n",
	}))
	p := &Patcher{Client: client, Namespace: "kube-system", Target: KubeDNS}
	ctx := context.Background()

	res, err := p.Apply(ctx, []string{"global"}, istioDNSDual)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Updated || res.Attempts != 1 || !strings.Contains(res.Diff, `"global"`) {
		t.Errorf("first apply: %+v", res)
	}
	cm := getConfigMap(t, client, "kube-dns")
	if cm.Data["upstreamNameservers"] != upstream || cm.Data["unrelated"] != "keep me\n" || len(cm.Data) != 3 {
		t.Errorf("other keys changed: %q", cm.Data)
	}
	sd := stubDomainsOf(t, cm)
	if len(sd) != 3 || strings.Join(sd["global"], ",") != "10.0.0.53,fd00:10::35" ||
		strings.Join(sd["acme.local"], ",") != "1.2.3.4" || strings.Join(sd["corp"], ",") != "10.1.0.1:5353" {
		t.Errorf("stubDomains = %v", sd)
	}
	if cm.Labels[managedByLabel] != "" {
		t.Errorf("labelled a ConfigMap it did not create: %v", cm.Labels)
	}

	// Idempotent: the second apply reads, finds nothing to do, and writes nothing.
	before := len(configMapWrites(client))
	res, err = p.Apply(ctx, []string{"global"}, istioDNSDual)
	if err != nil || res.Action != Unchanged || res.Diff != "" {
		t.Errorf("second apply: %+v, %v", res, err)
	}
	if w := configMapWrites(client); len(w) != before {
		t.Errorf("second apply wrote: %v", w[before:])
	}

	// remove takes out global only, and keeps the formatting of the rest of the data.
	res, err = p.Remove(ctx, []string{"global"})
	if err != nil || res.Action != Updated {
		t.Fatalf("remove: %+v, %v", res, err)
	}
	cm = getConfigMap(t, client, "kube-dns")
	if sd := stubDomainsOf(t, cm); len(sd) != 2 || sd["global"] != nil {
		t.Errorf("after remove: %v", sd)
	}
	if cm.Data["upstreamNameservers"] != upstream || cm.Data["unrelated"] != "keep me\n" {
		t.Errorf("remove changed other keys: %q", cm.Data)
	}
	before = len(configMapWrites(client))
	if res, err := p.Remove(ctx, []string{"global"}); err != nil || res.Action != Unchanged {
		t.Errorf("second remove: %+v, %v", res, err)
	}
	if w := configMapWrites(client); len(w) != before {
		t.Errorf("second remove wrote: %v", w[before:])
	}
}

func TestApplyKubeDNSCreatesAndRemoveDeletes(t *testing.T) {
	client := fake.NewClientset()
	p := &Patcher{Client: client, Namespace: "kube-system", Target: KubeDNS}
	ctx := context.Background()
	res, err := p.Apply(ctx, []string{"global"}, istioDNS)
	if err != nil || res.Action != Created {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	cm := getConfigMap(t, client, "kube-dns")
	if cm.Labels[managedByLabel] != managedBy || strings.Join(stubDomainsOf(t, cm)["global"], ",") != "10.0.0.53" {
		t.Errorf("created %v %q", cm.Labels, cm.Data)
	}
	// Our ConfigMap, empty again: deleted.
	if res, err := p.Remove(ctx, []string{"global"}); err != nil || res.Action != Deleted {
		t.Fatalf("remove: %+v, %v", res, err)
	}
	if _, err := client.CoreV1().ConfigMaps("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after remove: %v", err)
	}
	// Nothing there: nothing to do.
	if res, err := p.Remove(ctx, []string{"global"}); err != nil || res.Action != Unchanged {
		t.Errorf("remove again: %+v, %v", res, err)
	}

	// Someone else's ConfigMap with only our entry: the key goes, the ConfigMap stays.
	client = fake.NewClientset(configMap("kube-dns", map[string]string{"stubDomains": `{"global":["10.0.0.53"]}`}))
	p.Client = client
	if res, err := p.Remove(ctx, []string{"global"}); err != nil || res.Action != Updated {
		t.Fatalf("remove: %+v, %v", res, err)
	}
	if cm := getConfigMap(t, client, "kube-dns"); len(cm.Data) != 0 {
		t.Errorf("after remove: %q", cm.Data)
	}
}

func TestApplyCoreDNS(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(configMap("coredns", map[string]string{"Corefile": kubeadmCorefile}))
	p := &Patcher{Client: client, Namespace: "kube-system", Target: CoreDNS}
	res, err := p.Apply(ctx, []string{"global"}, istioDNSDual)
	if err != nil || res.Action != Updated || len(res.Warnings) != 0 {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	got := getConfigMap(t, client, "coredns").Data["Corefile"]
	if !strings.HasPrefix(got, kubeadmCorefile) || !strings.Contains(got, "forward . 10.0.0.53 fd00:10::35") {
		t.Errorf("Corefile:\n%s", got)
	}
	if servers, err := ServerBlockServers(got, "global"); err != nil || strings.Join(servers, ",") != "10.0.0.53,fd00:10::35" {
		t.Errorf("ServerBlockServers = %v, %v", servers, err)
	}
	before := len(configMapWrites(client))
	if res, err := p.Apply(ctx, []string{"global"}, istioDNSDual); err != nil || res.Action != Unchanged {
		t.Errorf("second apply: %+v, %v", res, err)
	}
	if res, err := p.Remove(ctx, []string{"global"}); err != nil || res.Action != Updated {
		t.Errorf("remove: %+v, %v", res, err)
	}
	if got := getConfigMap(t, client, "coredns").Data["Corefile"]; got != kubeadmCorefile {
		t.Errorf("remove did not restore the Corefile byte for byte:\n%s", got)
	}
	if n := len(configMapWrites(client)) - before; n != 1 {
		t.Errorf("%d writes for an unchanged apply and a remove, want 1", n)
	}

	// Without reload: applied, with a warning.
	noReload := strings.Replace(kubeadmCorefile, "    reload\n", "", 1)
	client = fake.NewClientset(configMap("coredns", map[string]string{"Corefile": noReload}))
	p.Client = client
	res, err = p.Apply(ctx, []string{"global"}, istioDNS)
	if err != nil || res.Action != Updated || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "reload") {
		t.Errorf("apply without reload: %+v, %v", res, err)
	}

	// The ConfigMap must exist: we do not invent a Corefile.
	p.Client = fake.NewClientset()
	if _, err := p.Apply(ctx, []string{"global"}, istioDNS); !errors.Is(err, ErrNoConfigMap) {
		t.Errorf("no coredns ConfigMap: err = %v", err)
	}
	if res, err := p.Remove(ctx, []string{"global"}); err != nil || res.Action != Unchanged {
		t.Errorf("remove without a ConfigMap: %+v, %v", res, err)
	}
}

// TestRefusals: a foreign block, bad JSON and a bad Corefile are errors that name the problem,
// and nothing is written.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		target Target
		cm     *corev1.ConfigMap
		want   string
		is     error
	}{
		{"foreign block", CoreDNS, configMap("coredns", map[string]string{"Corefile": kubeadmCorefile + "global:53 {\n    forward . 1.2.3.4\n}\n"}), "did not write", ErrForeignBlock},
		{"bad Corefile", CoreDNS, configMap("coredns", map[string]string{"Corefile": kubeadmCorefile + "global:53 {\n"}), "Corefile", nil},
		{"no Corefile key", CoreDNS, configMap("coredns", map[string]string{"other": "x"}), "no Corefile key", nil},
		{"bad JSON", KubeDNS, configMap("kube-dns", map[string]string{"stubDomains": `{"acme.local": ["1.2.3.4"],}`}), "stubDomains is not valid JSON", nil},
		{"not a list", KubeDNS, configMap("kube-dns", map[string]string{"stubDomains": `{"global": "10.0.0.53"}`}), "not a list of strings", nil},
	} {
		client := fake.NewClientset(tc.cm)
		p := &Patcher{Client: client, Namespace: "kube-system", Target: tc.target}
		for _, op := range []string{"apply", "remove"} {
			var err error
			if op == "apply" {
				_, err = p.Apply(ctx, []string{"global"}, istioDNS)
			} else {
				_, err = p.Remove(ctx, []string{"global"})
			}
			if op == "remove" && (tc.name == "no Corefile key" || tc.name == "foreign block" || tc.name == "not a list") {
				// Nothing of ours is there (or the zone's entry goes whatever it held).
				if err != nil {
					t.Errorf("%s: remove: %v", tc.name, err)
				}
				continue
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ConfigMap kube-system/"+tc.cm.Name) {
				t.Errorf("%s: %s: err = %v, want …%s…", tc.name, op, err, tc.want)
			}
			if tc.is != nil && op == "apply" && !errors.Is(err, tc.is) {
				t.Errorf("%s: err = %v, want %v", tc.name, err, tc.is)
			}
		}
		if w := configMapWrites(client); len(w) != 0 && tc.name != "not a list" {
			t.Errorf("%s: wrote %v", tc.name, w)
		}
	}
}

func TestApplyCoreDNSCustom(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(configMap("coredns-custom", map[string]string{"other.server": "acme:53 {\n    forward . 1.2.3.4\n}\n"}))
	p := &Patcher{Client: client, Namespace: "kube-system", Target: CoreDNSCustom}
	res, err := p.Apply(ctx, []string{"global", "mesh"}, istioDNS)
	if err != nil || res.Action != Updated {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	cm := getConfigMap(t, client, "coredns-custom")
	if want := ServerBlock("global", istioDNS) + ServerBlock("mesh", istioDNS); cm.Data["coredns-istio.server"] != want {
		t.Errorf("coredns-istio.server = %q, want %q", cm.Data["coredns-istio.server"], want)
	}
	if cm.Data["other.server"] != "acme:53 {\n    forward . 1.2.3.4\n}\n" {
		t.Errorf("other key changed: %q", cm.Data)
	}
	if res, err := p.Apply(ctx, []string{"global", "mesh"}, istioDNS); err != nil || res.Action != Unchanged {
		t.Errorf("second apply: %+v, %v", res, err)
	}
	rep, err := p.Status(ctx, []string{"global", "mesh"}, istioDNS)
	if err != nil || !rep.Match() {
		t.Errorf("status: %+v, %v", rep, err)
	}
	// Removing one zone keeps the other's block; removing both takes the key out.
	if _, err := p.Remove(ctx, []string{"mesh"}); err != nil {
		t.Fatal(err)
	}
	if got := getConfigMap(t, client, "coredns-custom").Data["coredns-istio.server"]; got != ServerBlock("global", istioDNS) {
		t.Errorf("after removing mesh: %q", got)
	}
	if _, err := p.Remove(ctx, []string{"global", "mesh"}); err != nil {
		t.Fatal(err)
	}
	cm = getConfigMap(t, client, "coredns-custom")
	if _, ok := cm.Data["coredns-istio.server"]; ok || len(cm.Data) != 1 {
		t.Errorf("after remove: %q", cm.Data)
	}

	// Missing: created, and deleted again by remove.
	client = fake.NewClientset()
	p.Client = client
	if res, err := p.Apply(ctx, []string{"global"}, istioDNS); err != nil || res.Action != Created {
		t.Errorf("apply: %+v, %v", res, err)
	}
	if res, err := p.Remove(ctx, []string{"global"}); err != nil || res.Action != Deleted {
		t.Errorf("remove: %+v, %v", res, err)
	}
}

func TestDryRun(t *testing.T) {
	ctx := context.Background()
	for _, target := range []Target{KubeDNS, CoreDNS, CoreDNSCustom} {
		client := fake.NewClientset(configMap("coredns", map[string]string{"Corefile": kubeadmCorefile}))
		p := &Patcher{Client: client, Namespace: "kube-system", Target: target, DryRun: true}
		res, err := p.Apply(ctx, []string{"global"}, istioDNS)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		want := map[Target]Action{KubeDNS: Created, CoreDNS: Updated, CoreDNSCustom: Created}[target]
		if res.Action != want || !strings.Contains(res.Diff, "--- kube-system/"+target.ConfigMap()+" "+target.Key()) || !strings.Contains(res.Diff, "+") {
			t.Errorf("%s: %+v", target, res)
		}
		if w := configMapWrites(client); len(w) != 0 {
			t.Errorf("%s: dry run wrote %v", target, w)
		}
	}
}

// TestConflictRetryMerges: someone writes between our Get and our Update; the API server
// answers 409; the retry reads their write and merges ours into it.
func TestConflictRetryMerges(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(configMap("kube-dns", map[string]string{"stubDomains": `{"acme.local": ["1.2.3.4"]}`}))
	updates := 0
	client.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		updates++
		if updates > 1 {
			return false, nil, nil // Let the tracker store it.
		}
		// The concurrent edit, stored first: another domain and another key.
		theirs := configMap("kube-dns", map[string]string{
			"stubDomains": `{"acme.local": ["1.2.3.4"], "corp": ["10.1.0.1"]}`,
			"theirs":      "1",
		})
		if err := client.Tracker().Update(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, theirs, "kube-system"); err != nil {
			t.Error(err)
		}
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "kube-dns", errors.New("the object has been modified"))
	})
	p := &Patcher{Client: client, Namespace: "kube-system", Target: KubeDNS}
	res, err := p.Apply(ctx, []string{"global"}, istioDNS)
	if err != nil || res.Action != Updated || res.Attempts != 2 {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	gets := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "get" {
			gets++
		}
	}
	if gets != 2 || updates != 2 {
		t.Errorf("%d gets, %d updates; want the retry to re-read: 2 and 2", gets, updates)
	}
	cm := getConfigMap(t, client, "kube-dns")
	sd := stubDomainsOf(t, cm)
	if len(sd) != 3 || sd["corp"] == nil || sd["acme.local"] == nil || sd["global"] == nil || cm.Data["theirs"] != "1" {
		t.Errorf("their write was lost: %q", cm.Data)
	}
}

func TestConflictGivesUp(t *testing.T) {
	client := fake.NewClientset(configMap("kube-dns", nil))
	client.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "kube-dns", errors.New("modified"))
	})
	p := &Patcher{Client: client, Namespace: "kube-system", Target: KubeDNS,
		Backoff: wait.Backoff{Steps: 3, Duration: time.Millisecond}}
	res, err := p.Apply(context.Background(), []string{"global"}, istioDNS)
	if !apierrors.IsConflict(err) || res.Attempts != 3 || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Errorf("%+v, %v", res, err)
	}
}

// TestCreateRace: the ConfigMap appears between our Get (NotFound) and our Create: the retry
// updates it instead.
func TestCreateRace(t *testing.T) {
	client := fake.NewClientset()
	creates := 0
	client.PrependReactor("create", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		creates++
		if creates > 1 {
			return false, nil, nil
		}
		if err := client.Tracker().Add(configMap("kube-dns", map[string]string{"upstreamNameservers": `["8.8.8.8"]`})); err != nil {
			t.Error(err)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "configmaps"}, "kube-dns")
	})
	p := &Patcher{Client: client, Namespace: "kube-system", Target: KubeDNS}
	res, err := p.Apply(context.Background(), []string{"global"}, istioDNS)
	if err != nil || res.Action != Updated || res.Attempts != 2 {
		t.Fatalf("%+v, %v", res, err)
	}
	if cm := getConfigMap(t, client, "kube-dns"); cm.Data["upstreamNameservers"] != `["8.8.8.8"]` || cm.Data["stubDomains"] == "" {
		t.Errorf("%q", cm.Data)
	}
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	other := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.9:0")}
	client := fake.NewClientset(configMap("kube-dns", map[string]string{
		"stubDomains": `{"global": ["10.0.0.53:53"], "mesh": ["10.0.0.9"]}`,
	}))
	p := &Patcher{Client: client, Namespace: "kube-system", Target: KubeDNS}
	rep, err := p.Status(ctx, []string{"global", "mesh", "absent"}, istioDNS)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Match() || len(rep.Zones) != 3 {
		t.Fatalf("%+v", rep)
	}
	if z := rep.Zones[0]; !z.Match || strings.Join(z.Configured, ",") != "10.0.0.53:53" {
		t.Errorf("global (port 53 written out is the same server): %+v", z)
	}
	if z := rep.Zones[1]; z.Match || strings.Join(z.Configured, ",") != "10.0.0.9" || strings.Join(z.Want, ",") != "10.0.0.53" {
		t.Errorf("mesh: %+v", z)
	}
	if z := rep.Zones[2]; z.Match || z.Configured != nil {
		t.Errorf("absent: %+v", z)
	}
	if rep, err := p.Status(ctx, []string{"mesh"}, other); err != nil || !rep.Match() {
		t.Errorf("mesh with its servers: %+v, %v", rep, err)
	}
	// A set: order does not matter.
	client = fake.NewClientset(configMap("kube-dns", map[string]string{"stubDomains": `{"global": ["fd00:10::35", "10.0.0.53"]}`}))
	p.Client = client
	if rep, err := p.Status(ctx, []string{"global"}, istioDNSDual); err != nil || !rep.Match() {
		t.Errorf("dual-stack in another order: %+v, %v", rep, err)
	}
	// Missing ConfigMap: not configured, not an error.
	p.Client = fake.NewClientset()
	if rep, err := p.Status(ctx, []string{"global"}, istioDNS); err != nil || rep.Match() {
		t.Errorf("no ConfigMap: %+v, %v", rep, err)
	}
	// Bad JSON: an error.
	p.Client = fake.NewClientset(configMap("kube-dns", map[string]string{"stubDomains": `{`}))
	if _, err := p.Status(ctx, []string{"global"}, istioDNS); err == nil || !strings.Contains(err.Error(), "stubDomains") {
		t.Errorf("bad JSON: err = %v", err)
	}

	// CoreDNS: a foreign block is reported as such; a missing reload warned about.
	p = &Patcher{Client: fake.NewClientset(configMap("coredns", map[string]string{
		"Corefile": strings.Replace(kubeadmCorefile, "    reload\n", "", 1) + "global:53 {\n    forward . 1.2.3.4\n}\n",
	})), Namespace: "kube-system", Target: CoreDNS}
	rep, err = p.Status(ctx, []string{"global"}, istioDNS)
	if err != nil || rep.Match() || !strings.Contains(rep.Zones[0].Note, "did not write") || len(rep.Warnings) != 1 {
		t.Errorf("foreign: %+v, %v", rep, err)
	}
}
