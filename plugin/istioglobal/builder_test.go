package istioglobal

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/poll"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/client-go/pkg/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// gatedSource is a countingSource that has not synced until opened, as an informer whose API
// server is slow or unreachable.
type gatedSource struct {
	countingSource
	open atomic.Bool
}

func (g *gatedSource) synced() bool { return g.open.Load() }

func (g *gatedSource) sync() { g.open.Store(true); g.notify() }

func entriesSource(entries ...Entry) *countingSource {
	s := &countingSource{}
	s.list.Store(&entries)
	return s
}

func gated(entries ...Entry) *gatedSource {
	g := &gatedSource{}
	g.list.Store(&entries)
	return g
}

// startInstance starts a plugin instance of the server block lineage, as a reload does.
func startInstance(t *testing.T, lineage string, sources ...source) *IstioGlobal {
	t.Helper()
	ig := newIstioGlobal()
	ig.Zones = []string{"global."}
	ig.Next = test.NextHandler(dns.RcodeRefused, nil)
	ig.lineage = lineage
	ig.sources = sources
	if err := ig.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ig.shutdown() })
	return ig
}

func rcode(t *testing.T, ig *IstioGlobal, name string, qtype uint16) int {
	t.Helper()
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rc, _ := ig.ServeDNS(context.Background(), rec, new(dns.Msg).SetQuestion(name, qtype))
	if rec.Msg != nil {
		return rec.Msg.Rcode
	}
	return rc
}

