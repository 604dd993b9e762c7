package vip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
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
	// writeTimeout bounds one read or write of a ConfigMap by the leader.
	writeTimeout = 10 * time.Second
	// maxRetryDelay caps the backoff after a failed reconcile; a new demand retries at once.
	maxRetryDelay = time.Minute
	// writeSpacing is how long the leader waits after each shard it wrote before the next
	// reconcile: one new host costs a write or two within a fraction of a second, and a burst
	// of thousands, which changes every shard, a write of each about every 8 s, not one per host
	// (each write of a shard stores the whole shard again in etcd's history).
	writeSpacing = 250 * time.Millisecond
	// The store's client rate: client-go's default (5/s) would take seconds for 32 shards.
	storeQPS, storeBurst = 50, 100
)

// migratedAnnotation marks the ConfigMap of the one-ConfigMap format once its allocations are
// in the shards; from then on it is no longer read.
const migratedAnnotation = "istioglobal.coredns.io/migrated-to-shards"

// Store persists allocations in shardCount ConfigMaps NAME-00 to NAME-31 (shard.go): each
// address lives in the shard its hash picks. Every replica reads them through informers and
// serves what they hold; only the holder of a Lease (NAME, in their namespace) writes them. The
// Lease keeps replicas from contending; correctness rests on every write carrying the
// resourceVersion it was computed from, and on an address living in one shard only, so even two
// leaders at once (a stale one finishing a write) cannot hand out one VIP twice, and whatever
// one of them wrote is kept.
//
// The ConfigMap NAME itself is the format of earlier versions, one ConfigMap for everything:
// while it exists and is not annotated migratedAnnotation, it is read too (the shards win for a
// host they hold), and the leader copies it into the shards, then annotates it.
type Store struct {
	gaveUp          atomic.Bool // the ConfigMaps could not be read in syncTimeout
	namespace, name string
	objects         []string // the shards' names, then the legacy ConfigMap's (legacy)
	config          *rest.Config
	client          kubernetes.Interface // from config when nil
	alloc           *Allocator

	leaseDuration, renewDeadline, retryPeriod time.Duration
	syncTimeout                               time.Duration
	spacing                                   time.Duration // writeSpacing
	identity                                  string

	cancel    context.CancelFunc
	done      sync.WaitGroup
	factories []informers.SharedInformerFactory // one per object
	listers   []corelisters.ConfigMapNamespaceLister
	handlers  []cache.ResourceEventHandlerRegistration
	wake      chan struct{} // capacity 1: a pending reconcile

	decodeMu sync.Mutex
	decoded  [shardCount]cachedShard // each shard as last decoded, by resourceVersion

	mu     sync.Mutex
	want   *demanded         // the latest demand; nil before the first
	term   context.Context   // the current leadership term; nil or done when not leading
	failed map[string]string // reason → the error last logged for it, until it recovers
	served map[string]VIPs   // what Current last returned

	conflicted logonce.Set // hosts whose conflict was logged; owned by the reconciler
	exhausted  logonce.Set // hosts whose exhaustion was logged; owned by the reconciler
}

// legacy is the index, in objects, of the ConfigMap of the one-ConfigMap format.
const legacy = shardCount

// cachedShard is a shard decoded, and the version of it that was.
type cachedShard struct {
	uid, resourceVersion string
	decoded              decodedShard
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
		objects:       append(shardNames(name), name),
		config:        config,
		alloc:         alloc,
		syncTimeout:   defaultSyncTimeout,
		spacing:       writeSpacing,
		leaseDuration: defaultLeaseDuration,
		renewDeadline: defaultRenewDeadline,
		retryPeriod:   defaultRetryPeriod,
		// Two replicas on one host (or a restart reusing the Pod's name) must not share an identity.
		identity: host + "_" + utilrand.String(8),
	}
}

// Key is the store's NAMESPACE/NAME: its shards are NAME-00 to NAME-31, its Lease NAME.
func (s *Store) Key() string { return s.namespace + "/" + s.name }

