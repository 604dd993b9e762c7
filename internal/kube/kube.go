// Package kube is what the plugin and the stubdomain patcher both do with the Kubernetes API:
// loading a client configuration, informers on one object by name, and competing for a Lease.
package kube

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Fallback is where Config looks when neither a kubeconfig nor a context is given.
type Fallback int

const (
	// InCluster: the in-cluster configuration only. The plugin: its Corefile names a kubeconfig
	// when it wants one, and a server must not pick up a person's ~/.kube/config.
	InCluster Fallback = iota
	// InClusterThenLocal: the in-cluster configuration, else $KUBECONFIG, else ~/.kube/config
	// (clientcmd's loading rules). The patcher, which people run from their machines.
	InClusterThenLocal
)

// Config loads the client configuration from kubeconfig (a path) and context when either is
// given, else as fallback says; userAgent names the caller to the API server.
func Config(kubeconfig, context string, fallback Fallback, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" && context == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil && fallback == InCluster {
			return nil, fmt.Errorf("no in-cluster config (%v): give a kubeconfig path", err)
		}
	}
	if cfg == nil {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
		if fallback == InClusterThenLocal {
			rules = clientcmd.NewDefaultClientConfigLoadingRules()
			rules.ExplicitPath = kubeconfig
		}
		overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
		if cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig(); err != nil {
			return nil, err
		}
	}
	cfg.UserAgent = userAgent
	return cfg, nil
}

// ObjectInformers is an informer factory whose informers list and watch the one object
// namespace/name (a field selector on metadata.name), so that RBAC can grant list and watch on
// that object by name.
func ObjectInformers(client kubernetes.Interface, namespace, name string, resync time.Duration) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
}