func TestReloadHandsTheTableOver(t *testing.T) {
	lineage := t.Name()
	oldSrc := entriesSource(se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.1"))
	old := startInstance(t, lineage, oldSrc)
	poll.Until(t, 2*time.Second, wantAnswer(t, old, "a.bar.global.", "240.0.0.1"))

	// The new instance's source has not synced: it serves what the old one served.
	newSrc := gated(se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.3"))
	reloaded := startInstance(t, lineage, newSrc)
	if !reloaded.Ready() {
		t.Error("a reloaded instance serving its predecessor's table is not ready")
	}
	if got := answers(t, reloaded, "a.bar.global."); got != "240.0.0.1" {
		t.Fatalf("reloaded, before its sources synced: %s, want the old table's 240.0.0.1", got)
	}
	if rc := rcode(t, reloaded, "nosuch.bar.global.", dns.TypeA); rc != dns.RcodeNameError {
		t.Errorf("reloaded, an unknown name: %s, want NXDOMAIN from the inherited table", dns.RcodeToString[rc])
	}

	// A change the old instance publishes before CoreDNS shuts it down is handed over too.
	oldSrc.list.Store(&[]Entry{se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.2")})
	oldSrc.notify()
	poll.Until(t, 2*time.Second, wantAnswer(t, old, "a.bar.global.", "240.0.0.2"))
	old.shutdown()
	if got := answers(t, reloaded, "a.bar.global."); got != "240.0.0.2" {
		t.Fatalf("after the old instance shut down: %s, want its last table's 240.0.0.2", got)
	}

	// Once synced, the new instance serves its own table, with a later serial.
	inherited := reloaded.table.Load()
	newSrc.sync()
	poll.Until(t, 2*time.Second, wantAnswer(t, reloaded, "a.bar.global.", "240.0.0.3"))
	if own := reloaded.table.Load(); !serialLess(inherited.serial, own.serial) {
		t.Errorf("own serial %d, inherited %d: want it later", own.serial, inherited.serial)
	}
}

func TestNoHandoverAcrossLineages(t *testing.T) {
	first := startInstance(t, t.Name()+"/a", entriesSource(se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.1")))
	poll.Until(t, 2*time.Second, wantAnswer(t, first, "a.bar.global.", "240.0.0.1"))
	other := startInstance(t, t.Name()+"/b", gated())
	if other.Ready() {
		t.Error("another server block's instance is ready before its sources synced")
	}
	if rc := rcode(t, other, "a.bar.global.", dns.TypeA); rc != dns.RcodeServerFailure {
		t.Errorf("never synced: %s, want SERVFAIL", dns.RcodeToString[rc])
	}
}

// A reload whose sources never sync (the API server is down) keeps serving, reload after reload.
func TestReloadWhileUnsynced(t *testing.T) {
	lineage := t.Name()
	first := startInstance(t, lineage, entriesSource(se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.1")))
	poll.Until(t, 2*time.Second, wantAnswer(t, first, "a.bar.global.", "240.0.0.1"))
	prev := first
	for i := range 3 {
		next := startInstance(t, lineage, gated())
		prev.shutdown()
		if got := answers(t, next, "a.bar.global."); got != "240.0.0.1" {
			t.Fatalf("reload %d with unsynced sources: %s, want 240.0.0.1", i+1, got)
		}
		prev = next
	}
}

func TestNoOpChangesPublishNothing(t *testing.T) {
	src := entriesSource(se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.1"))
	ig := startPlugin(t, src)
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "a.bar.global.", "240.0.0.1"))
	published := ig.table.Load()

	// The same entries, as a resync or a touched file gives them: read, but not published.
	unchanged := testutil.ToFloat64(builds.WithLabelValues("unchanged"))
	src.list.Store(&[]Entry{se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.1")})
	src.notify()
	poll.Until(t, 2*time.Second, func() error {
		if testutil.ToFloat64(builds.WithLabelValues("unchanged")) == unchanged {
			return fmt.Errorf("not read again")
		}
		return nil
	})
	if ig.table.Load() != published {
		t.Fatal("an unchanged input published a new table")
	}

	src.list.Store(&[]Entry{se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.2")})
	src.notify()
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "a.bar.global.", "240.0.0.2"))
	if s := ig.table.Load().serial; !serialLess(published.serial, s) {
		t.Errorf("serial %d after a change, %d before", s, published.serial)
	}
}

// A status update that leaves status.addresses alone (conditions, Istio's validation message)
// publishes nothing, and the engine lets go of the object it replaces.
func TestKubeSourceIgnoresUpdatesThatChangeNothing(t *testing.T) {
	se := serviceEntry("foo", "a", []string{"a.bar.global"}, "240.0.0.1")
	client := fake.NewSimpleClientset(se)
	var notified atomic.Int64
	ks := &kubeSource{client: client}
	if err := ks.start(func() { notified.Add(1) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.stop)
	poll.Until(t, 5*time.Second, func() error {
		if !ks.synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	ctx := context.Background()
	update := func(change func(*networkingv1.ServiceEntry)) {
		t.Helper()
		cur, err := client.NetworkingV1().ServiceEntries("foo").Get(ctx, "a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		change(cur)
		cur.ResourceVersion = fmt.Sprint(time.Now().UnixNano())
		if _, err := client.NetworkingV1().ServiceEntries("foo").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e := newEngine(tableConfig{zones: []string{"global."}, ttl: 30})
	commit := func() *Table {
		t.Helper()
		changes, _ := ks.changes()
		e.apply(changes)
		return e.commit(func() uint32 { return 1 })
	}
	if commit() == nil {
		t.Fatal("no table from the initial list")
	}
	waitFor := func(after int64) {
		t.Helper()
		poll.Until(t, 5*time.Second, func() error {
			if notified.Load() == after {
				return fmt.Errorf("no notification")
			}
			return nil
		})
	}
	before := notified.Load()
	update(func(se *networkingv1.ServiceEntry) {
		se.Annotations = map[string]string{"touched": "yes"}
		se.Spec.Endpoints = append(se.Spec.Endpoints, &networkingapi.WorkloadEntry{Address: "127.0.0.13"})
	})
	waitFor(before)
	if tb := commit(); tb != nil {
		t.Error("an update that changes nothing the table reads published a table")
	}
	if rec := e.entries[entryID{key: "foo/a"}]; rec == nil || rec.e != ks.stores[0].get("foo/a") {
		t.Error("the engine holds on to the object before the update")
	}
	before = notified.Load()
	update(func(se *networkingv1.ServiceEntry) { se.Spec.Addresses = []string{"240.0.0.2"} })
	waitFor(before)
	if tb := commit(); tb == nil || tb.node("a.bar.global.").host.addrs[0].String() != "240.0.0.2" {
		t.Error("a change was not published")
	}
}

// A reload while the old instance has not synced yet: the new one inherits nothing, and gets
// the old one's first table if it is published before the old one shuts down.
func TestReloadBeforeTheFirstSync(t *testing.T) {
	lineage := t.Name()
	oldSrc := gated(se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.1"))
	old := startInstance(t, lineage, oldSrc)
	reloaded := startInstance(t, lineage, gated())
	oldSrc.sync()
	poll.Until(t, 2*time.Second, wantAnswer(t, old, "a.bar.global.", "240.0.0.1"))
	old.shutdown()
	if got := answers(t, reloaded, "a.bar.global."); got != "240.0.0.1" {
		t.Errorf("reloaded before the first sync: %s, want the old instance's table", got)
	}
}

// caddy calls the old instance's OnRestartFailed also when the new instance runs and only the
// old one's shutdown failed: the stopped instance must not come back into its lineage.
func TestResumeAfterShutdownChangesNothing(t *testing.T) {
	lineage := t.Name()
	old := startInstance(t, lineage, entriesSource(se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.1")))
	poll.Until(t, 2*time.Second, wantAnswer(t, old, "a.bar.global.", "240.0.0.1"))
	reloaded := startInstance(t, lineage, entriesSource(se("foo", "a", 0, hosts("a.bar.global"), "240.0.0.2")))
	old.shutdown()
	old.resume()
	lineages.Lock()
	live := lineages.live[lineage]
	lineages.Unlock()
	if live != reloaded {
		t.Error("a stopped instance took its lineage back")
	}
	// A start that failed is undone by resume: the old instance is the lineage's again.
	other := startInstance(t, lineage+"/b", entriesSource())
	failed := startInstance(t, lineage+"/b", entriesSource())
	other.resume()
	lineages.Lock()
	live = lineages.live[lineage+"/b"]
	lineages.Unlock()
	if live != other || other.successor != nil {
		t.Error("after a failed reload the old instance is not its lineage's again")
	}
	_ = failed
}

func TestLineageKeysTellBlocksApart(t *testing.T) {
	keys := []string{"global.:53"}
	a := lineageKey(0, keys, []string{"10.0.0.1"}, "", []string{"global."})
	for _, other := range []string{
		lineageKey(1, keys, []string{"10.0.0.1"}, "", []string{"global."}),
		lineageKey(0, keys, []string{"10.0.0.2"}, "", []string{"global."}),
		lineageKey(0, keys, []string{"10.0.0.1"}, "internal", []string{"global."}),
		lineageKey(0, keys, []string{"10.0.0.1"}, "", []string{"global.", "in-addr.arpa."}),
	} {
		if other == a {
			t.Errorf("two server blocks share the lineage %q", a)
		}
	}
}