// Start watches the ConfigMaps and campaigns for the Lease. notify, which never blocks, is called
// whenever current may return something new.
func (s *Store) Start(notify func()) error {
	lease := kube.Lease{Namespace: s.namespace, Name: s.name, Identity: s.identity,
		LeaseDuration: s.leaseDuration, RenewDeadline: s.renewDeadline, RetryPeriod: s.retryPeriod}
	client, leaseClient := s.client, s.client
	if client == nil {
		cfg := rest.CopyConfig(s.config)
		cfg.QPS, cfg.Burst = storeQPS, storeBurst
		var err error
		if client, err = kubernetes.NewForConfig(cfg); err != nil {
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

	changed := func() {
		notify()
		s.kick()
	}
	handlers := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { changed() },
		UpdateFunc: func(any, any) { changed() },
		DeleteFunc: func(any) { changed() },
	}
	s.factories, s.listers, s.handlers = nil, nil, nil
	for _, name := range s.objects {
		factory := kube.ObjectInformers(client, s.namespace, name, 0)
		informer := factory.Core().V1().ConfigMaps()
		if err := informer.Informer().SetWatchErrorHandler(s.watchError); err != nil {
			return err
		}
		reg, err := informer.Informer().AddEventHandler(handlers)
		if err != nil {
			return err
		}
		s.factories = append(s.factories, factory)
		s.listers = append(s.listers, informer.Lister().ConfigMaps(s.namespace))
		s.handlers = append(s.handlers, reg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, f := range s.factories {
		f.Start(ctx.Done())
	}
	s.done.Add(3)
	go func() {
		defer s.done.Done()
		// A missing ConfigMap is synced too: the list was complete, and empty. One that cannot
		// be read holds up serving only so long: then everything else is served, and hosts
		// that want a VIP answer SERVFAIL until it can be read.
		wait, stopWaiting := context.WithTimeout(ctx, s.syncTimeout)
		defer stopWaiting()
		if !cache.WaitForCacheSync(wait.Done(), s.read) && ctx.Err() == nil {
			log.Errorf("allocations %s: not readable after %v; serving without VIPs until it is", s.Key(), s.syncTimeout)
			s.gaveUp.Store(true)
			notify()
			cache.WaitForCacheSync(ctx.Done(), s.read)
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

// lead is one term of leadership: while it lasts, this replica writes the ConfigMaps.
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
	log.Infof("allocations %s: %s leads, and writes the ConfigMaps", s.Key(), s.identity)
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
	for _, f := range s.factories {
		f.Shutdown()
	}
	s.cancel = nil
}

// Synced reports whether the informers have seen their initial lists, or waiting for them was
// given up: then what is readable is served.
func (s *Store) Synced() bool { return s.gaveUp.Load() || s.read() }

// read reports whether every informer has seen its initial list. Only then does the leader
// write: a shard it cannot read could hold any address, and the legacy ConfigMap any host.
func (s *Store) read() bool {
	for _, h := range s.handlers {
		if !h.HasSynced() {
			return false
		}
	}
	return len(s.handlers) > 0
}

// leading reports whether this replica holds the Lease.
func (s *Store) leading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.term != nil && s.term.Err() == nil
}

// Current is what the ConfigMaps hold now: the live allocations (not released) to serve, and
// why each entry that does not decode was skipped.
//
// A host whose records are not all visible yet (merged.incomplete) is left out until they are,
// unless it was served before: then it keeps what is visible.
func (s *Store) Current() (live map[string]VIPs, corrupt []error) {
	m := s.decode(s.cached())
	s.mu.Lock()
	defer s.mu.Unlock()
	live = make(map[string]VIPs, len(m.hosts))
	for host, a := range m.hosts {
		if !a.Released.IsZero() {
			continue
		}
		if _, served := s.served[host]; m.incomplete[host] && !served {
			continue
		}
		live[host] = a.VIPs
	}
	s.served = live
	return live, m.errs
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

// reconciler writes the latest demand into the ConfigMaps while this replica leads, retrying
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
		if term == nil || term.Err() != nil || want == nil || !s.read() {
			continue // whatever changes that (leading, a demand, the sync) kicks again
		}
		wrote, err := s.reconcile(term, want)
		if err != nil {
			delay = min(max(2*delay, s.retryPeriod), maxRetryDelay)
			retryC = time.After(delay)
			continue
		}
		delay = 0
		if wrote > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(wrote) * s.spacing):
			}
		}
	}
}

