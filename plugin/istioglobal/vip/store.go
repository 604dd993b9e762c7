package vip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/kube"
	"github.com/coredns-istio/coredns-istio/internal/logonce"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// defaultSyncTimeout bounds how long an unreadable ConfigMap keeps the plugin unready.
const defaultSyncTimeout = 10 * time.Second

// Leader election timings: client-go's usual ones.
const (
	defaultLeaseDuration = 15 * time.Second
	defaultRenewDeadline = 10 * time.Second
	defaultRetryPeriod   = 2 * time.Second
)

const (
	// writeTimeout bounds one read or write of the ConfigMap by the leader.
	writeTimeout = 10 * time.Second
	// maxRetryDelay caps the backoff after a failed reconcile; a new demand retries at once.
	maxRetryDelay = time.Minute
)

// Store persists allocations in one ConfigMap. Every replica reads it through an
// informer and serves what it holds; only the holder of a Lease (named like the ConfigMap, in
// its namespace) writes it. The Lease keeps replicas from contending; correctness rests on
// every write carrying the resourceVersion it was computed from, so even two leaders at once
// (a stale one finishing a write) cannot lose an allocation or hand out one VIP twice.
type Store struct {
	gaveUp          atomic.Bool // the ConfigMap could not be read in allocationsSyncTimeout
	namespace, name string
	config          *rest.Config
	client          kubernetes.Interface // from config when nil
	alloc           *Allocator

	leaseDuration, renewDeadline, retryPeriod time.Duration
	syncTimeout                               time.Duration
	identity                                  string

	cancel  context.CancelFunc
	done    sync.WaitGroup
	factory informers.SharedInformerFactory
	lister  corelisters.ConfigMapNamespaceLister
	handler cache.ResourceEventHandlerRegistration
	wake    chan struct{} // capacity 1: a pending reconcile

	mu     sync.Mutex
	want   *demanded         // the latest demand; nil before the first
	term   context.Context   // the current leadership term; nil or done when not leading
	failed map[string]string // reason → the error last logged for it, until it recovers

	conflicted logonce.Set // hosts whose conflict was logged; owned by the reconciler
	exhausted  logonce.Set // hosts whose exhaustion was logged; owned by the reconciler
}

// demanded is what one rebuild asked for.
type demanded struct {
	hosts    []string
	reserved Reserved
}

func NewStore(namespace, name string, config *rest.Config, alloc *Allocator) *Store {
	host, _ := os.Hostname()
	return &Store{
		namespace:     namespace,
		name:          name,
		config:        config,
		alloc:         alloc,
		syncTimeout:   defaultSyncTimeout,
		leaseDuration: defaultLeaseDuration,
		renewDeadline: defaultRenewDeadline,
		retryPeriod:   defaultRetryPeriod,
		// Two replicas on one host (or a restart reusing the Pod's name) must not share an identity.
		identity: host + "_" + utilrand.String(8),
	}
}

// Key is the ConfigMap's NAMESPACE/NAME.
func (s *Store) Key() string { return s.namespace + "/" + s.name }

// Start watches the ConfigMap and campaigns for the Lease. notify, which never blocks, is called
// whenever current may return something new.
func (s *Store) Start(notify func()) error {
	lease := kube.Lease{Namespace: s.namespace, Name: s.name, Identity: s.identity,
		LeaseDuration: s.leaseDuration, RenewDeadline: s.renewDeadline, RetryPeriod: s.retryPeriod}
	client, leaseClient := s.client, s.client
	if client == nil {
		var err error
		if client, err = kubernetes.NewForConfig(s.config); err != nil {
			return err
		}
		if leaseClient, err = kubernetes.NewForConfig(kube.LeaseConfig(s.config, lease)); err != nil {
			return err
		}
	}
	s.client = client
	s.wake = make(chan struct{}, 1)
	s.failed = make(map[string]string)
	campaign, err := kube.NewCampaign(leaseClient, lease, nil)
	if err != nil {
		return err
	}

	s.factory = kube.ObjectInformers(client, s.namespace, s.name, 0)
	informer := s.factory.Core().V1().ConfigMaps()
	if err := informer.Informer().SetWatchErrorHandler(s.watchError); err != nil {
		return err
	}
	changed := func() {
		notify()
		s.kick()
	}
	reg, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { changed() },
		UpdateFunc: func(any, any) { changed() },
		DeleteFunc: func(any) { changed() },
	})
	if err != nil {
		return err
	}
	s.lister = informer.Lister().ConfigMaps(s.namespace)
	s.handler = reg

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.factory.Start(ctx.Done())
	s.done.Add(3)
	go func() {
		defer s.done.Done()
		// A missing ConfigMap is synced too: the list was complete, and empty. One that cannot
		// be read holds up serving only so long: then everything else is served, and hosts
		// that want a VIP answer SERVFAIL until it can be read.
		wait, stopWaiting := context.WithTimeout(ctx, s.syncTimeout)
		defer stopWaiting()
		if !cache.WaitForCacheSync(wait.Done(), reg.HasSynced) && ctx.Err() == nil {
			log.Errorf("allocations %s: not readable after %v; serving without VIPs until it is", s.Key(), s.syncTimeout)
			s.gaveUp.Store(true)
			notify()
			cache.WaitForCacheSync(ctx.Done(), reg.HasSynced)
		}
		if ctx.Err() == nil {
			changed()
		}
	}()
	go func() {
		defer s.done.Done()
		campaign.Run(ctx, s.lead) // lead never fails: it ends with ctx
	}()
	go func() {
		defer s.done.Done()
		s.reconciler(ctx)
	}()
	return nil
}

