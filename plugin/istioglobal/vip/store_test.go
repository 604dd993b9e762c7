package vip

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/poll"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const (
	storeNS   = "coredns"
	storeName = "coredns-istio-vips"
)

var storeRanges = []netip.Prefix{netip.MustParsePrefix("240.241.0.0/28"), netip.MustParsePrefix("2001:2:0:1::/124")}

// startStore starts a store on a fake clientset holding objs, with election timings short
// enough for tests, and waits until it has synced.
func startStore(t *testing.T, objs ...runtime.Object) (*Store, *fake.Clientset, *atomic.Int32) {
	t.Helper()
	client := fake.NewClientset(objs...)
	s, notified := startStoreOn(t, client)
	return s, client, notified
}

// startStoreOn is startStore on client, whose reactors must all be in place: the fake's
// reactor chain must not change while the store uses it.
func startStoreOn(t *testing.T, client *fake.Clientset) (*Store, *atomic.Int32) {
	t.Helper()
	alloc, err := New(storeRanges, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(storeNS, storeName, nil, alloc)
	s.client = client
	s.leaseDuration, s.renewDeadline, s.retryPeriod = 3*time.Second, 2*time.Second, 500*time.Millisecond
	var notified atomic.Int32
	if err := s.Start(func() { notified.Add(1) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	poll.Until(t, 5*time.Second, func() error {
		if !s.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	return s, &notified
}

func configMap(data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: storeNS, Name: storeName}, Data: data}
}

// heldLease is the Lease as another replica holds it, renewed just now.
func heldLease(holder string, seconds int32) *coordinationv1.Lease {
	now := metav1.NewMicroTime(time.Now())
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: storeNS, Name: storeName},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       &holder,
			LeaseDurationSeconds: &seconds,
			AcquireTime:          &now,
			RenewTime:            &now,
		},
	}
}

// writes counts the creates and updates of the ConfigMap the client has seen.
func writes(client *fake.Clientset, verbs ...string) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "configmaps" && slices.Contains(verbs, a.GetVerb()) {
			n++
		}
	}
	return n
}

