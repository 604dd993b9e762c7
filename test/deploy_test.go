package test

// Tests of the manifests in deploy/: each kustomization (the base and every overlay) is
// rendered with the kustomize library (no kubectl), then
//   - every object passes a server-side dry-run create against the real API server;
//   - the RBAC objects, applied for real, grant exactly what the binary needs: coredns-istio
//     runs on the rendered Corefile as the istiocoredns ServiceAccount and answers, but that
//     identity cannot read Secrets or write ServiceEntries; the stubdomain patcher may update
//     only the cluster DNS ConfigMaps;
//   - every workload is hardened (non-root, read-only root filesystem, no privilege
//     escalation, all capabilities dropped, probes, resources, replicas and a PDB).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const (
	deployDir        = "../deploy"
	deployNamespace  = "istio-system"
	dnsNamespace     = "kube-system"
	serverName       = "istiocoredns"            // ServiceAccount, ClusterRole(Binding), ConfigMap, Deployment, Service, PDB
	patcherName      = "istiocoredns-stubdomain" // ServiceAccount, Deployment, Roles, RoleBindings
	persistedOverlay = "overlays/persisted-allocation"
	allocationsCM    = "coredns-istio-vips"
)

// deployVariants are the kustomizations that must exist and render; deployKustomizations adds
// any further overlay it finds.
var deployVariants = []string{
	"base",
	"overlays/kube-dns",
	"overlays/coredns",
	"overlays/aks",
	persistedOverlay,
}

// deployKustomizations returns the base and every overlay directory under deploy/.
func deployKustomizations(t *testing.T) []string {
	t.Helper()
	if _, err := os.Stat(deployDir); err != nil {
		t.Fatalf("deploy/: %v", err)
	}
	variants := slices.Clone(deployVariants)
	if _, err := os.Stat(filepath.Join(deployDir, "kustomization.yaml")); err == nil {
		variants = append(variants, ".") // deploy/ itself, for `kubectl apply -k deploy`
	}
	dirs, _ := filepath.Glob(filepath.Join(deployDir, "overlays", "*", "kustomization.yaml"))
	for _, d := range dirs {
		rel, _ := filepath.Rel(deployDir, filepath.Dir(d))
		if !slices.Contains(variants, rel) {
			variants = append(variants, rel)
		}
	}
	return variants
}

var renders = struct {
	sync.Mutex
	m map[string][]*unstructured.Unstructured
}{m: map[string][]*unstructured.Unstructured{}}

// render builds deploy/VARIANT with kustomize's library, as `kubectl kustomize` would, and
// returns its objects. Results are cached: tests must not modify them (use DeepCopy).
func render(t *testing.T, variant string) []*unstructured.Unstructured {
	t.Helper()
	renders.Lock()
	defer renders.Unlock()
	if objs, ok := renders.m[variant]; ok {
		return objs
	}
	dir, err := filepath.Abs(filepath.Join(deployDir, variant))
	if err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build deploy/%s: %v", variant, err)
	}
	y, err := resMap.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build deploy/%s: %v", variant, err)
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(y)), 1<<16)
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("deploy/%s: decoding the rendered YAML: %v", variant, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	if len(objs) == 0 {
		t.Fatalf("deploy/%s renders no objects", variant)
	}
	renders.m[variant] = objs
	return objs
}

// find returns the rendered object of that kind, namespace and name, or nil.
func find(objs []*unstructured.Unstructured, kind, namespace, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == namespace && o.GetName() == name {
			return o
		}
	}
	return nil
}