// lead is one term of leadership: while it lasts, this replica writes the ConfigMap.
func (s *Store) lead(term context.Context) error {
	s.startedLeading(term)
	<-term.Done()
	s.stoppedLeading()
	return nil
}

func (s *Store) startedLeading(term context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.term = term
	allocationLeader.Set(1)
	log.Infof("allocations %s: %s leads, and writes the ConfigMap", s.Key(), s.identity)
	s.kick() // the latest demand, at once
}

func (s *Store) stoppedLeading() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.term != nil {
		log.Infof("allocations %s: %s no longer leads", s.Key(), s.identity)
	}
	s.term = nil
	allocationLeader.Set(0)
	allocationConflicts.Set(0) // the next leader reports them
	allocationExhausted.Set(0)
}

// Stop ends the informer and the election, releasing the Lease if held, and waits for both.
func (s *Store) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.done.Wait()
	s.factory.Shutdown()
	s.cancel = nil
}

// Synced reports whether the informer has seen the initial list, or waiting for it was given up.
func (s *Store) Synced() bool {
	return s.handler != nil && s.handler.HasSynced() || s.gaveUp.Load()
}

// leading reports whether this replica holds the Lease.
func (s *Store) leading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.term != nil && s.term.Err() == nil
}

// Current is what the ConfigMap holds now: the live allocations (not released) to serve, and
// why each entry that does not decode was skipped.
func (s *Store) Current() (live map[string]VIPs, corrupt []error) {
	cm, err := s.lister.Get(s.name)
	if err != nil {
		return nil, nil // not created yet: nothing allocated
	}
	all, _, errs := decodeAllocations(cm.Data)
	live = make(map[string]VIPs, len(all))
	for host, a := range all {
		if a.Released.IsZero() {
			live[host] = a.VIPs
		}
	}
	return live, errs
}

// Demand records the hosts that want VIPs and the addresses no VIP may be; the leader then
// reconciles the ConfigMap in the background. It never blocks, and only the latest demand
// matters. Every replica records it, so that a new leader starts from what it serves.
func (s *Store) Demand(hosts []string, reserved Reserved) {
	s.mu.Lock()
	s.want = &demanded{hosts: hosts, reserved: reserved}
	s.mu.Unlock()
	s.kick()
}

func (s *Store) kick() {
	select {
	case s.wake <- struct{}{}:
	default: // a reconcile is pending already and will see the latest demand
	}
}

// reconciler writes the latest demand into the ConfigMap while this replica leads, retrying
// failures with a growing delay.
func (s *Store) reconciler(ctx context.Context) {
	var retryC <-chan time.Time
	delay := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-retryC:
		}
		retryC = nil
		s.mu.Lock()
		term, want := s.term, s.want
		s.mu.Unlock()
		if term == nil || term.Err() != nil || want == nil || !s.Synced() {
			continue // whatever changes that (leading, a demand, the sync) kicks again
		}
		if err := s.reconcile(term, want); err != nil {
			delay = min(max(2*delay, s.retryPeriod), maxRetryDelay)
			retryC = time.After(delay)
			continue
		}
		delay = 0
	}
}