func stored(t *testing.T, client *fake.Clientset) map[string]string {
	t.Helper()
	cm, err := client.CoreV1().ConfigMaps(storeNS).Get(context.Background(), storeName, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return cm.Data
}

// value reads a gauge or counter.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func noneReserved(netip.Addr) uint64 { return 0 }

// liveHosts waits until current() serves exactly hosts, and returns their VIPs.
func liveHosts(t *testing.T, s *Store, hosts ...string) map[string]VIPs {
	t.Helper()
	var live map[string]VIPs
	poll.Until(t, 5*time.Second, func() error {
		live, _ = s.Current()
		if got := slices.Sorted(maps.Keys(live)); !slices.Equal(got, slices.Sorted(slices.Values(hosts))) {
			return fmt.Errorf("current serves %v, want %v", got, hosts)
		}
		return nil
	})
	return live
}

func waitLeading(t *testing.T, s *Store) {
	t.Helper()
	poll.Until(t, 5*time.Second, func() error {
		if !s.leading() {
			return fmt.Errorf("not leading")
		}
		return nil
	})
}

func TestAllocationStoreCurrent(t *testing.T) {
	released := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	data := encodeAllocations(map[string]allocation{
		"a.x.global.": {VIPs: VIPs{V4: netip.MustParseAddr("240.241.0.1"), V6: netip.MustParseAddr("2001:2:0:1::1")}},
		"b.x.global.": {VIPs: VIPs{V4: netip.MustParseAddr("240.241.0.2"), V6: netip.MustParseAddr("2001:2:0:1::2")}, Released: released},
	})
	data["c.x.global"] = "240.241.0.3,not-an-address"
	// A replica that does not lead serves what the ConfigMap holds all the same.
	s, _, notified := startStore(t, configMap(data), heldLease("other", 3600))

	live, corrupt := s.Current()
	want := map[string]VIPs{"a.x.global.": {V4: netip.MustParseAddr("240.241.0.1"), V6: netip.MustParseAddr("2001:2:0:1::1")}}
	if !maps.Equal(live, want) {
		t.Errorf("live %v, want %v (released and corrupt entries are not served)", live, want)
	}
	if len(corrupt) != 1 || !strings.Contains(corrupt[0].Error(), "c.x.global") || s.Key() != storeNS+"/"+storeName {
		t.Errorf("corrupt %v (store %s), want one error naming the entry's key", corrupt, s.Key())
	}
	if notified.Load() == 0 {
		t.Error("notify was not called once synced")
	}
	if s.leading() {
		t.Error("leads although another replica holds the Lease")
	}
}

func TestAllocationStoreMissingConfigMapIsSyncedAndEmpty(t *testing.T) {
	s, _, _ := startStore(t, heldLease("other", 3600))
	if live, problems := s.Current(); len(live) != 0 || len(problems) != 0 {
		t.Errorf("current() = %v, %v; want nothing", live, problems)
	}
}

func TestAllocationStoreLeaderWrites(t *testing.T) {
	s, client, _ := startStore(t)
	waitLeading(t, s)
	if v := value(allocationLeader); v != 1 {
		t.Errorf("leader gauge %v, want 1", v)
	}

	s.Demand([]string{"a.x.global.", "b.x.global."}, noneReserved)
	first := liveHosts(t, s, "a.x.global.", "b.x.global.")
	if n := writes(client, "create"); n != 1 {
		t.Errorf("%d creates, want 1", n)
	}
	cm, err := client.CoreV1().ConfigMaps(storeNS).Get(context.Background(), storeName, metav1.GetOptions{})
	if err != nil || cm.Labels["app.kubernetes.io/managed-by"] != "coredns-istio" {
		t.Errorf("created ConfigMap %v (%v), want labelled as ours", cm, err)
	}

	// A third host: one update, and a and b keep their VIPs.
	s.Demand([]string{"a.x.global.", "b.x.global.", "c.x.global."}, noneReserved)
	second := liveHosts(t, s, "a.x.global.", "b.x.global.", "c.x.global.")
	for h, v := range first {
		if second[h] != v {
			t.Errorf("%s moved from %v to %v", h, v, second[h])
		}
	}
	unique := map[netip.Addr]bool{}
	for h, v := range second {
		if !v.V4.Is4() || !v.V6.Is6() || unique[v.V4] || unique[v.V6] {
			t.Errorf("%s: %v is not a fresh IPv4 and IPv6 pair", h, v)
		}
		unique[v.V4], unique[v.V6] = true, true
	}
	if n := writes(client, "update"); n != 1 {
		t.Errorf("%d updates, want 1", n)
	}

	// The same demand again, many times: nothing to write. Then one more host: exactly one
	// update, which also shows the repeated demands were handled first.
	for range 5 {
		s.Demand([]string{"a.x.global.", "b.x.global.", "c.x.global."}, noneReserved)
		time.Sleep(20 * time.Millisecond)
	}
	s.Demand([]string{"a.x.global.", "b.x.global.", "c.x.global.", "d.x.global."}, noneReserved)
	liveHosts(t, s, "a.x.global.", "b.x.global.", "c.x.global.", "d.x.global.")
	if n := writes(client, "update", "create"); n != 3 {
		t.Errorf("%d writes, want 3: the unchanged demands wrote", n)
	}

	// A host no longer wanted is released (not served), and its VIP is not handed out again.
	s.Demand([]string{"a.x.global.", "c.x.global.", "d.x.global.", "e.x.global."}, noneReserved)
	third := liveHosts(t, s, "a.x.global.", "c.x.global.", "d.x.global.", "e.x.global.")
	if e := third["e.x.global."]; e.V4 == second["b.x.global."].V4 || e.V6 == second["b.x.global."].V6 {
		t.Errorf("e got b's VIPs %v within the grace period", e)
	}
	if _, ok := stored(t, client)["b.x.global"]; !ok {
		t.Errorf("b's released allocation is gone: %v", stored(t, client))
	}

	s.Stop()
	lease, err := client.CoordinationV1().Leases(storeNS).Get(context.Background(), storeName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
		t.Errorf("after stop the Lease is %+v (%v), want released", lease, err)
	}
	if v := value(allocationLeader); v != 0 {
		t.Errorf("leader gauge %v after stop, want 0", v)
	}
}

func TestAllocationStoreHoldsCorruptAddresses(t *testing.T) {
	// Twelve of the sixteen IPv4 addresses sit in values that do not decode.
	data := map[string]string{}
	held := map[netip.Addr]bool{}
	for i := 2; i < 14; i++ {
		a := netip.MustParseAddr(fmt.Sprintf("240.241.0.%d", i))
		held[a] = true
		data[fmt.Sprintf("corrupt%d.x.global", i)] = a.String() + ",garbage"
	}
	s, client, _ := startStore(t, configMap(maps.Clone(data)))
	waitLeading(t, s)
	before := value(allocationErrors.WithLabelValues(reasonCorrupt))

	s.Demand([]string{"a.x.global.", "b.x.global."}, noneReserved)
	live := liveHosts(t, s, "a.x.global.", "b.x.global.")
	free := map[netip.Addr]bool{netip.MustParseAddr("240.241.0.1"): true, netip.MustParseAddr("240.241.0.14"): true}
	for h, v := range live {
		if !free[v.V4] {
			t.Errorf("%s got %s, want one of the two addresses no corrupt entry holds", h, v.V4)
		}
	}
	got := stored(t, client)
	for k, v := range data {
		if got[k] != v {
			t.Errorf("corrupt %s = %q after the write, want it kept as %q", k, got[k], v)
		}
	}
	if after := value(allocationErrors.WithLabelValues(reasonCorrupt)); after <= before {
		t.Error("corrupt entries were not counted")
	}
}

func TestAllocationStoreReservedAddresses(t *testing.T) {
	s, _, _ := startStore(t)
	waitLeading(t, s)
	// Everything but 240.241.0.9 is declared by some ServiceEntry.
	free := netip.MustParseAddr("240.241.0.9")
	s.Demand([]string{"a.x.global."}, func(a netip.Addr) uint64 {
		if a.Is4() && a != free {
			return 1
		}
		return 0
	})
	if v := liveHosts(t, s, "a.x.global.")["a.x.global."]; v.V4 != free {
		t.Errorf("a got %v, want the one address not reserved, %s", v, free)
	}
}

func TestAllocationStoreKeepsConflictingVIPs(t *testing.T) {
	a := VIPs{V4: netip.MustParseAddr("240.241.0.1"), V6: netip.MustParseAddr("2001:2:0:1::1")}
	data := encodeAllocations(map[string]allocation{"a.x.global.": {VIPs: a}})
	s, client, _ := startStore(t, configMap(maps.Clone(data)))
	waitLeading(t, s)

	// A ServiceEntry now declares a's IPv4 VIP: a keeps it, and the conflict is reported.
	s.Demand([]string{"a.x.global.", "b.x.global."}, reservedOf(a.V4))
	live := liveHosts(t, s, "a.x.global.", "b.x.global.")
	if live["a.x.global."] != a {
		t.Errorf("a moved to %v", live["a.x.global."])
	}
	poll.Until(t, 5*time.Second, func() error {
		if v := value(allocationConflicts); v != 1 {
			return fmt.Errorf("conflicts gauge %v, want 1", v)
		}
		return nil
	})
	s.Demand([]string{"a.x.global.", "b.x.global."}, noneReserved)
	poll.Until(t, 5*time.Second, func() error {
		if v := value(allocationConflicts); v != 0 {
			return fmt.Errorf("conflicts gauge %v once resolved, want 0", v)
		}
		return nil
	})
	if n := writes(client, "update"); n != 1 {
		t.Errorf("%d updates, want 1 (for b)", n)
	}
}

func TestAllocationStoreRetriesConflicts(t *testing.T) {
	client := fake.NewClientset(configMap(map[string]string{}))
	var conflicts atomic.Int32
	client.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts.Add(1) == 1 {
			return true, nil, apierrors.NewConflict(corev1.Resource("configmaps"), storeName, fmt.Errorf("changed meanwhile"))
		}
		return false, nil, nil
	})
	s, _ := startStoreOn(t, client)
	waitLeading(t, s)
	client.ClearActions()

	s.Demand([]string{"a.x.global."}, noneReserved)
	liveHosts(t, s, "a.x.global.")
	if n := writes(client, "update"); n != 2 {
		t.Errorf("%d updates, want 2: one conflict, one retry", n)
	}
	if n := writes(client, "get"); n != 1 {
		t.Errorf("%d reads of the ConfigMap, want 1 fresh Get after the conflict", n)
	}
}

