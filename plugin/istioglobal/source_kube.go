package istioglobal

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/kube"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/client-go/pkg/clientset/versioned"
	"istio.io/client-go/pkg/informers/externalversions"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// kubeSource watches ServiceEntries (networking.istio.io/v1; objects written as v1beta1 or
// v1alpha3 are the same resource) with informers: one for all namespaces, or one per
// namespace so that a Role in each is all the access it needs.
type kubeSource struct {
	kubeconfig, context string // both empty: in-cluster config
	namespaces          []string
	config              *rest.Config
	client              versioned.Interface // from config when nil

	stopCh    chan struct{}
	factories []externalversions.SharedInformerFactory
	indexers  []cache.Indexer // of *cachedEntry
	handlers  []cache.ResourceEventHandlerRegistration

	mu    sync.Mutex
	dirty map[string]struct{} // namespace/name of the entries changed since the last changes
}

func (k *kubeSource) loadConfig() error {
	var err error
	if k.config, err = kube.Config(k.kubeconfig, k.context, kube.InCluster, "coredns-istio"); err != nil && k.kubeconfig == "" && k.context == "" {
		return fmt.Errorf("%v, or files", err)
	}
	return err
}

func (k *kubeSource) start(notify func()) error {
	client := k.client
	if client == nil {
		var err error
		if client, err = versioned.NewForConfig(k.config); err != nil {
			return err
		}
	}
	namespaces := k.namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	k.stopCh = make(chan struct{})
	k.factories, k.indexers, k.handlers = nil, nil, nil
	k.dirty = make(map[string]struct{})
	changed := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return
		}
		k.mu.Lock()
		k.dirty[key] = struct{}{}
		k.mu.Unlock()
		notify()
	}
	// Updates that change nothing the table reads (status conditions, relists) are passed on
	// too: the engine then lets go of the old object, which costs it a map lookup.
	onChange := cache.ResourceEventHandlerFuncs{
		AddFunc:    changed,
		UpdateFunc: func(_, cur any) { changed(cur) },
		DeleteFunc: changed,
	}
	for _, ns := range namespaces {
		f := externalversions.NewSharedInformerFactoryWithOptions(client, 0,
			externalversions.WithNamespace(ns), externalversions.WithTransform(toCachedEntry))
		informer := f.InformerFor(&networkingv1.ServiceEntry{}, func(client versioned.Interface, resync time.Duration) cache.SharedIndexInformer {
			return serviceEntryInformer(client, ns, resync)
		})
		reg, err := informer.AddEventHandler(onChange)
		if err != nil {
			return err
		}
		k.factories = append(k.factories, f)
		k.indexers = append(k.indexers, informer.GetIndexer())
		k.handlers = append(k.handlers, reg)
		f.Start(k.stopCh)
	}
	go func() {
		if cache.WaitForCacheSync(k.stopCh, k.synced) {
			notify()
		}
	}()
	return nil
}

// serviceEntryInformer is the generated ServiceEntry informer with requests that end when the
// informer stops: the generated one lists and watches with context.TODO(), so that stopping it
// (a reload, a shutdown) waits for an API server that does not answer.
func serviceEntryInformer(client versioned.Interface, namespace string, resync time.Duration) cache.SharedIndexInformer {
	ses := client.NetworkingV1().ServiceEntries(namespace)
	return cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return ses.List(ctx, o) },
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return ses.Watch(ctx, o)
		},
	}, &networkingv1.ServiceEntry{}, resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

func (k *kubeSource) stop() {
	close(k.stopCh)
	for _, f := range k.factories {
		f.Shutdown()
	}
}

// synced reports whether every handler has seen the initial list of its informer.
func (k *kubeSource) synced() bool {
	for _, h := range k.handlers {
		if !h.HasSynced() {
			return false
		}
	}
	return len(k.handlers) > 0
}

// changes returns the current entry of every key an event named since the last call: as
// events arrive before the cache has synced, the first call returns every entry.
func (k *kubeSource) changes() ([]change, []Problem) {
	k.mu.Lock()
	dirty := k.dirty
	k.dirty = make(map[string]struct{})
	k.mu.Unlock()
	out := make([]change, 0, len(dirty))
	for key := range dirty {
		c := change{id: entryID{key: key}}
		for _, ix := range k.indexers {
			if obj, ok, _ := ix.GetByKey(key); ok {
				if ce, ok := obj.(*cachedEntry); ok {
					c.entry = &ce.Entry
				}
				break
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// entryFrom converts a ServiceEntry, from either source, into what the table reads.
func entryFrom(se *networkingv1.ServiceEntry) Entry {
	e := Entry{
		Namespace: se.Namespace,
		Name:      se.Name,
		Created:   se.CreationTimestamp.Time,
		Hosts:     se.Spec.Hosts,
		Addresses: se.Spec.Addresses,
		ExportTo:  se.Spec.ExportTo,
		Labels:    se.Labels,
	}
	for _, p := range se.Spec.Ports {
		if p != nil {
			e.Ports = append(e.Ports, Port{Name: p.Name, Number: p.Number, Protocol: p.Protocol})
		}
	}
	for _, a := range se.Status.Addresses {
		if a != nil {
			e.StatusAddresses = append(e.StatusAddresses, StatusAddress{Host: a.Host, Value: a.Value})
		}
	}
	return e
}
