package test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// outage is how long each fault lasts.
const outage = 60 * time.Second

// recoveryGoal is how soon after the path to the API server returns a change made meanwhile
// must be answered.
const recoveryGoal = 5 * time.Second

// sourceCorefile serves ns from the API server at host (through a faultProxy, typically) with
// the admin identity, or with kubeconfigPath when given.
func sourceCorefile(t *testing.T, ns, host, kubeconfigPath string) string {
	t.Helper()
	if kubeconfigPath == "" {
		cfg := rest.CopyConfig(restConfig)
		cfg.Host = host
		kubeconfigPath = kubeconfigFile(t, cfg)
	}
	return testCorefile("global:{{.Port}}", "", []string{"kubeconfig " + kubeconfigPath, "namespaces " + ns})
}

// secondAPIServer starts another kube-apiserver on the shared etcd (with extra flags) and
// returns its URL and an Istio client for it; it stops when the test ends.
func secondAPIServer(t *testing.T, extra ...string) (string, istioclient.Interface) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	p, err := cluster.startAPIServer(port, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(10 * time.Second) })
	host := "https://127.0.0.1:" + strconv.Itoa(port)
	if err := cluster.waitAPIServer(context.Background(), p, host); err != nil {
		t.Fatalf("second kube-apiserver: %v\n%s", err, cluster.logTails())
	}
	cfg := rest.CopyConfig(restConfig)
	cfg.Host = host
	client, err := istioclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return host, client
}

// answeredWithin waits until every name answers its wanted value ("NXDOMAIN" for a deleted
// one) and fails the test if that took longer than goal after since.
func answeredWithin(t *testing.T, c *coreDNS, since time.Time, goal time.Duration, want map[string]string) time.Duration {
	t.Helper()
	eventually(t, goal+30*time.Second, func() error {
		for name, v := range want {
			if got := aValues(t, c, name); got != v {
				return fmt.Errorf("%s: %s, want %s", name, got, v)
			}
		}
		return nil
	})
	took := time.Since(since)
	if took > goal {
		t.Errorf("changes answered %v after the path returned, want within %v", took.Round(time.Millisecond), goal)
	}
	return took
}

// outageChanges makes, through client, a create, an update and a delete in ns, and returns
// the answers they should give.
func outageChanges(t *testing.T, client istioclient.Interface, ns, tag string, updated, deleted string) map[string]string {
	t.Helper()
	ctx := apiContext(t)
	ses := client.NetworkingV1().ServiceEntries(ns)
	created := serviceEntryV1(ns, "new-"+tag, []string{"new-" + tag + "." + ns + ".global"}, "240.0.30.1")
	if _, err := ses.Create(ctx, created, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create during the outage: %v", err)
	}
	cur, err := ses.Get(ctx, updated, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Addresses = []string{"240.0.30.2"}
	if _, err := ses.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update during the outage: %v", err)
	}
	if err := ses.Delete(ctx, deleted, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete during the outage: %v", err)
	}
	return map[string]string{
		"new-" + tag + "." + ns + ".global": "240.0.30.1",
		updated + "." + ns + ".global":      "240.0.30.2",
		deleted + "." + ns + ".global":      "NXDOMAIN",
	}
}

// noFailures fails the test if any query of the load failed.
func noFailures(t *testing.T, when string, res *loadResult) {
	t.Helper()
	t.Logf("%s: %s", when, res)
	if res.servfail.Load()+res.wrong.Load()+res.failed.Load() > 0 {
		first := ""
		if p := res.firstWrong.Load(); p != nil {
			first = "; first wrong answer:\n" + *p
		}
		t.Errorf("%s: queries failed: %s%s", when, res, first)
	}
}

// resilienceEntries creates n entries NAME-i.NS.global → 240.0.ID.i and returns the answers.
func resilienceEntries(t *testing.T, ns, prefix string, id, n int) map[string]string {
	t.Helper()
	want := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		addr := fmt.Sprintf("240.0.%d.%d", id, i+1)
		applyServiceEntry(t, serviceEntryV1(ns, name, []string{name + "." + ns + ".global"}, addr))
		want[name+"."+ns+".global"] = addr
	}
	return want
}