func TestAllocationStoreWriteFailure(t *testing.T) {
	client := fake.NewClientset()
	var fail atomic.Bool
	fail.Store(true)
	client.PrependReactor("create", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fail.Load() {
			return true, nil, apierrors.NewForbidden(corev1.Resource("configmaps"), storeName, fmt.Errorf("no RBAC"))
		}
		return false, nil, nil
	})
	s, _ := startStoreOn(t, client)
	waitLeading(t, s)
	before := value(allocationErrors.WithLabelValues(reasonWriteFailed))

	s.Demand([]string{"a.x.global."}, noneReserved)
	poll.Until(t, 5*time.Second, func() error {
		if value(allocationErrors.WithLabelValues(reasonWriteFailed)) < before+2 {
			return fmt.Errorf("the failed write was not retried and counted")
		}
		return nil
	})
	if live, _ := s.Current(); len(live) != 0 {
		t.Errorf("serves %v although nothing was written", live)
	}
	// Without a new demand, the retry succeeds once the API server lets it.
	fail.Store(false)
	liveHosts(t, s, "a.x.global.")
}

func TestAllocationStoreUnreadable(t *testing.T) {
	client := fake.NewClientset(heldLease("other", 3600))
	var lists atomic.Int32
	client.PrependReactor("list", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if lists.Add(1) == 1 {
			return true, nil, apierrors.NewForbidden(corev1.Resource("configmaps"), "", fmt.Errorf("no RBAC"))
		}
		return false, nil, nil
	})
	before := value(allocationErrors.WithLabelValues(reasonUnreadable))
	// Synced only once a list succeeded: the informer retries the forbidden one.
	startStoreOn(t, client)
	if after := value(allocationErrors.WithLabelValues(reasonUnreadable)); after != before+1 {
		t.Errorf("unreadable counted %v times, want once", after-before)
	}
}

