package istioglobal

import (
	"context"
	"errors"
	"io"
	"sync"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	typednetworkingv1 "istio.io/client-go/pkg/clientset/versioned/typed/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// watchHealth follows the lists and watches of one reflector: it counts relists, watch restarts
// and failures by reason, and logs a failure once, when it begins (a forbidden list, say: RBAC
// taken away), and once more when the API server answers again. The last table serves on.
type watchHealth struct {
	namespace string

	mu      sync.Mutex
	lists   int    // full lists begun
	watches int    // watches begun
	failing string // the reason logged for the failure in progress; "" while healthy
}

func (h *watchHealth) listWatch(ses typednetworkingv1.ServiceEntryInterface) cache.ListerWatcher {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			if o.Continue == "" {
				h.begin(&h.lists, relists)
			}
			list, err := ses.List(ctx, o)
			h.observe(ctx, "list", err)
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			h.begin(&h.watches, watchRestarts)
			w, err := ses.Watch(ctx, o)
			h.observe(ctx, "watch", err)
			return w, err
		},
	}
}

// begin counts a list or watch; all but the first of each are restarts.
func (h *watchHealth) begin(n *int, restarts interface{ Inc() }) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if *n++; *n > 1 {
		restarts.Inc()
	}
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
		if h.failing != "" {
			log.Infof("ServiceEntries in %s: %s succeeds again", where, verb)
		}
		h.failing = ""
		return
	}
	reason := watchErrorReason(err)
	watchErrors.WithLabelValues(reason).Inc()
	if reason == h.failing {
		return
	}
	h.failing = reason
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