// reconcile makes the ConfigMap hold the allocations for want, starting from the cached copy
// and, after a conflict, from a fresh read. It writes nothing when nothing changes.
func (s *Store) reconcile(term context.Context, want *demanded) error {
	ctx, cancel := context.WithTimeout(term, writeTimeout)
	defer cancel()
	configMaps := s.client.CoreV1().ConfigMaps(s.namespace)
	cm, err := s.lister.Get(s.name)
	if err != nil {
		cm = nil // the lister's only error: not found
	}
	fresh := false
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if fresh {
			cm, err = configMaps.Get(ctx, s.name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				cm = nil
			case err != nil:
				return &storeError{reasonUnreadable, fmt.Errorf("reading: %w", err)}
			}
		}
		fresh = true
		var data map[string]string
		if cm != nil {
			data = cm.Data
		}
		out := s.next(data, want)
		if maps.Equal(out, data) {
			return nil
		}
		if cm == nil {
			created := &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: s.namespace,
					Name:      s.name,
					Labels:    map[string]string{"app.kubernetes.io/managed-by": "coredns-istio"},
				},
				Data: out,
			}
			_, err = configMaps.Create(ctx, created, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				// Created meanwhile (by a former leader): start over from what it holds.
				return apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, s.name, err)
			}
		} else {
			updated := cm.DeepCopy() // the informer's copy is shared
			updated.Data = out
			_, err = configMaps.Update(ctx, updated, metav1.UpdateOptions{})
		}
		if err != nil && !apierrors.IsConflict(err) {
			return &storeError{reasonWriteFailed, fmt.Errorf("writing: %w", err)}
		}
		return err
	})
	var se *storeError
	switch {
	case err == nil:
		s.recovered(reasonUnreadable, reasonWriteFailed)
	case term.Err() != nil:
		// Leadership ended mid-write; the next leader starts over.
	case errors.As(err, &se):
		s.fail(se.reason, se.err)
	default: // conflicts until retry gave up
		s.fail(reasonWriteFailed, fmt.Errorf("writing: %w", err))
	}
	return err
}

// next computes the ConfigMap data for want from data, keeping the values that do not decode as
// they are, unless their host now has a valid allocation: their addresses stay held.
func (s *Store) next(data map[string]string, want *demanded) map[string]string {
	current, held, errs := decodeAllocations(data)
	if len(errs) > 0 {
		allocationErrors.WithLabelValues(reasonCorrupt).Add(float64(len(errs)))
	}
	heldSet := make(map[netip.Addr]struct{}, len(held))
	for _, a := range held {
		heldSet[a] = struct{}{}
	}
	reserved := func(a netip.Addr) uint64 {
		if _, h := heldSet[a]; h {
			return 1
		}
		if want.reserved != nil {
			return want.reserved(a)
		}
		return 0
	}
	next, exhausted, conflicts := s.alloc.next(current, want.hosts, reserved, time.Now())
	allocationConflicts.Set(float64(len(conflicts)))
	allocationExhausted.Set(float64(len(exhausted)))
	s.warnConflicts(conflicts)
	s.warnExhausted(exhausted)
	out := encodeAllocations(next)
	valid := encodeAllocations(current)
	for k, v := range data {
		if _, ok := valid[k]; !ok {
			if _, ok := out[k]; !ok {
				out[k] = v
			}
		}
	}
	return out
}

// warnConflicts logs each host whose live VIP became a conflict once, until it no longer is one.
// Owned by the reconciler goroutine.
func (s *Store) warnConflicts(hosts []string) {
	warnNew(&s.conflicted, hosts, func(h string) string {
		return fmt.Sprintf("allocations ConfigMap %s: a ServiceEntry now declares a VIP of %s (or another host holds it); "+
			"it is kept, as moving it would break its clients: delete key %q to renumber it",
			s.Key(), h, strings.TrimSuffix(h, "."))
	})
}

func (s *Store) warnExhausted(hosts []string) {
	warnNew(&s.exhausted, hosts, func(h string) string {
		return fmt.Sprintf("allocations ConfigMap %s: no VIP for %s: the autoallocate ranges are full", s.Key(), h)
	})
}

// warnNew makes the problems of hosts the ones present in seen, and logs those that are new.
func warnNew(seen *logonce.Set, hosts []string, msg func(string) string) {
	texts := make([]string, len(hosts))
	for i, h := range hosts {
		texts[i] = msg(h)
	}
	seen.Replace(texts)
	seen.Flush(func(t string) { log.Warning(t) })
}

// storeError is a failure to count and log under reason.
type storeError struct {
	reason string
	err    error
}

func (e *storeError) Error() string { return e.err.Error() }

// watchError counts the informer's failures to list or watch the ConfigMap; a closed or expired
// watch is routine.
func (s *Store) watchError(_ *cache.Reflector, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return
	}
	s.fail(reasonUnreadable, fmt.Errorf("watching: %w", err))
}

// fail counts err and logs it unless it is the error last logged for reason.
func (s *Store) fail(reason string, err error) {
	allocationErrors.WithLabelValues(reason).Inc()
	msg := err.Error()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed[reason] == msg {
		return
	}
	s.failed[reason] = msg
	if reason == reasonWriteFailed {
		log.Errorf("allocations ConfigMap %s: %s; new hosts get no VIP until a write succeeds", s.Key(), msg)
		return
	}
	log.Errorf("allocations ConfigMap %s: %s; no new VIP is handed out until it can be read", s.Key(), msg)
}

// recovered forgets the errors last logged for reasons, so that a recurrence is logged again.
func (s *Store) recovered(reasons ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range reasons {
		delete(s.failed, r)
	}
}