func TestAllocationStoreFollowerWritesNothing(t *testing.T) {
	s, client, _ := startStore(t, heldLease("other", 3600))
	s.Demand([]string{"a.x.global."}, noneReserved)
	time.Sleep(3 * s.retryPeriod)
	if s.leading() || writes(client, "create", "update") != 0 {
		t.Errorf("a follower wrote: leading=%v, ConfigMap %v", s.leading(), stored(t, client))
	}
	if v := value(allocationLeader); v != 0 {
		t.Errorf("leader gauge %v, want 0", v)
	}
}

func TestAllocationStoreNewLeaderActsOnLatestDemand(t *testing.T) {
	// The other replica's Lease expires two seconds after we first see it, unrenewed.
	s, client, _ := startStore(t, heldLease("other", 2))
	s.Demand([]string{"old.x.global."}, noneReserved)
	s.Demand([]string{"a.x.global.", "b.x.global."}, noneReserved)
	for !s.leading() {
		if n := writes(client, "create", "update"); n != 0 {
			t.Fatalf("%d writes before leading", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// No demand after the election: the recorded one is acted on.
	liveHosts(t, s, "a.x.global.", "b.x.global.")
}

// TestAllocationStoreGivesUpWaiting: a ConfigMap that can never be read holds up serving only
// for the sync timeout; then the store counts as synced, with nothing to serve.
func TestAllocationStoreGivesUpWaiting(t *testing.T) {
	client := fake.NewClientset(heldLease("other", 3600))
	client.PrependReactor("list", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("configmaps"), "", fmt.Errorf("no RBAC"))
	})
	alloc, err := New(storeRanges, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(storeNS, storeName, nil, alloc)
	s.client = client
	s.syncTimeout = 300 * time.Millisecond
	var notified atomic.Int32
	if err := s.Start(func() { notified.Add(1) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if s.Synced() {
		t.Fatal("synced before the ConfigMap was read or the wait given up")
	}
	poll.Until(t, 5*time.Second, func() error {
		if !s.Synced() || notified.Load() == 0 {
			return fmt.Errorf("synced=%v notified=%d after the sync timeout", s.Synced(), notified.Load())
		}
		return nil
	})
	if live, _ := s.Current(); len(live) != 0 {
		t.Errorf("serves %v from a ConfigMap it never read", live)
	}
}

func TestAllocationStoreReportsExhaustion(t *testing.T) {
	s, _, _ := startStore(t)
	waitLeading(t, s)
	var hosts []string
	for i := range 20 { // the /28 has 14 usable addresses
		hosts = append(hosts, fmt.Sprintf("h%d.x.global.", i))
	}
	s.Demand(hosts, noneReserved)
	poll.Until(t, 5*time.Second, func() error {
		if v := value(allocationExhausted); v != 6 {
			return fmt.Errorf("exhausted gauge %v, want 6", v)
		}
		return nil
	})
	s.Demand(hosts[:3], noneReserved) // those three keep theirs; nobody is left wanting
	poll.Until(t, 5*time.Second, func() error {
		if v := value(allocationExhausted); v != 0 {
			return fmt.Errorf("exhausted gauge %v, want 0", v)
		}
		return nil
	})
}