// reconcile makes the shards hold the allocations for want, starting from the cached copies
// and, after a conflict, from fresh reads. It writes only the shards that change, and reports
// how many it wrote. Each call to the API server ends with term, or after writeTimeout.
func (s *Store) reconcile(term context.Context, want *demanded) (wrote int, err error) {
	cms := s.cached()
	// The migration reads afresh: it is done once, and the annotation ends reading the legacy
	// ConfigMap for good.
	fresh := unmigrated(cms[legacy])
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if fresh {
			var err error
			if cms, err = s.fetch(term); err != nil {
				return err
			}
		}
		fresh = true
		for i, data := range s.next(cms, want) {
			w, err := s.write(term, s.objects[i], cms[i], data)
			if w {
				wrote++
			}
			if err != nil {
				return err
			}
		}
		if old := cms[legacy]; unmigrated(old) {
			return s.markMigrated(term, old)
		}
		return nil
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
	return wrote, err
}

// cached is every object as the informers hold it; nil where it does not exist.
func (s *Store) cached() []*corev1.ConfigMap {
	cms := make([]*corev1.ConfigMap, len(s.objects))
	for i, name := range s.objects {
		cms[i], _ = s.listers[i].Get(name) // the lister's only error: not found
	}
	return cms
}

// fetch is every object as the API server holds it now; nil where it does not exist.
func (s *Store) fetch(term context.Context) ([]*corev1.ConfigMap, error) {
	configMaps := s.client.CoreV1().ConfigMaps(s.namespace)
	cms := make([]*corev1.ConfigMap, len(s.objects))
	for i, name := range s.objects {
		ctx, cancel := context.WithTimeout(term, writeTimeout)
		cm, err := configMaps.Get(ctx, name, metav1.GetOptions{})
		cancel()
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, &storeError{reasonUnreadable, fmt.Errorf("reading %s: %w", name, err)}
		default:
			cms[i] = cm
		}
	}
	return cms, nil
}

// write makes ConfigMap name, now cm (nil: missing), hold data, and reports whether it wrote.
func (s *Store) write(term context.Context, name string, cm *corev1.ConfigMap, data map[string]string) (bool, error) {
	if cm == nil && len(data) == 0 || cm != nil && maps.Equal(cm.Data, data) {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(term, writeTimeout)
	defer cancel()
	configMaps := s.client.CoreV1().ConfigMaps(s.namespace)
	var err error
	if cm == nil {
		created := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: s.namespace,
				Name:      name,
				Labels:    map[string]string{"app.kubernetes.io/managed-by": "coredns-istio"},
			},
			Data: data,
		}
		_, err = configMaps.Create(ctx, created, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Created meanwhile (by a former leader): start over from what it holds.
			return false, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, name, err)
		}
	} else {
		updated := cm.DeepCopy() // the informer's copy is shared
		updated.Data = data
		_, err = configMaps.Update(ctx, updated, metav1.UpdateOptions{})
	}
	if err != nil && !apierrors.IsConflict(err) {
		return false, &storeError{reasonWriteFailed, fmt.Errorf("writing %s: %w", name, err)}
	}
	return err == nil, err
}

// unmigrated reports whether cm, the ConfigMap of the one-ConfigMap format, is still to be read.
func unmigrated(cm *corev1.ConfigMap) bool {
	return cm != nil && cm.Annotations[migratedAnnotation] == ""
}

// markMigrated annotates the legacy ConfigMap once the shards hold what it holds.
func (s *Store) markMigrated(term context.Context, cm *corev1.ConfigMap) error {
	ctx, cancel := context.WithTimeout(term, writeTimeout)
	defer cancel()
	updated := cm.DeepCopy()
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	updated.Annotations[migratedAnnotation] = fmt.Sprintf("%s-00..%s-%02d", s.name, s.name, shardCount-1)
	_, err := s.client.CoreV1().ConfigMaps(s.namespace).Update(ctx, updated, metav1.UpdateOptions{})
	switch {
	case apierrors.IsConflict(err):
		return err
	case err != nil:
		return &storeError{reasonWriteFailed, fmt.Errorf("marking %s migrated: %w", s.name, err)}
	}
	log.Infof("allocations %s: the %d entries of ConfigMap %s are now in %s; it is no longer read, "+
		"delete it once no replica of an earlier version runs", s.Key(), len(cm.Data), s.name, updated.Annotations[migratedAnnotation])
	return nil
}