// The API server SIGKILLed for a minute and started again, then the path to it black-holed
// for a minute (connections left open, nothing through, as in a network partition), under a
// steady query load; meanwhile a second API server on the same etcd takes a create, an update
// and a delete. No query fails, and every change is answered within recoveryGoal of the path
// returning.
func TestRecoversFromAPIServerOutages(t *testing.T) {
	const ns = "resilience"
	createNamespace(t, ns)
	createServiceEntries(t, []string{ns}, "steady", 20)
	resilienceEntries(t, ns, "changing", 21, 4)
	proxy := startFaultProxy(t, strings.TrimPrefix(cluster.host, "https://"))
	_, second := secondAPIServer(t)
	c := startCoreDNS(t, sourceCorefile(t, ns, "https://"+proxy.addr(), ""))
	c.waitReady(t, 20*time.Second)
	stopLoad := queryLoad(t, c.Addr, "steady", 20, 200)

	port, _ := strconv.Atoi(cluster.host[strings.LastIndex(cluster.host, ":")+1:])
	t.Cleanup(func() { // never leave the shared API server down
		if cluster.apiserver.exited() {
			if p, err := cluster.startAPIServer(port); err == nil {
				cluster.apiserver = p
				cluster.waitAPIServer(context.Background(), p, cluster.host)
			}
		}
	})
	faults := []struct {
		name       string
		begin, end func() time.Time // end returns when the path is back
	}{
		{"API server killed", func() time.Time {
			cluster.apiserver.signal(syscall.SIGKILL)
			<-cluster.apiserver.done
			return time.Now()
		}, func() time.Time {
			p, err := cluster.startAPIServer(port)
			if err != nil {
				t.Fatal(err)
			}
			cluster.apiserver = p
			if err := cluster.waitAPIServer(context.Background(), p, cluster.host); err != nil {
				t.Fatalf("restarted kube-apiserver: %v", err)
			}
			return time.Now()
		}},
		{"path black-holed", func() time.Time { proxy.pause(); return time.Now() },
			func() time.Time { proxy.resume(); return time.Now() }},
	}
	for i, f := range faults {
		began := f.begin()
		time.Sleep(5 * time.Second) // the watch has noticed, or is stuck
		want := outageChanges(t, second, ns, strconv.Itoa(i), fmt.Sprintf("changing-%d", 2*i), fmt.Sprintf("changing-%d", 2*i+1))
		time.Sleep(time.Until(began.Add(outage)))
		back := f.end()
		took := answeredWithin(t, c, back, recoveryGoal, want)
		t.Logf("%s for %v: the changes made meanwhile answered %v after the path returned (%s)",
			f.name, back.Sub(began).Round(time.Second), took.Round(time.Millisecond), back.Format("15:04:05.000"))
	}
	noFailures(t, "through both outages", stopLoad())
	t.Logf("relists %v, watch restarts %v, watch errors %v",
		metricValue(t, c, "coredns_istioglobal_relists_total"), metricValue(t, c, "coredns_istioglobal_watch_restarts_total"),
		grepLines(c.metrics(t), "coredns_istioglobal_watch_errors_total"))
}

