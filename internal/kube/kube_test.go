package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "https://127.0.0.1:6443"}
- name: b
  cluster: {server: "https://127.0.0.2:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: a
  context: {cluster: a, user: u}
- name: b
  context: {cluster: b, user: u}
current-context: a
`

func TestConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a cluster
	for _, fallback := range []Fallback{InCluster, InClusterThenLocal} {
		cfg, err := Config(path, "b", fallback, "agent")
		if err != nil || cfg.Host != "https://127.0.0.2:6443" || cfg.UserAgent != "agent" {
			t.Errorf("fallback %d: path and context: %+v, %v", fallback, cfg, err)
		}
	}
	// Nothing given, not in a cluster: the plugin does not go looking for a person's config.
	t.Setenv("KUBECONFIG", path)
	if _, err := Config("", "", InCluster, "agent"); err == nil || !strings.Contains(err.Error(), "no in-cluster config") {
		t.Errorf("InCluster, not in a cluster: %v", err)
	}
	// The patcher takes $KUBECONFIG then.
	if cfg, err := Config("", "", InClusterThenLocal, "agent"); err != nil || cfg.Host != "https://127.0.0.1:6443" {
		t.Errorf("InClusterThenLocal: %+v, %v", cfg, err)
	}
}

// The informers of ObjectInformers list and watch one object, by a field selector on its name.
func TestObjectInformers(t *testing.T) {
	client := fake.NewClientset()
	var selectors []string
	client.PrependReactor("list", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		selectors = append(selectors, a.(k8stesting.ListAction).GetListRestrictions().Fields.String())
		return false, nil, nil
	})
	f := ObjectInformers(client, "kube-system", "coredns", 0)
	informer := f.Core().V1().ConfigMaps().Informer()
	stop := make(chan struct{})
	defer close(stop)
	f.Start(stop)
	if !cache.WaitForCacheSync(stop, informer.HasSynced) {
		t.Fatal("no sync")
	}
	if len(selectors) == 0 || selectors[0] != "metadata.name=coredns" {
		t.Errorf("list field selectors %q, want metadata.name=coredns", selectors)
	}
}
