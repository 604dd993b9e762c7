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
	s := newTestStore(t, client)
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

// configMap is the store's ConfigMap name holding data.
// newTestStore is a store on client, not started, with election timings and write spacing
// short enough for tests.
func newTestStore(t *testing.T, client *fake.Clientset) *Store {
	t.Helper()
	alloc, err := New(storeRanges, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(storeNS, storeName, nil, alloc)
	s.client = client
	s.leaseDuration, s.renewDeadline, s.retryPeriod = 3*time.Second, 2*time.Second, 500*time.Millisecond
	s.spacing = 10 * time.Millisecond
	return s
}

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: storeNS, Name: name}, Data: data}
}

// shardObjects are the store's shards holding the allocations m, and the extra entries
// (addresses as keys) each in the shard of its address; keepEmpty says whether shards left
// empty exist.
func shardObjects(m map[string]allocation, extra map[string]string, keepEmpty bool) []runtime.Object {
	data := encodeShards(m)
	for k, v := range extra {
		data[shardOf(netip.MustParseAddr(strings.ReplaceAll(k, "-", ":")))][k] = v
	}
	var objs []runtime.Object
	for i, name := range shardNames(storeName) {
		if len(data[i]) > 0 || keepEmpty {
			objs = append(objs, configMap(name, data[i]))
		}
	}
	return objs
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

// writes counts the actions with verbs on ConfigMaps the client has seen.
func writes(client *fake.Clientset, verbs ...string) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "configmaps" && slices.Contains(verbs, a.GetVerb()) {
			n++
		}
	}
	return n
}

// stored is every shard's data, by name (missing shards left out).
func stored(t *testing.T, client *fake.Clientset) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, name := range shardNames(storeName) {
		cm, err := client.CoreV1().ConfigMaps(storeNS).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			out[name] = cm.Data
		}
	}
	return out
}