func describe(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetKind() + " " + o.GetName()
	}
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// TestDeployRender checks that every kustomization renders and holds the objects the other
// tests, and the README, rely on.
func TestDeployRender(t *testing.T) {
	// deploy/base/kustomization.yaml: "Corefile is a copy of corefile/Corefile, which is the
	// source" (kustomize cannot read files outside the kustomization's directory).
	src, err1 := os.ReadFile("../corefile/Corefile")
	copied, err2 := os.ReadFile(filepath.Join(deployDir, "base", "Corefile"))
	if err := errors.Join(err1, err2); err != nil {
		t.Error(err)
	} else if string(src) != string(copied) {
		t.Error("deploy/base/Corefile is not a copy of corefile/Corefile")
	}
	for _, v := range deployKustomizations(t) {
		t.Run(v, func(t *testing.T) {
			objs := render(t, v)
			var names []string
			for _, o := range objs {
				names = append(names, describe(o))
			}
			t.Logf("deploy/%s: %s", v, strings.Join(names, ", "))
			for _, want := range [][2]string{
				{"ServiceAccount", serverName}, {"ConfigMap", serverName}, {"Deployment", serverName},
				{"Service", serverName}, {"PodDisruptionBudget", serverName},
			} {
				if find(objs, want[0], deployNamespace, want[1]) == nil {
					t.Errorf("no %s %s/%s", want[0], deployNamespace, want[1])
				}
			}
			for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
				if find(objs, kind, "", serverName) == nil {
					t.Errorf("no %s %s", kind, serverName)
				}
			}
			if cm := find(objs, "ConfigMap", deployNamespace, serverName); cm != nil {
				if s, _, _ := unstructured.NestedString(cm.Object, "data", "Corefile"); s == "" {
					t.Errorf("ConfigMap %s/%s has no Corefile", deployNamespace, serverName)
				}
			}
		})
	}
}

// deployMapper maps the rendered objects' kinds to resources by the API server's discovery,
// which includes the Istio CRDs.
func deployMapper(t *testing.T) meta.RESTMapper {
	t.Helper()
	return restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(kubeClient.Discovery()))
}

// resourceFor returns the dynamic client for o's kind in its namespace; namespaced objects
// must name their namespace (an unset one would land in whatever namespace kubectl defaults
// to).
func resourceFor(t *testing.T, dyn dynamic.Interface, mapper meta.RESTMapper, o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	t.Helper()
	gvk := o.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", describe(o), gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameRoot {
		if o.GetNamespace() != "" {
			return nil, fmt.Errorf("%s: cluster-scoped, yet has namespace %q", describe(o), o.GetNamespace())
		}
		return dyn.Resource(m.Resource), nil
	}
	if o.GetNamespace() == "" {
		return nil, fmt.Errorf("%s: namespaced but sets no namespace", describe(o))
	}
	return dyn.Resource(m.Resource).Namespace(o.GetNamespace()), nil
}

// TestDeployServerSideDryRun creates every rendered object with dryRun=All: the API server
// validates it (schema, defaults, admission) and stores nothing. Objects that exist already
// (the namespaces) are server-side applied with dryRun=All instead.
func TestDeployServerSideDryRun(t *testing.T) {
	createNamespace(t, deployNamespace)
	createNamespace(t, dnsNamespace)
	dyn := dynamic.NewForConfigOrDie(restConfig)
	mapper := deployMapper(t)
	for _, v := range deployKustomizations(t) {
		t.Run(v, func(t *testing.T) {
			for _, o := range render(t, v) {
				client, err := resourceFor(t, dyn, mapper, o)
				if err != nil {
					t.Error(err)
					continue
				}
				ctx := apiContext(t)
				_, err = client.Create(ctx, o.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
				if apierrors.IsAlreadyExists(err) {
					_, err = client.Apply(ctx, o.GetName(), o.DeepCopy(), metav1.ApplyOptions{
						DryRun: []string{metav1.DryRunAll}, FieldManager: "deploy-test", Force: true,
					})
				}
				if err != nil {
					t.Errorf("dry-run %s: %v", describe(o), err)
				}
			}
		})
	}
}

// rbacKinds are what applyRBAC applies for real.
var rbacKinds = []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}

