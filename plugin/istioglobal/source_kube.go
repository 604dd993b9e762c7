package istioglobal

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/kube"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/client-go/pkg/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// kubeSource watches ServiceEntries (networking.istio.io/v1; objects written as v1beta1 or
// v1alpha3 are the same resource): one reflector for all namespaces, or one per namespace so
// that a Role in each is all the access it needs. A reflector, not a shared informer: the
// informer hides the reflector's backoff, which grows to 30 s (with jitter 1.0, up to 60 s)
// during an outage, so that a change made after the API server is back was answered up to a
// minute late. Ours is capped at watchBackoffCap, and the reflector writes straight into an
// entryStore (no DeltaFIFO, no cache of API objects).
type kubeSource struct {
	kubeconfig, context string // both empty: in-cluster config
	namespaces          []string
	config              *rest.Config
	client              versioned.Interface // from config when nil

	cancel context.CancelFunc
	done   sync.WaitGroup
	stores []*entryStore

	mu    sync.Mutex
	dirty map[string]struct{} // namespace/name of the entries changed since the last changes
}

// The reflectors' backoff after a failed list or watch: quick to notice the API server back
// (within about a second and a half), and at most about one request a second per namespace
// watched while it is away.
var watchBackoff = wait.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: 3, Cap: watchBackoffCap}

const watchBackoffCap = time.Second

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
	k.dirty = make(map[string]struct{})
	k.stores = nil
	changed := func(keys ...string) {
		k.mu.Lock()
		for _, key := range keys {
			k.dirty[key] = struct{}{}
		}
		k.mu.Unlock()
		sourceLastEvent.SetToCurrentTime()
		notify()
	}
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	sourceSynced.Set(0)
	for _, ns := range namespaces {
		store := &entryStore{items: make(map[string]*cachedEntry), changed: changed}
		health := &watchHealth{namespace: ns}
		k.stores = append(k.stores, store)
		r := cache.NewReflectorWithOptions(health.listWatch(client, ns),
			&networkingv1.ServiceEntry{}, store, cache.ReflectorOptions{
				Name:    "istioglobal ServiceEntries " + cmp.Or(ns, "(all namespaces)"),
				Backoff: &watchBackoff,
			})
		k.done.Go(func() { r.RunWithContext(ctx) })
	}
	k.done.Go(func() {
		if cache.WaitForCacheSync(ctx.Done(), k.synced) {
			sourceSynced.Set(1)
			notify()
		}
	})
	return nil
}

func (k *kubeSource) stop() {
	k.cancel()
	k.done.Wait()
}

// synced reports whether every reflector has stored its initial list.
func (k *kubeSource) synced() bool {
	for _, s := range k.stores {
		if !s.synced.Load() {
			return false
		}
	}
	return len(k.stores) > 0
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
		for _, st := range k.stores {
			if e := st.get(key); e != nil {
				c.entry = e
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