// storedHosts is every host's allocation as the shards hold it.
func storedHosts(t *testing.T, client *fake.Clientset) map[string]allocation {
	t.Helper()
	var data [shardCount]map[string]string
	for i, name := range shardNames(storeName) {
		data[i] = stored(t, client)[name]
	}
	return mergeShards(decodeAll(data)).hosts
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
	objs := shardObjects(map[string]allocation{
		"a.x.global.": {VIPs: VIPs{V4: netip.MustParseAddr("240.241.0.1"), V6: netip.MustParseAddr("2001:2:0:1::1")}},
		"b.x.global.": {VIPs: VIPs{V4: netip.MustParseAddr("240.241.0.2"), V6: netip.MustParseAddr("2001:2:0:1::2")}, Released: released},
	}, map[string]string{"240.241.0.3": "not a host!"}, false)
	// A replica that does not lead serves what the ConfigMaps hold all the same.
	s, _, notified := startStore(t, append(objs, heldLease("other", 3600))...)

	live, corrupt := s.Current()
	want := map[string]VIPs{"a.x.global.": {V4: netip.MustParseAddr("240.241.0.1"), V6: netip.MustParseAddr("2001:2:0:1::1")}}
	if !maps.Equal(live, want) {
		t.Errorf("live %v, want %v (released and corrupt entries are not served)", live, want)
	}
	shard := shardNames(storeName)[shardOf(netip.MustParseAddr("240.241.0.3"))]
	if len(corrupt) != 1 || !strings.Contains(corrupt[0].Error(), `"240.241.0.3"`) || !strings.Contains(corrupt[0].Error(), shard) ||
		s.Key() != storeNS+"/"+storeName {
		t.Errorf("corrupt %v (store %s), want one error naming the entry's key and shard", corrupt, s.Key())
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
	if n, shards := writes(client, "create"), len(stored(t, client)); n != shards || n == 0 || n > 4 {
		t.Errorf("%d creates for %d shards, want one per shard the four VIPs are in", n, shards)
	}
	for name := range stored(t, client) {
		cm, err := client.CoreV1().ConfigMaps(storeNS).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || cm.Labels["app.kubernetes.io/managed-by"] != "coredns-istio" {
			t.Errorf("created ConfigMap %v (%v), want labelled as ours", cm, err)
		}
	}

	// A third host: at most two writes (its two shards), and a and b keep their VIPs.
	before := writes(client, "update", "create")
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
	if n := writes(client, "update", "create") - before; n == 0 || n > 2 {
		t.Errorf("%d writes for one host, want one per shard its VIPs are in", n)
	}

	// The same demand again, many times: nothing to write.
	before = writes(client, "update", "create")
	for range 5 {
		s.Demand([]string{"a.x.global.", "b.x.global.", "c.x.global."}, noneReserved)
		time.Sleep(20 * time.Millisecond)
	}
	s.Demand([]string{"a.x.global.", "b.x.global.", "c.x.global.", "d.x.global."}, noneReserved)
	liveHosts(t, s, "a.x.global.", "b.x.global.", "c.x.global.", "d.x.global.")
	if n := writes(client, "update", "create") - before; n == 0 || n > 2 {
		t.Errorf("%d writes, want at most two, for d: the unchanged demands wrote", n)
	}

	// A host no longer wanted is released (not served), and its VIP is not handed out again.
	s.Demand([]string{"a.x.global.", "c.x.global.", "d.x.global.", "e.x.global."}, noneReserved)
	third := liveHosts(t, s, "a.x.global.", "c.x.global.", "d.x.global.", "e.x.global.")
	if e := third["e.x.global."]; e.V4 == second["b.x.global."].V4 || e.V6 == second["b.x.global."].V6 {
		t.Errorf("e got b's VIPs %v within the grace period", e)
	}
	if b := storedHosts(t, client)["b.x.global."]; b.VIPs != second["b.x.global."] || b.Released.IsZero() {
		t.Errorf("b's allocation is %v, want its VIPs %v, released", b, second["b.x.global."])
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
	// Twelve of the sixteen IPv4 addresses sit in entries that do not decode.
	data := map[string]string{}
	for i := 2; i < 14; i++ {
		data[fmt.Sprintf("240.241.0.%d", i)] = fmt.Sprintf("corrupt %d", i)
	}
	s, client, _ := startStore(t, shardObjects(nil, data, false)...)
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
		shard := shardNames(storeName)[shardOf(netip.MustParseAddr(k))]
		if got[shard][k] != v {
			t.Errorf("corrupt %s = %q in %s after the write, want it kept as %q", k, got[shard][k], shard, v)
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
	s, client, _ := startStore(t, shardObjects(map[string]allocation{"a.x.global.": {VIPs: a}}, nil, false)...)
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
	if n := writes(client, "update", "create"); n == 0 || n > 2 {
		t.Errorf("%d writes, want one per shard of b's VIPs", n)
	}
}

func TestAllocationStoreRetriesConflicts(t *testing.T) {
	client := fake.NewClientset(shardObjects(nil, nil, true)...)
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
	a := liveHosts(t, s, "a.x.global.")["a.x.global."]
	shards := 1
	if shardOf(a.V4) != shardOf(a.V6) {
		shards = 2
	}
	if n := writes(client, "update"); n != 1+shards {
		t.Errorf("%d updates, want %d: one conflict, then a's shards", n, 1+shards)
	}
	if n := writes(client, "get"); n != len(s.objects) {
		t.Errorf("%d reads of the ConfigMaps, want %d: each once, fresh, after the conflict", n, len(s.objects))
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
	s := newTestStore(t, client)
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

// TestAllocationStoreMigratesLegacy: the one ConfigMap of earlier versions is served until the
// leader has copied it into the shards; then it is annotated and no longer read.
func TestAllocationStoreMigratesLegacy(t *testing.T) {
	a := VIPs{V4: netip.MustParseAddr("240.241.0.5"), V6: netip.MustParseAddr("2001:2:0:1::5")}
	b := VIPs{V4: netip.MustParseAddr("240.241.0.6"), V6: netip.MustParseAddr("2001:2:0:1::6")}
	old := configMap(storeName, map[string]string{
		"a.x.global": "240.241.0.5,2001:2:0:1::5",
		"b.x.global": "240.241.0.6,2001:2:0:1::6 released=2099-01-01T00:00:00Z",
		"c.x.global": "240.241.0.7,garbage",
	})
	s, client, _ := startStore(t, old, heldLease("other", 2))
	if live, corrupt := s.Current(); !maps.Equal(live, map[string]VIPs{"a.x.global.": a}) || len(corrupt) != 1 {
		t.Errorf("before the migration: live %v, corrupt %v; want a, and c corrupt", live, corrupt)
	}

	waitLeading(t, s)
	s.Demand([]string{"a.x.global.", "d.x.global."}, noneReserved)
	live := liveHosts(t, s, "a.x.global.", "d.x.global.")
	if live["a.x.global."] != a {
		t.Errorf("a moved from %v to %v in the migration", a, live["a.x.global."])
	}
	if d := live["d.x.global."]; d.V4 == b.V4 || d.V6 == b.V6 || d.V4 == netip.MustParseAddr("240.241.0.7") {
		t.Errorf("d got %v: b's released or c's corrupt address", d)
	}
	poll.Until(t, 5*time.Second, func() error {
		cm, err := client.CoreV1().ConfigMaps(storeNS).Get(context.Background(), storeName, metav1.GetOptions{})
		if err != nil || cm.Annotations[migratedAnnotation] == "" {
			return fmt.Errorf("the legacy ConfigMap is %v (%v), want annotated", cm, err)
		}
		return nil
	})
	if got := storedHosts(t, client); got["b.x.global."].VIPs != b || got["a.x.global."].VIPs != a {
		t.Errorf("the shards hold %v, want a and b (released) as before", got)
	}
	// c's entry did not decode: its readable address stays held, in its shard.
	c := netip.MustParseAddr("240.241.0.7")
	if v := stored(t, client)[shardNames(storeName)[shardOf(c)]][c.String()]; !strings.HasPrefix(v, "held:") {
		t.Errorf("shard entry of %s is %q, want it held", c, v)
	}

	// An earlier version's leader writing it now changes nothing here.
	cm, err := client.CoreV1().ConfigMaps(storeNS).Get(context.Background(), storeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["z.x.global"] = "240.241.0.9"
	if _, err := client.CoreV1().ConfigMaps(storeNS).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	liveHosts(t, s, "a.x.global.", "d.x.global.")
}

// TestAllocationStoreWithholdsIncompleteHosts: a new host is served once all its records are
// visible; one served before keeps being served while a record of it names one still to come.
func TestAllocationStoreWithholdsIncompleteHosts(t *testing.T) {
	v4, v6 := netip.MustParseAddr("240.241.0.5"), netip.MustParseAddr("2001:2:0:1::5")
	old := netip.MustParseAddr("240.241.0.6")
	objs := shardObjects(nil, map[string]string{
		"240.241.0.5": "new.x.global with=2001:2:0:1::5",
		"240.241.0.6": "old.x.global",
	}, true)
	s, client, _ := startStore(t, append(objs, heldLease("other", 3600))...)
	liveHosts(t, s, "old.x.global.")

	set := func(a netip.Addr, value string) {
		t.Helper()
		name := shardNames(storeName)[shardOf(a)]
		cm, err := client.CoreV1().ConfigMaps(storeNS).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[addressKey(a)] = value
		if _, err := client.CoreV1().ConfigMaps(storeNS).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	set(old, "old.x.global with=2001:2:0:1::6") // old gets an IPv6 VIP: its IPv4 record first
	time.Sleep(100 * time.Millisecond)
	if live := liveHosts(t, s, "old.x.global."); live["old.x.global."] != (VIPs{V4: old}) {
		t.Errorf("old serves %v while its IPv6 record is still to come, want its IPv4 VIP", live)
	}
	set(v6, "new.x.global with=240.241.0.5")
	if live := liveHosts(t, s, "new.x.global.", "old.x.global."); live["new.x.global."] != (VIPs{v4, v6}) {
		t.Errorf("new serves %v, want both its VIPs", live["new.x.global."])
	}
}

// TestAllocationStoreWritesOnlyWhatItCanRead: a leader that cannot read one shard (or the
// legacy ConfigMap) serves what it can, but writes nothing: that shard could hold any address.
func TestAllocationStoreWritesOnlyWhatItCanRead(t *testing.T) {
	client := fake.NewClientset()
	unreadable := shardNames(storeName)[5]
	client.PrependReactor("list", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if sel := a.(k8stesting.ListAction).GetListRestrictions().Fields.String(); strings.Contains(sel, unreadable) {
			return true, nil, apierrors.NewForbidden(corev1.Resource("configmaps"), unreadable, fmt.Errorf("no RBAC"))
		}
		return false, nil, nil
	})
	s := newTestStore(t, client)
	s.syncTimeout = 300 * time.Millisecond
	if err := s.Start(func() {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	waitLeading(t, s)
	poll.Until(t, 5*time.Second, func() error {
		if !s.Synced() {
			return fmt.Errorf("not synced after the sync timeout")
		}
		return nil
	})
	s.Demand([]string{"a.x.global."}, noneReserved)
	time.Sleep(time.Second)
	if n := writes(client, "create", "update"); n != 0 {
		t.Errorf("%d writes while %s cannot be read", n, unreadable)
	}
}