// applyRBAC creates (or replaces) the rendered RBAC objects and ServiceAccounts of variant for
// real and deletes them when the test ends.
func applyRBAC(t *testing.T, variant string) []*unstructured.Unstructured {
	t.Helper()
	createNamespace(t, deployNamespace)
	dyn := dynamic.NewForConfigOrDie(restConfig)
	mapper := deployMapper(t)
	var applied []*unstructured.Unstructured
	for _, o := range render(t, variant) {
		if !slices.Contains(rbacKinds, o.GetKind()) {
			continue
		}
		if o.GetNamespace() != "" {
			createNamespace(t, o.GetNamespace())
		}
		client, err := resourceFor(t, dyn, mapper, o)
		if err != nil {
			t.Fatal(err)
		}
		ctx := apiContext(t)
		obj := o.DeepCopy()
		_, err = client.Create(ctx, obj, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
				cur, err := client.Get(ctx, obj.GetName(), metav1.GetOptions{})
				if err != nil {
					return err
				}
				obj.SetResourceVersion(cur.GetResourceVersion())
				_, err = client.Update(ctx, obj, metav1.UpdateOptions{})
				return err
			})
		}
		if err != nil {
			t.Fatalf("applying %s: %v", describe(o), err)
		}
		t.Cleanup(func() {
			err := client.Delete(apiContext(t), o.GetName(), metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting %s: %v", describe(o), err)
			}
		})
		applied = append(applied, o)
	}
	if len(applied) == 0 {
		t.Fatalf("deploy/%s has no RBAC objects", variant)
	}
	return applied
}

// identity is a ServiceAccount's kubeconfig and clients.
type identity struct {
	name       string
	kubeconfig string
	kube       kubernetes.Interface
	istio      istioclient.Interface
}

func serviceAccount(t *testing.T, namespace, name string) *identity {
	t.Helper()
	path := serviceAccountKubeconfig(t, namespace, name)
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	return &identity{
		name:       "system:serviceaccount:" + namespace + ":" + name,
		kubeconfig: path,
		kube:       kubernetes.NewForConfigOrDie(cfg),
		istio:      istioclient.NewForConfigOrDie(cfg),
	}
}

// allowed fails the test unless err is nil; forbidden fails it unless err is Forbidden.
func (id *identity) allowed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s must be allowed to %s: %v", id.name, what, err)
	}
}

func (id *identity) forbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s must be forbidden to %s, got %v", id.name, what, err)
	}
}

// cannotReadSecrets checks get, list and watch of Secrets in the namespaces that matter.
func (id *identity) cannotReadSecrets(t *testing.T) {
	t.Helper()
	ctx := apiContext(t)
	for _, ns := range []string{deployNamespace, dnsNamespace, metav1.NamespaceAll} {
		s := id.kube.CoreV1().Secrets(ns)
		_, err := s.List(ctx, metav1.ListOptions{})
		id.forbidden(t, fmt.Sprintf("list Secrets in %q", ns), err)
		if ns != metav1.NamespaceAll {
			_, err = s.Get(ctx, "any", metav1.GetOptions{})
			id.forbidden(t, "get Secrets in "+ns, err)
			w, err := s.Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			id.forbidden(t, "watch Secrets in "+ns, err)
		}
	}
}

