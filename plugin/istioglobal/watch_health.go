package istioglobal

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/client-go/pkg/clientset/versioned"
	"istio.io/client-go/pkg/clientset/versioned/scheme"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// watchHealth follows the lists and watches of one reflector: it counts watch restarts and
// failures by reason (relists are counted where they land, in entryStore.Replace), and logs each reason of a failure once, when it first appears (a
// forbidden list, say: RBAC taken away), and once more when the API server answers again. The
// last table serves on.
type watchHealth struct {
	namespace string

	mu      sync.Mutex
	watches int             // watches begun (not watch-lists)
	failing map[string]bool // the reasons logged since the last success; nil while healthy
}

func (h *watchHealth) listWatch(client versioned.Interface, namespace string) cache.ListerWatcher {
	list, watchFunc := serviceEntryRequests(client, namespace)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			l, err := list(ctx, o)
			h.observe(ctx, "list", err)
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			streamed := o.SendInitialEvents != nil && *o.SendInitialEvents // a watch-list
			if !streamed {
				h.mu.Lock()
				if h.watches++; h.watches > 1 {
					watchRestarts.Inc()
				}
				h.mu.Unlock()
			}
			w, err := watchFunc(ctx, o)
			if streamed && apierrors.IsInvalid(err) {
				return nil, err // an API server without watch-list: the reflector lists instead
			}
			h.observe(ctx, "watch", err)
			if err != nil {
				return nil, err
			}
			// A watch can also fail in its stream: 410 Gone for an expired resourceVersion.
			return observeErrors(w, func(ev watch.Event) { h.observe(ctx, "watch", apierrors.FromObject(ev.Object)) }), nil
		},
	}
}

// errorObserver passes a watch's events on, and its error events to onError too.
type errorObserver struct {
	watch.Interface
	out  chan watch.Event
	done chan struct{}
	once sync.Once
}

func observeErrors(w watch.Interface, onError func(watch.Event)) watch.Interface {
	o := &errorObserver{Interface: w, out: make(chan watch.Event), done: make(chan struct{})}
	go func() {
		defer close(o.out)
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				onError(ev)
			}
			select {
			case o.out <- ev:
			case <-o.done: // stopped while an event was on its way: nobody reads any more
				return
			}
		}
	}()
	return o
}

func (o *errorObserver) ResultChan() <-chan watch.Event { return o.out }

func (o *errorObserver) Stop() {
	o.once.Do(func() { close(o.done) })
	o.Interface.Stop()
}

// serviceEntryRequests are list and watch of the ServiceEntries of namespace, without
// client-go's own retries: a connection that ends before an answer (an API server behind a
// load balancer, restarting) is retried up to ten times a second apart inside one call, and the
// reflector would only try again after that. Ours retries with its own backoff instead. A
// client without a REST client (client-go's fakes) uses the typed calls.
func serviceEntryRequests(client versioned.Interface, namespace string) (
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFunc func(context.Context, metav1.ListOptions) (watch.Interface, error),
) {
	rc, _ := client.NetworkingV1().RESTClient().(*rest.RESTClient)
	if rc == nil {
		ses := client.NetworkingV1().ServiceEntries(namespace)
		return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return ses.List(ctx, o) },
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return ses.Watch(ctx, o) }
	}
	request := func(o metav1.ListOptions) *rest.Request {
		r := rc.Get().Namespace(namespace).Resource("serviceentries").VersionedParams(&o, scheme.ParameterCodec).MaxRetries(0)
		if o.TimeoutSeconds != nil {
			r = r.Timeout(time.Duration(*o.TimeoutSeconds) * time.Second)
		}
		return r
	}
	list = func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		out := &networkingv1.ServiceEntryList{}
		return out, request(o).Do(ctx).Into(out)
	}
	watchFunc = func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.Watch = true
		return request(o).Watch(ctx)
	}
	return list, watchFunc
}

func (h *watchHealth) observe(ctx context.Context, verb string, err error) {
	if ctx.Err() != nil {
		return // stopping: a reload, a shutdown
	}
	where := "all namespaces"
	if h.namespace != "" {
		where = "namespace " + h.namespace
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		if h.failing != nil {
			log.Infof("ServiceEntries in %s: %s succeeds again", where, verb)
		}
		h.failing = nil
		return
	}
	reason := watchErrorReason(err)
	watchErrors.WithLabelValues(reason).Inc()
	if h.failing[reason] {
		return
	}
	if h.failing == nil {
		h.failing = map[string]bool{}
	}
	h.failing[reason] = true
	if reason == "forbidden" {
		log.Errorf("ServiceEntries in %s: not allowed to %s %s (grant get, list and watch on them): %v; serving the last table",
			where, verb, networkingv1.SchemeGroupVersion.WithResource("serviceentries").GroupResource(), err)
		return
	}
	log.Errorf("ServiceEntries in %s: %s failed: %v; serving the last table, retrying every %v", where, verb, err, watchBackoffCap)
}

// watchErrorReason is the reason label of a failed list or watch.
func watchErrorReason(err error) string {
	switch {
	case apierrors.IsForbidden(err):
		return "forbidden"
	case apierrors.IsUnauthorized(err):
		return "unauthorized"
	case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
		return "expired"
	case apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err):
		return "server"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "unreachable"
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return "server"
	}
	return "unreachable" // refused, reset, timed out: the API server could not be reached
}