// etcdCompact compacts etcd up to its current revision, through its JSON gateway: a watch
// resuming from any older resourceVersion then gets 410 Gone.
func etcdCompact(t *testing.T) int64 {
	t.Helper()
	post := func(path string, body any) map[string]any {
		b, _ := json.Marshal(body)
		resp, err := http.Post(cluster.etcdURL+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("etcd %s: %v %v %v", path, resp.Status, err, out)
		}
		return out
	}
	header := post("/v3/kv/range", map[string]any{"key": base64.StdEncoding.EncodeToString([]byte("/registry/"))})["header"].(map[string]any)
	rev, err := strconv.ParseInt(header["revision"].(string), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	post("/v3/kv/compaction", map[string]any{"revision": strconv.FormatInt(rev, 10), "physical": true})
	return rev
}

// A watch that expires (410 Gone: etcd compacted past its resourceVersion, on an API server
// without a watch cache) re-lists without a serving gap: no query fails, and the entries
// created and deleted meanwhile appear and disappear. The API server shuts down gracefully,
// ending the watch cleanly, so that the reflector watches again from its last resourceVersion
// (a broken watch would re-list at once, and never see the 410); connections to it are refused
// meanwhile, as from a stopped process, and only once it serves ServiceEntries again does the
// watch reach it, after the changes and the compaction.
func TestRelistAfterCompaction(t *testing.T) {
	const ns = "relist"
	createNamespace(t, ns)
	createServiceEntries(t, []string{ns}, "relisted", 10)
	resilienceEntries(t, ns, "changing", 23, 2)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	host := "https://127.0.0.1:" + strconv.Itoa(port)
	start := func() *process {
		p, err := cluster.startAPIServer(port, "--watch-cache=false")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.stop(10 * time.Second) })
		if err := cluster.waitAPIServer(context.Background(), p, host); err != nil {
			t.Fatalf("kube-apiserver without watch cache: %v", err)
		}
		cfg := rest.CopyConfig(restConfig)
		cfg.Host = host
		client, err := istioclient.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() error { // CRDs are served a moment after readyz
			_, err := client.NetworkingV1().ServiceEntries(ns).List(apiContext(t), metav1.ListOptions{Limit: 1})
			return err
		})
		return p
	}
	apiserver := start()
	proxy := startFaultProxy(t, strings.TrimPrefix(host, "https://"))
	c := startCoreDNS(t, sourceCorefile(t, ns, "https://"+proxy.addr(), ""))
	c.waitReady(t, 20*time.Second)
	stopLoad := queryLoad(t, c.Addr, "relisted", 10, 200)
	relistsBefore := metricValue(t, c, "coredns_istioglobal_relists_total")

	proxy.refuse()
	apiserver.stop(30 * time.Second)
	want := outageChanges(t, istioClient, ns, "relist", "changing-0", "changing-1")
	rev := etcdCompact(t)
	start()
	proxy.accept(t)
	back := time.Now()
	took := answeredWithin(t, c, back, recoveryGoal, want)
	t.Logf("etcd compacted at revision %d: changes answered %v after the API server was back", rev, took.Round(time.Millisecond))
	if n := metricValue(t, c, `coredns_istioglobal_watch_errors_total{reason="expired"}`); n < 1 {
		t.Errorf("no expired watch counted: %s", grepLines(c.metrics(t), "coredns_istioglobal_watch"))
	}
	if n := metricValue(t, c, "coredns_istioglobal_relists_total"); n <= relistsBefore {
		t.Errorf("relists_total %v, was %v: the expired watch was not re-listed", n, relistsBefore)
	}
	noFailures(t, "around the relist", stopLoad())
}

// RBAC taken away at runtime (403 on the next list and watch): the last table keeps serving,
// the failure is logged once and counted; given back, changes are followed again.
func TestRBACRevokedKeepsServing(t *testing.T) {
	const ns, user = "rbac-revoked", "rbac-revoked-reader"
	createNamespace(t, ns)
	createServiceEntries(t, []string{ns}, "revoked", 10)
	ctx := apiContext(t)
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "serviceentry-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"networking.istio.io"}, Resources: []string{"serviceentries"},
			Verbs: []string{"get", "list", "watch"}}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "serviceentry-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}
	if _, err := kubeClient.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bind := func() {
		if _, err := kubeClient.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	bind()
	proxy := startFaultProxy(t, strings.TrimPrefix(cluster.host, "https://"))
	cfg, err := cluster.userConfig(user)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host = "https://" + proxy.addr()
	c := startCoreDNS(t, sourceCorefile(t, ns, "", kubeconfigFile(t, cfg)))
	c.waitReady(t, 20*time.Second)
	stopLoad := queryLoad(t, c.Addr, "revoked", 10, 200)

	if err := kubeClient.RbacV1().RoleBindings(ns).Delete(ctx, binding.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The binding is gone; the next list and watch are made without it.
	eventually(t, 20*time.Second, func() error {
		proxy.reset()
		if v := metricValue(t, c, `coredns_istioglobal_watch_errors_total{reason="forbidden"}`); v < 3 {
			return fmt.Errorf("forbidden errors %v, want several retries", v)
		}
		return nil
	})
	if n := strings.Count(c.output(), "not allowed to"); n != 1 {
		t.Errorf("the forbidden list or watch logged %d times, want once:\n%s", n, c.output())
	}
	noFailures(t, "without RBAC", stopLoad())

	bind()
	applyServiceEntry(t, serviceEntryV1(ns, "after", []string{"after." + ns + ".global"}, "240.0.24.99"))
	answersWithin(t, c, 20*time.Second, "after."+ns+".global", "240.0.24.99")
	if !strings.Contains(c.output(), "succeeds again") {
		t.Errorf("recovery not logged:\n%s", c.output())
	}
}