// updateConfigMap adds an annotation to the ConfigMap as id.
func (id *identity) updateConfigMap(ctx context.Context, namespace, name string) error {
	c := id.kube.CoreV1().ConfigMaps(namespace)
	cm, err := c.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsForbidden(err) {
		// Without get, update is still worth asking about: build the object from the admin's.
		cm, err = kubeClient.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations["deploy-test"] = time.Now().Format(time.RFC3339Nano)
	_, err = c.Update(ctx, cm, metav1.UpdateOptions{})
	return err
}

// deployCorefile turns the rendered Corefile into a startCoreDNS template:
//   - `{{` cannot occur in a Corefile we accept, so the text is safe as a template;
//   - every server block key's port 1053 (the port inside the pod) becomes {{.Port}}, and a
//     `bind 127.0.0.1` is added to that block (in the pod the Corefile binds all addresses);
//   - ready, health and prometheus keep their blocks and arguments other than the address,
//     which becomes 127.0.0.1:{{.ReadyPort}}, {{.HealthPort}} and {{.MetricsPort}};
//   - istioglobal gets `kubeconfig PATH` (PATH: the kubeconfig file of the ServiceAccount
//     under test, written literally, because {{.Kubeconfig}} is the admin's) instead of the
//     in-cluster configuration: an existing kubeconfig line is replaced, otherwise the line
//     is added as the first of its block, creating the block when it has none;
//   - health's lameduck is dropped (it only delays the stop at cleanup);
//   - plugins that would reach outside 127.0.0.0/8 (forward, kubernetes...) are refused: the
//     test fails, naming them, rather than sending anything off the host.
func deployCorefile(t testing.TB, corefile, saKubeconfig string) string {
	t.Helper()
	if strings.Contains(corefile, "{{") || strings.Contains(saKubeconfig, "{{") {
		t.Fatalf("Corefile or kubeconfig path holds {{, which the template cannot take:\n%s", corefile)
	}
	if strings.ContainsAny(saKubeconfig, " \t\"'{}#") {
		t.Fatalf("kubeconfig path %q cannot go into a Corefile unquoted", saKubeconfig)
	}
	addr := map[string]string{
		"ready":      "127.0.0.1:{{.ReadyPort}}",
		"health":     "127.0.0.1:{{.HealthPort}}",
		"prometheus": "127.0.0.1:{{.MetricsPort}}",
	}
	offHost := []string{"forward", "kubernetes", "grpc", "etcd", "route53", "azure", "clouddns", "k8s_external", "trace", "dnstap"}
	lines := strings.Split(corefile, "\n")
	var out []string
	depth := 0
	servers, istioglobals := 0, 0
	inIstioglobal := -1 // depth of istioglobal's block while in it
	for _, line := range lines {
		code, _, _ := strings.Cut(line, "#")
		fields := strings.Fields(code)
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		opens := strings.Count(code, "{")
		closes := strings.Count(code, "}")
		switch {
		case len(fields) == 0:
			out = append(out, line)
		case depth == 0 && opens > 0: // A server block: keys, then {.
			servers++
			keys := fields[:len(fields)-1]
			for i, k := range keys {
				if !strings.HasSuffix(k, ":1053") {
					t.Fatalf("server block key %q does not listen on port 1053", k)
				}
				keys[i] = strings.TrimSuffix(k, "1053") + "{{.Port}}"
			}
			out = append(out, strings.Join(keys, " ")+" {", "    bind 127.0.0.1")
		case depth == 1 && fields[0] == "bind":
			// Replaced by ours above.
		case depth == 1 && addr[fields[0]] != "":
			args := fields[1:]
			if len(args) > 0 && args[0] != "{" {
				args = args[1:] // the address
			}
			out = append(out, indent+strings.Join(append([]string{fields[0], addr[fields[0]]}, args...), " "))
		case depth == 1 && slices.Contains(offHost, fields[0]):
			t.Fatalf("the Corefile uses %s, which would reach outside the test host:\n%s", fields[0], corefile)
		case depth == 1 && fields[0] == "istioglobal":
			istioglobals++
			kc := indent + "    kubeconfig " + saKubeconfig
			if fields[len(fields)-1] == "{" {
				out = append(out, line, kc)
				inIstioglobal = depth + 1
			} else {
				out = append(out, indent+strings.Join(fields, " ")+" {", kc, indent+"}")
			}
		case depth == inIstioglobal && fields[0] == "kubeconfig":
			// Replaced by ours above.
		case depth == 2 && fields[0] == "lameduck":
			// health's lameduck delays every stop by its duration (5s); the test stops the
			// server at cleanup and has nothing to drain.
		default:
			out = append(out, line)
		}
		depth += opens - closes
		if inIstioglobal > 0 && depth < inIstioglobal {
			inIstioglobal = -1
		}
	}
	if depth != 0 || servers == 0 || istioglobals == 0 {
		t.Fatalf("cannot make sense of the Corefile (%d server blocks, %d istioglobal, unbalanced braces: %v):\n%s",
			servers, istioglobals, depth != 0, corefile)
	}
	return strings.Join(out, "\n")
}

// TestDeployCorefileTemplate pins deployCorefile's rewriting on a Corefile of the expected shape.
func TestDeployCorefileTemplate(t *testing.T) {
	in := `global:1053 {
    errors
    health :8080 {
        lameduck 5s
    }
    ready :8181
    prometheus :9153
    istioglobal {
        kubeconfig
        ttl 30 # comment
    }
    cache 30
    reload
}
`
	want := `global:{{.Port}} {
    bind 127.0.0.1
    errors
    health 127.0.0.1:{{.HealthPort}} {
    }
    ready 127.0.0.1:{{.ReadyPort}}
    prometheus 127.0.0.1:{{.MetricsPort}}
    istioglobal {
        kubeconfig /k
        ttl 30 # comment
    }
    cache 30
    reload
}
`
	if got := deployCorefile(t, in, "/k"); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := deployCorefile(t, "global:1053 {\n  istioglobal global\n  ready\n}\n", "/k"); got !=
		"global:{{.Port}} {\n    bind 127.0.0.1\n  istioglobal global {\n      kubeconfig /k\n  }\n  ready 127.0.0.1:{{.ReadyPort}}\n}\n" {
		t.Errorf("got:\n%s", got)
	}
}

// runDeployedServer runs coredns-istio on variant's rendered Corefile as the istiocoredns
// ServiceAccount and checks that it becomes ready and answers for a ServiceEntry.
func runDeployedServer(t *testing.T, variant string, server *identity, seNamespace string) *coreDNS {
	t.Helper()
	cm := find(render(t, variant), "ConfigMap", deployNamespace, serverName)
	if cm == nil {
		t.Fatalf("deploy/%s has no ConfigMap %s/%s", variant, deployNamespace, serverName)
	}
	corefile, _, _ := unstructured.NestedString(cm.Object, "data", "Corefile")
	tmpl := deployCorefile(t, corefile, server.kubeconfig)
	createNamespace(t, seNamespace)
	applyServiceEntry(t, serviceEntryV1(seNamespace, "deploy-httpbin", []string{"httpbin.deploy.global"}, "127.255.7.1"))
	c := startCoreDNS(t, tmpl)
	c.waitReady(t, 20*time.Second)
	answersWithin(t, c, 10*time.Second, "httpbin.deploy.global", "127.255.7.1")
	if out := c.output(); strings.Contains(out, "forbidden") {
		t.Errorf("coredns-istio was refused something:\n%s", out)
	}
	return c
}

// TestDeployServerLeastPrivilege: with the base's RBAC, the istiocoredns ServiceAccount runs
// the server on the rendered Corefile, and can do nothing else that matters.
func TestDeployServerLeastPrivilege(t *testing.T) {
	applyRBAC(t, "base")
	server := serviceAccount(t, deployNamespace, serverName)
	const ns = "deploy-se"
	runDeployedServer(t, "base", server, ns)

	ctx := apiContext(t)
	_, err := server.istio.NetworkingV1().ServiceEntries(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	server.allowed(t, "list ServiceEntries in all namespaces", err)
	se, err := server.istio.NetworkingV1().ServiceEntries(ns).Get(ctx, "deploy-httpbin", metav1.GetOptions{})
	server.allowed(t, "get a ServiceEntry", err)
	server.cannotReadSecrets(t)

	ses := server.istio.NetworkingV1().ServiceEntries(ns)
	_, err = ses.Create(ctx, serviceEntryV1(ns, "deploy-new", []string{"new.deploy.global"}, "127.255.7.2"), metav1.CreateOptions{})
	server.forbidden(t, "create a ServiceEntry", err)
	if se != nil {
		se.Spec.Addresses = []string{"127.255.7.3"}
		_, err = ses.Update(ctx, se, metav1.UpdateOptions{})
		server.forbidden(t, "update a ServiceEntry", err)
		_, err = ses.UpdateStatus(ctx, se, metav1.UpdateOptions{})
		server.forbidden(t, "update a ServiceEntry's status", err)
	}
	err = ses.Delete(ctx, "deploy-httpbin", metav1.DeleteOptions{})
	server.forbidden(t, "delete a ServiceEntry", err)
	_, err = server.kube.CoreV1().ConfigMaps(deployNamespace).List(ctx, metav1.ListOptions{})
	server.forbidden(t, "list ConfigMaps (base: no persisted allocations)", err)
	_, err = server.kube.CoreV1().Pods(deployNamespace).List(ctx, metav1.ListOptions{})
	server.forbidden(t, "list Pods", err)
}

// patcherVariant is the first kustomization, the base first, that deploys the patcher.
func patcherVariant(t *testing.T) string {
	t.Helper()
	for _, v := range append([]string{"base", "overlays/coredns"}, deployKustomizations(t)...) {
		if find(render(t, v), "Deployment", deployNamespace, patcherName) != nil {
			return v
		}
	}
	t.Fatalf("no kustomization in deploy/ has Deployment %s/%s", deployNamespace, patcherName)
	return ""
}

// TestDeployPatcherLeastPrivilege: the stubdomain patcher may update the cluster DNS's
// ConfigMap, and `stubdomain apply` works as it, but it cannot touch other ConfigMaps or read
// Secrets.
func TestDeployPatcherLeastPrivilege(t *testing.T) {
	variant := patcherVariant(t)
	t.Logf("the patcher's RBAC from deploy/%s", variant)
	applyRBAC(t, variant)
	patcher := serviceAccount(t, deployNamespace, patcherName)
	applyConfigMap(t, dnsNamespace, "coredns", nil, map[string]string{"Corefile": kubeadmCorefileReload})
	applyConfigMap(t, dnsNamespace, "other", nil, map[string]string{"x": "y"})
	applyConfigMap(t, deployNamespace, "other", nil, map[string]string{"x": "y"})

	ctx := apiContext(t)
	patcher.allowed(t, "update ConfigMap kube-system/coredns", patcher.updateConfigMap(ctx, dnsNamespace, "coredns"))
	patcher.forbidden(t, "update ConfigMap kube-system/other", patcher.updateConfigMap(ctx, dnsNamespace, "other"))
	patcher.forbidden(t, "update ConfigMap istio-system/other", patcher.updateConfigMap(ctx, deployNamespace, "other"))
	err := patcher.kube.CoreV1().ConfigMaps(dnsNamespace).Delete(ctx, "coredns", metav1.DeleteOptions{})
	patcher.forbidden(t, "delete ConfigMap kube-system/coredns", err)
	patcher.cannotReadSecrets(t)
	_, err = patcher.istio.NetworkingV1().ServiceEntries(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	patcher.forbidden(t, "list ServiceEntries", err)

	cmd := exec.Command(corednsBinary, "stubdomain", "apply", "--target", "coredns", "--ip", "127.0.0.1",
		"--kubeconfig", patcher.kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("stubdomain apply as %s: %v\n%s", patcher.name, err, out)
	}
	t.Logf("stubdomain apply:\n%s", out)
	if got := getConfigMap(t, dnsNamespace, "coredns").Data["Corefile"]; !strings.Contains(got, "forward . 127.0.0.1") {
		t.Errorf("kube-system/coredns after apply:\n%s", got)
	}
}

// TestDeployPersistedAllocationLeastPrivilege: in the persisted-allocation overlay, the
// server may update its allocations ConfigMap but no other, and still runs and answers.
func TestDeployPersistedAllocationLeastPrivilege(t *testing.T) {
	applyRBAC(t, persistedOverlay)
	server := serviceAccount(t, deployNamespace, serverName)
	shards := make([]string, 32)
	for i := range shards {
		shards[i] = fmt.Sprintf("%s-%02d", allocationsCM, i)
	}
	for _, name := range append([]string{allocationsCM, allocationsCM + "-32"}, shards...) {
		applyConfigMap(t, deployNamespace, name, nil, nil)
		deleteConfigMapAtEnd(t, deployNamespace, name)
	}
	applyConfigMap(t, deployNamespace, "other", nil, map[string]string{"x": "y"})

	ctx := apiContext(t)
	for _, name := range []string{allocationsCM, shards[0], shards[31]} {
		server.allowed(t, "update ConfigMap "+deployNamespace+"/"+name, server.updateConfigMap(ctx, deployNamespace, name))
	}
	server.forbidden(t, "update ConfigMap "+deployNamespace+"/"+allocationsCM+"-32", server.updateConfigMap(ctx, deployNamespace, allocationsCM+"-32"))
	server.forbidden(t, "update ConfigMap "+deployNamespace+"/other", server.updateConfigMap(ctx, deployNamespace, "other"))
	server.forbidden(t, "update ConfigMap kube-system/coredns-like", server.updateConfigMap(ctx, dnsNamespace, "extension-apiserver-authentication"))
	server.cannotReadSecrets(t)

	const ns = "deploy-se-persisted"
	c := runDeployedServer(t, persistedOverlay, server, ns)

	// A host without an address gets a VIP, which the server, as the Lease holder, writes
	// into a shard: create/get/update of the Lease and update of the shards work.
	applyServiceEntry(t, serviceEntryV1(ns, "deploy-noaddr", []string{"noaddr.deploy.global"}))
	eventually(t, 15*time.Second, func() error {
		got := aValues(t, c, "noaddr.deploy.global")
		if got == "NXDOMAIN" || got == "NODATA" || got == "SERVFAIL" {
			return fmt.Errorf("noaddr.deploy.global: %s", got)
		}
		v4, _, _ := strings.Cut(got, ",")
		for _, name := range shards {
			cm, err := kubeClient.CoreV1().ConfigMaps(deployNamespace).Get(apiContext(t), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if v, ok := cm.Data[v4]; ok && strings.HasPrefix(v, "noaddr.deploy.global") {
				return nil
			}
		}
		return fmt.Errorf("no shard of %s/%s holds %s for noaddr.deploy.global", deployNamespace, allocationsCM, v4)
	})
	if out := c.output(); strings.Contains(out, "forbidden") {
		t.Errorf("coredns-istio was refused something:\n%s", out)
	}
}

// TestDeployHardening checks every workload of every kustomization.
func TestDeployHardening(t *testing.T) {
	for _, v := range deployKustomizations(t) {
		t.Run(v, func(t *testing.T) {
			objs := render(t, v)
			workloads := 0
			for _, o := range objs {
				var spec *corev1.PodSpec
				var podLabels map[string]string
				switch o.GetKind() {
				case "Deployment":
					var d appsv1.Deployment
					fromUnstructured(t, o, &d)
					spec, podLabels = &d.Spec.Template.Spec, d.Spec.Template.Labels
					if o.GetName() == serverName {
						if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
							t.Errorf("%s: replicas %v, want 2", describe(o), d.Spec.Replicas)
						}
						checkPDB(t, objs, o, podLabels)
					}
				case "Job":
					var j batchv1.Job
					fromUnstructured(t, o, &j)
					spec = &j.Spec.Template.Spec
				case "StatefulSet", "DaemonSet", "CronJob", "Pod", "ReplicaSet":
					t.Errorf("%s: unexpected workload kind; extend this test", describe(o))
					continue
				default:
					continue
				}
				workloads++
				checkPodSpec(t, describe(o), o.GetName(), spec)
			}
			if workloads == 0 {
				t.Errorf("deploy/%s has no workloads", v)
			}
		})
	}
}

func fromUnstructured(t *testing.T, o *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, into, true); err != nil {
		t.Fatalf("%s: %v", describe(o), err)
	}
}

// checkPDB requires a PodDisruptionBudget istiocoredns that selects the Deployment's pods and
// lets at most one replica at a time be evicted, yet does allow evictions.
func checkPDB(t *testing.T, objs []*unstructured.Unstructured, d *unstructured.Unstructured, podLabels map[string]string) {
	t.Helper()
	o := find(objs, "PodDisruptionBudget", deployNamespace, serverName)
	if o == nil {
		t.Errorf("no PodDisruptionBudget %s/%s for %s", deployNamespace, serverName, describe(d))
		return
	}
	var pdb policyv1.PodDisruptionBudget
	fromUnstructured(t, o, &pdb)
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || pdb.Spec.Selector == nil || sel.Empty() || !sel.Matches(labels.Set(podLabels)) {
		t.Errorf("%s: selector %v does not select the pods of %s (%v)", describe(o), pdb.Spec.Selector, describe(d), podLabels)
	}
	if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
		t.Errorf("%s: neither minAvailable nor maxUnavailable", describe(o))
	}
}

// checkPodSpec reports podSpecProblems as errors, and what is only worth a remark in the log.
func checkPodSpec(t *testing.T, what, name string, spec *corev1.PodSpec) {
	t.Helper()
	problems, remarks := podSpecProblems(what, name, spec)
	for _, p := range problems {
		t.Error(p)
	}
	for _, r := range remarks {
		t.Log(r)
	}
}

// podSpecProblems applies the hardening rules to every container and init container of the
// workload called name.
func podSpecProblems(what, name string, spec *corev1.PodSpec) (problems, remarks []string) {
	errorf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	logf := func(format string, args ...any) { remarks = append(remarks, fmt.Sprintf(format, args...)) }
	pod := spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken {
		logf("%s: automountServiceAccountToken false (it needs the API)", what)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		errorf("%s: uses host namespaces", what)
	}
	type ctr struct {
		c    corev1.Container
		init bool
	}
	var all []ctr
	for _, c := range spec.InitContainers {
		all = append(all, ctr{c, true})
	}
	for _, c := range spec.Containers {
		all = append(all, ctr{c, false})
	}
	for _, cc := range all {
		c := cc.c
		where := fmt.Sprintf("%s container %s", what, c.Name)
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		runAsNonRoot := pod.RunAsNonRoot
		if sc.RunAsNonRoot != nil {
			runAsNonRoot = sc.RunAsNonRoot
		}
		if runAsNonRoot == nil || !*runAsNonRoot {
			errorf("%s: runAsNonRoot is not true (pod or container)", where)
		}
		runAsUser := pod.RunAsUser
		if sc.RunAsUser != nil {
			runAsUser = sc.RunAsUser
		}
		if runAsUser != nil && *runAsUser == 0 {
			errorf("%s: runAsUser 0", where)
		}
		if runAsUser == nil {
			logf("%s: no runAsUser; the image's user must be numeric and non-root for runAsNonRoot to admit it", where)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			errorf("%s: readOnlyRootFilesystem is not true", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			errorf("%s: allowPrivilegeEscalation is not false", where)
		}
		if sc.Privileged != nil && *sc.Privileged {
			errorf("%s: privileged", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			errorf("%s: does not drop ALL capabilities", where)
		}
		if sc.Capabilities != nil {
			for _, a := range sc.Capabilities.Add {
				if a != "NET_BIND_SERVICE" {
					errorf("%s: adds capability %s", where, a)
				}
			}
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				errorf("%s: no %s request", where, r)
			}
		}
		if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
			errorf("%s: no memory limit", where)
		}
		if _, ok := c.Resources.Limits[corev1.ResourceCPU]; !ok {
			errorf("%s: no cpu limit", where)
		}
		if cc.init {
			continue
		}
		switch name {
		case serverName:
			if c.ReadinessProbe == nil {
				errorf("%s: no readiness probe", where)
			}
			if c.LivenessProbe == nil {
				errorf("%s: no liveness probe", where)
			}
		default:
			if c.LivenessProbe == nil {
				errorf("%s: no liveness probe", where)
			}
		}
	}
	return problems, remarks
}

// TestDeployHardeningRules checks that podSpecProblems catches each rule's violation.
func TestDeployHardeningRules(t *testing.T) {
	yes, no, root := true, false, int64(0)
	bad := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init"}},
		Containers: []corev1.Container{{
			Name: "coredns",
			SecurityContext: &corev1.SecurityContext{
				RunAsNonRoot: &no, RunAsUser: &root, ReadOnlyRootFilesystem: &no,
				AllowPrivilegeEscalation: &yes, Privileged: &yes,
				Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_BIND_SERVICE"}},
			},
		}},
	}
	problems, _ := podSpecProblems("Deployment x", serverName, bad)
	all := strings.Join(problems, "\n")
	for _, want := range []string{
		"container init: runAsNonRoot is not true", "container init: readOnlyRootFilesystem is not true",
		"container init: allowPrivilegeEscalation is not false", "container init: does not drop ALL",
		"container init: no cpu request", "container init: no memory limit",
		"container coredns: runAsNonRoot is not true", "container coredns: runAsUser 0",
		"container coredns: readOnlyRootFilesystem", "container coredns: allowPrivilegeEscalation",
		"container coredns: privileged", "container coredns: does not drop ALL",
		"container coredns: adds capability NET_ADMIN", "container coredns: no readiness probe",
		"container coredns: no liveness probe", "container coredns: no memory request",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no problem %q in:\n%s", want, all)
		}
	}
	if strings.Contains(all, "NET_BIND_SERVICE") || strings.Contains(all, "container init: no readiness") {
		t.Errorf("too strict:\n%s", all)
	}
	// The pod's runAsUser 0 counts for containers that set none.
	bad.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &root}
	bad.Containers[0].SecurityContext = nil
	problems, _ = podSpecProblems("Deployment x", serverName, bad)
	if all := strings.Join(problems, "\n"); !strings.Contains(all, "container coredns: runAsUser 0") ||
		strings.Contains(all, "container coredns: runAsNonRoot") {
		t.Errorf("pod-level security context:\n%s", all)
	}
}
