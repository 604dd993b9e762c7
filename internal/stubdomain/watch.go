package stubdomain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/debounce"
	"github.com/coredns-istio/coredns-istio/internal/kube"
	"github.com/coredns-istio/coredns-istio/internal/logonce"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Watcher keeps the cluster DNS forwarding Zones to coredns-istio: it applies once, then again
// (idempotently, through its Patcher) whenever the Service's cluster IPs or DNS port change or
// someone edits the target ConfigMap. Both are watched with informers restricted to the one
// object by name; a burst of events costs one apply.
type Watcher struct {
	Patcher *Patcher
	// Hops are further Patchers applied with Patcher, each on its own ConfigMap: the hops of a
	// query path in front of the cluster DNS (NodeLocal DNSCache's).
	Hops  []*Patcher
	Zones []string
	// Service (namespace/name) whose cluster IPs are the servers; "" to use Servers.
	Service string
	Servers []netip.AddrPort

	Debounce time.Duration // quiet time that ends a burst of events; 0 means 200ms
	Resync   time.Duration // re-apply at least this often anyway; 0 means 10 minutes
	// Logf reports what happens; nil discards.
	Logf func(format string, args ...any)
}

// Run watches and applies until ctx ends; it returns nil then. It returns an error only when it
// cannot start (bad Service name, informers that never sync before ctx ends). Failed applies
// are logged and retried with a backoff of up to a minute.
func (w *Watcher) Run(ctx context.Context) error {
	p := w.Patcher
	if p == nil || p.configMap() == "" {
		return errors.New("watch: no concrete target")
	}
	patchers := append([]*Patcher{p}, w.Hops...)
	debounceDelay := orDefault(w.Debounce, 200*time.Millisecond)
	resync := orDefault(w.Resync, 10*time.Minute)
	logf := w.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}

	// Debounce: a burst of events is one apply, once events stop for a moment (at most 10
	// quiet periods after the first).
	burst := debounce.New(debounceDelay, 10*debounceDelay, 0)
	kick := burst.Signal
	// RBAC that forbids a list or watch ends the watcher, naming what is missing: the informer
	// would otherwise retry forever, and the watcher wait for a sync that never comes.
	ctx, deny := context.WithCancelCause(ctx)
	defer deny(nil)
	ended := func() error {
		if err, ok := context.Cause(ctx).(forbiddenError); ok {
			return err.error
		}
		return nil
	}
	onChange := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
		DeleteFunc: func(any) { kick() },
	}

	stop := make(chan struct{})
	var factories []informers.SharedInformerFactory
	defer func() {
		close(stop)
		for _, f := range factories {
			f.Shutdown()
		}
	}()
	byName := func(namespace, name string) informers.SharedInformerFactory {
		f := kube.ObjectInformers(p.Client, namespace, name, resync)
		factories = append(factories, f)
		return f
	}

	onForbidden := func(inf cache.SharedIndexInformer, what string) error {
		return inf.SetWatchErrorHandlerWithContext(func(hctx context.Context, r *cache.Reflector, err error) {
			if apierrors.IsForbidden(err) {
				deny(forbiddenError{fmt.Errorf("watch: not allowed to list and watch %s: grant list and watch on it: %w", what, err)})
			}
			cache.DefaultWatchErrorHandler(hctx, r, err)
		})
	}

	var synced []cache.InformerSynced
	var watched []string
	for _, hp := range patchers {
		name := hp.Namespace + "/" + hp.configMap()
		if slices.Contains(watched, name) {
			continue
		}
		watched = append(watched, name)
		cmInformer := byName(hp.Namespace, hp.configMap()).Core().V1().ConfigMaps().Informer()
		if err := onForbidden(cmInformer, "ConfigMap "+name); err != nil {
			return err
		}
		reg, err := cmInformer.AddEventHandler(onChange)
		if err != nil {
			return err
		}
		synced = append(synced, reg.HasSynced)
	}

	var service func() (*corev1.Service, error)
	if w.Service != "" {
		ns, name, ok := strings.Cut(w.Service, "/")
		if !ok || ns == "" || name == "" {
			return fmt.Errorf("watch: bad Service %q: want NAMESPACE/NAME", w.Service)
		}
		svcs := byName(ns, name).Core().V1().Services()
		if err := onForbidden(svcs.Informer(), "Service "+w.Service); err != nil {
			return err
		}
		reg, err := svcs.Informer().AddEventHandler(onChange)
		if err != nil {
			return err
		}
		synced = append(synced, reg.HasSynced)
		lister := svcs.Lister().Services(ns)
		service = func() (*corev1.Service, error) { return lister.Get(name) }
	}
	for _, f := range factories {
		f.Start(stop)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		if err := ended(); err != nil || ctx.Err() != nil {
			return err
		}
		return errors.New("watch: informers did not sync")
	}
	if w.Service != "" {
		logf("watching ConfigMap %s and Service %s", strings.Join(watched, ", "), w.Service)
	} else {
		logf("watching ConfigMap %s", strings.Join(watched, ", "))
	}

	r := &reconciler{w: w, logf: logf, service: service}
	kick()
	var retry *time.Timer
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	failures := 0
	for burst.Wait(ctx.Done()) {
		if retry != nil {
			retry.Stop()
		}
		if err := r.reconcile(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			failures++
			delay := min(time.Minute, time.Second<<min(failures-1, 6))
			logf("error: %v (retrying in %v)", err, delay)
			retry = time.AfterFunc(delay, kick)
		} else {
			failures = 0
		}
	}
	return ended()
}

// forbiddenError is what ends Run when RBAC denies a list or watch.
type forbiddenError struct{ error }

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// reconciler applies the desired state once per call, and logs only what changed.
type reconciler struct {
	w        *Watcher
	logf     func(string, ...any)
	service  func() (*corev1.Service, error)
	servers  []netip.AddrPort // last desired servers, to log their changes
	warnings logonce.Set      // the hops' warnings, each logged when it appears
	missing  bool             // the Service was missing last time
}

func (r *reconciler) reconcile(ctx context.Context) error {
	servers := r.w.Servers
	if r.service != nil {
		svc, err := r.service()
		if apierrors.IsNotFound(err) {
			if !r.missing {
				r.logf("Service %s not found: leaving the cluster DNS as it is until it exists again", r.w.Service)
			}
			r.missing = true
			return nil
		} else if err != nil {
			return err
		}
		r.missing = false
		if servers, err = ServiceServers(svc); err != nil {
			return err
		}
	}
	if !slices.Equal(servers, r.servers) {
		r.logf("desired: %s → %s", strings.Join(r.w.Zones, ","), FormatServers(servers))
		r.servers = servers
	}
	var warnings []string
	defer func() {
		r.warnings.Replace(warnings)
		r.warnings.Flush(func(w string) { r.logf("warning: %s", w) })
	}()
	for _, p := range append([]*Patcher{r.w.Patcher}, r.w.Hops...) {
		res, err := p.Apply(ctx, r.w.Zones, servers)
		warnings = append(warnings, res.Warnings...)
		if err != nil {
			return err
		}
		if res.Action != Unchanged {
			retried := ""
			if res.Attempts > 1 {
				retried = fmt.Sprintf(" (after %d conflicts)", res.Attempts-1)
			}
			r.logf("ConfigMap %s: %s%s\n%s", res.ConfigMap, res.Action, retried, strings.TrimRight(res.Diff, "\n"))
		}
	}
	return nil
}