// decode is what cms (the objects; nil: missing) hold together.
func (s *Store) decode(cms []*corev1.ConfigMap) merged {
	shards := make([]decodedShard, shardCount)
	for i := range shards {
		shards[i] = s.decodedShard(i, cms[i])
	}
	m := mergeShards(shards)
	if old := cms[legacy]; unmigrated(old) {
		all, held, errs := decodeLegacy(old.Data)
		m.addLegacy(all)
		m.legacyHeld = held
		for _, err := range errs {
			m.errs = append(m.errs, fmt.Errorf("ConfigMap %s: %w", s.name, err))
		}
	}
	return m
}

// decodedShard is shard i decoded from cm, reusing the last decoding of the same version.
func (s *Store) decodedShard(i int, cm *corev1.ConfigMap) decodedShard {
	if cm == nil {
		return decodedShard{}
	}
	s.decodeMu.Lock()
	defer s.decodeMu.Unlock()
	c := &s.decoded[i]
	if cm.ResourceVersion != "" && c.uid == string(cm.UID) && c.resourceVersion == cm.ResourceVersion {
		return c.decoded
	}
	d := decodeShard(i, cm.Data)
	for j, err := range d.errs {
		d.errs[j] = fmt.Errorf("ConfigMap %s: %w", cm.Name, err)
	}
	*c = cachedShard{uid: string(cm.UID), resourceVersion: cm.ResourceVersion, decoded: d}
	return d
}

// next computes each shard's data for want from cms (the objects as read), keeping the entries
// that do not decode as they are: their addresses stay held.
func (s *Store) next(cms []*corev1.ConfigMap, want *demanded) [shardCount]map[string]string {
	m := s.decode(cms)
	if len(m.errs) > 0 {
		allocationErrors.WithLabelValues(reasonCorrupt).Add(float64(len(m.errs)))
	}
	heldSet := make(map[netip.Addr]struct{}, len(m.held)+len(m.legacyHeld))
	for _, a := range slices.Concat(m.held, m.legacyHeld) {
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
	next, exhausted, conflicts := s.alloc.next(m.hosts, want.hosts, reserved, time.Now())
	allocationConflicts.Set(float64(len(conflicts)))
	allocationExhausted.Set(float64(len(exhausted)))
	s.warnConflicts(conflicts, next)
	s.warnExhausted(exhausted)
	out := encodeShards(next)
	for i := range out {
		if cms[i] == nil {
			continue
		}
		for _, key := range s.decodedShard(i, cms[i]).corrupt {
			if _, ok := out[i][key]; !ok {
				out[i][key] = cms[i].Data[key]
			}
		}
	}
	// What the legacy ConfigMap holds in entries that do not decode stays held in the shards,
	// as an entry that does not decode either.
	for _, a := range m.legacyHeld {
		if shard := out[shardOf(a)]; shard[addressKey(a)] == "" {
			shard[addressKey(a)] = "held: unreadable in ConfigMap " + s.name
		}
	}
	return out
}

// warnConflicts logs each host whose live VIP became a conflict once, until it no longer is one.
// Owned by the reconciler goroutine.
func (s *Store) warnConflicts(hosts []string, next map[string]allocation) {
	warnNew(&s.conflicted, hosts, func(h string) string {
		var where []string
		for _, a := range [2]netip.Addr{next[h].V4, next[h].V6} {
			if a.IsValid() {
				where = append(where, fmt.Sprintf("key %q of ConfigMap %s", addressKey(a), s.objects[shardOf(a)]))
			}
		}
		return fmt.Sprintf("allocations %s: a ServiceEntry now declares a VIP of %s (or another host holds it); "+
			"it is kept, as moving it would break its clients: delete %s to renumber it",
			s.Key(), h, strings.Join(where, " and "))
	})
}

func (s *Store) warnExhausted(hosts []string) {
	warnNew(&s.exhausted, hosts, func(h string) string {
		return fmt.Sprintf("allocations %s: no VIP for %s: the autoallocate ranges are full", s.Key(), h)
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

// watchError counts the informers' failures to list or watch the ConfigMaps; a closed or expired
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
		log.Errorf("allocations %s: %s; new hosts get no VIP until a write succeeds", s.Key(), msg)
		return
	}
	log.Errorf("allocations %s: %s; no new VIP is handed out until they can be read", s.Key(), msg)
}

// recovered forgets the errors last logged for reasons, so that a recurrence is logged again.
func (s *Store) recovered(reasons ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range reasons {
		delete(s.failed, r)
	}
}
