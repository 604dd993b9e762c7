package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// corefileFor serves the global zone from the test API server, for ServiceEntries in the
// given namespaces only: tests share the API server, not their ServiceEntries.
func corefileFor(namespaces ...string) string {
	return `global:{{.Port}} {
    bind 127.0.0.1
    errors
    ready 127.0.0.1:{{.ReadyPort}}
    health 127.0.0.1:{{.HealthPort}}
    prometheus 127.0.0.1:{{.MetricsPort}}
    istioglobal {
        kubeconfig {{.Kubeconfig}}
        namespaces ` + strings.Join(namespaces, " ") + `
        ttl 30
    }
}
`
}

func startIstioGlobal(t *testing.T, namespaces ...string) *coreDNS {
	t.Helper()
	for _, ns := range namespaces {
		createNamespace(t, ns)
	}
	c := startCoreDNS(t, corefileFor(namespaces...))
	c.waitReady(t, 20*time.Second)
	return c
}

// serviceEntryV1 is a ServiceEntry as the multicluster guides write them, through the v1 API.
func serviceEntryV1(ns, name string, hosts []string, addrs ...string) *networkingv1.ServiceEntry {
	return &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       *guideSpec(hosts, addrs),
	}
}

func guideSpec(hosts, addrs []string) *networking.ServiceEntry {
	return &networking.ServiceEntry{
		Hosts:      hosts,
		Location:   networking.ServiceEntry_MESH_INTERNAL,
		Ports:      []*networking.ServicePort{{Name: "http1", Number: 8000, Protocol: "http"}},
		Resolution: networking.ServiceEntry_DNS,
		Addresses:  addrs,
		Endpoints:  []*networking.WorkloadEntry{{Address: "127.0.0.12", Ports: map[string]uint32{"http1": 15443}}},
	}
}

// aValues returns the A and AAAA values of name, or "NXDOMAIN"/"SERVFAIL"/"NODATA".
func aValues(t testing.TB, c *coreDNS, name string) string {
	t.Helper()
	var vals []string
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := exchangeMsg(c.Addr, new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype), false)
		if err != nil {
			return err.Error()
		}
		if m.Rcode != dns.RcodeSuccess {
			return dns.RcodeToString[m.Rcode]
		}
		for _, rr := range m.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				vals = append(vals, rr.A.String())
			case *dns.AAAA:
				vals = append(vals, rr.AAAA.String())
			}
		}
	}
	if len(vals) == 0 {
		return "NODATA"
	}
	return strings.Join(vals, ",")
}

func answersWithin(t testing.TB, c *coreDNS, timeout time.Duration, name, want string) {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, func() error {
		if got := aValues(t, c, name); got != want {
			return fmt.Errorf("%s: %s, want %s", name, got, want)
		}
		return nil
	})
	t.Logf("%s answered %s after %v", name, want, time.Since(start).Round(time.Millisecond))
}

func TestSeedServiceEntries(t *testing.T) {
	createNamespace(t, "foo")
	createNamespace(t, "hello")
	// The seeds' objects, written through v1alpha3 as the guides do.
	applyServiceEntryV1alpha3(t, &networkingv1alpha3.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Namespace: "foo", Name: "httpbin-bar"},
		Spec:       *guideSpec([]string{"httpbin.bar.global"}, []string{"127.255.0.2"}),
	})
	applyServiceEntryV1alpha3(t, &networkingv1alpha3.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Namespace: "hello", Name: "helloworld"},
		Spec:       *guideSpec([]string{"helloworld.hello.global"}, []string{"127.255.0.8"}),
	})
	applyServiceEntry(t, serviceEntryV1("foo", "ratings", []string{"ratings.bookinfo.global"}, "240.0.0.4", "fd00:255::4"))
	var many []string
	for i := range 100 {
		many = append(many, fmt.Sprintf("240.0.1.%d", i+1))
	}
	applyServiceEntry(t, serviceEntryV1("foo", "big", []string{"big.bar.global"}, many...))
	applyServiceEntry(t, serviceEntryV1("foo", "wild", []string{"*.wild.global"}, "240.0.0.10"))
	private := serviceEntryV1("foo", "private", []string{"private.bar.global"}, "240.0.0.11")
	private.Spec.ExportTo = []string{"~"} // exported to no namespace: never served
	applyServiceEntry(t, private)

	c := startIstioGlobal(t, "foo", "hello")
	soa := regexp.MustCompile(`^global\.\s+30\s+IN\s+SOA\s+ns\.dns\.global\. hostmaster\.global\. \d+ 7200 1800 86400 30$`)

	for _, tcp := range []bool{false, true} {
		for _, tc := range []struct {
			name   string
			qtype  uint16
			rcode  int
			answer []string // RR strings
			soa    bool
		}{
			{"httpbin.bar.global.", dns.TypeA, dns.RcodeSuccess, []string{"httpbin.bar.global.\t30\tIN\tA\t127.255.0.2"}, false},
			{"helloworld.hello.global.", dns.TypeA, dns.RcodeSuccess, []string{"helloworld.hello.global.\t30\tIN\tA\t127.255.0.8"}, false},
			{"ratings.bookinfo.global.", dns.TypeAAAA, dns.RcodeSuccess, []string{"ratings.bookinfo.global.\t30\tIN\tAAAA\tfd00:255::4"}, false},
			{"HttpBin.Bar.GLOBAL.", dns.TypeA, dns.RcodeSuccess, []string{"HttpBin.Bar.GLOBAL.\t30\tIN\tA\t127.255.0.2"}, false},
			{"x.y.wild.global.", dns.TypeA, dns.RcodeSuccess, []string{"x.y.wild.global.\t30\tIN\tA\t240.0.0.10"}, false},
			{"httpbin.bar.global.", dns.TypeAAAA, dns.RcodeSuccess, nil, true},
			{"bar.global.", dns.TypeA, dns.RcodeSuccess, nil, true},
			{"nosuch.bar.global.", dns.TypeA, dns.RcodeNameError, nil, true},
			{"private.bar.global.", dns.TypeA, dns.RcodeNameError, nil, true},
			{"global.", dns.TypeNS, dns.RcodeSuccess, []string{"global.\t30\tIN\tNS\tns.dns.global."}, false},
		} {
			m := exchange(t, c.Addr, tc.name, tc.qtype, tcp)
			var got []string
			for _, rr := range m.Answer {
				got = append(got, rr.String())
			}
			where := fmt.Sprintf("%s %s (tcp=%v)", tc.name, dns.TypeToString[tc.qtype], tcp)
			if m.Rcode != tc.rcode || !slices.Equal(got, tc.answer) || !m.Authoritative {
				t.Errorf("%s: %s aa=%v %v, want %s %v", where, dns.RcodeToString[m.Rcode], m.Authoritative, got, dns.RcodeToString[tc.rcode], tc.answer)
			}
			if hasSOA := len(m.Ns) == 1 && soa.MatchString(m.Ns[0].String()); hasSOA != tc.soa {
				t.Errorf("%s: authority %v, want the zone SOA: %v", where, m.Ns, tc.soa)
			}
		}
	}

	// 100 addresses do not fit 512 bytes: truncated over UDP, whole over TCP and with EDNS0.
	if m := exchangeEDNS(t, c.Addr, "big.bar.global.", dns.TypeA, false, 0); !m.Truncated {
		t.Errorf("UDP without EDNS0: TC not set, %d answers", len(m.Answer))
	}
	if m := exchange(t, c.Addr, "big.bar.global.", dns.TypeA, true); m.Truncated || len(m.Answer) != 100 {
		t.Errorf("TCP: TC=%v with %d answers, want all 100", m.Truncated, len(m.Answer))
	}
	if m := exchangeEDNS(t, c.Addr, "big.bar.global.", dns.TypeA, false, 4096); m.Truncated || len(m.Answer) != 100 {
		t.Errorf("UDP, EDNS0 4096: TC=%v with %d answers, want all 100", m.Truncated, len(m.Answer))
	}

	// The real dig, as people debug it; without EDNS it retries the truncated answer over TCP.
	if got := strings.TrimSpace(dig(t, c.Addr, "+short", "httpbin.bar.global")); got != "127.255.0.2" {
		t.Errorf("dig +short httpbin.bar.global: %q", got)
	}
	if got := strings.TrimSpace(dig(t, c.Addr, "+short", "helloworld.hello.global")); got != "127.255.0.8" {
		t.Errorf("dig +short helloworld.hello.global: %q", got)
	}
	out := dig(t, c.Addr, "+noedns", "big.bar.global")
	if !strings.Contains(out, "Truncated, retrying in TCP mode") || strings.Count(out, "\tIN\tA\t240.0.1.") != 100 {
		t.Errorf("dig +noedns big.bar.global: want a TCP retry and 100 answers:\n%s", out)
	}
	out = dig(t, c.Addr, "nosuch.bar.global")
	if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "flags: qr aa") || !strings.Contains(out, "IN\tSOA\tns.dns.global.") {
		t.Errorf("dig nosuch.bar.global: want NXDOMAIN, aa and the SOA:\n%s", out)
	}

	metrics := c.metrics(t)
	for _, want := range []string{"coredns_istioglobal_entries 5", "coredns_istioglobal_names 5",
		`coredns_istioglobal_skipped{kind="entry",reason="not_exported"} 1`} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(metrics, "coredns_istioglobal_"))
		}
	}
}

// TestChangesAreVisibleWithinASecond creates, updates and deletes ServiceEntries, in v1 and
// v1alpha3, and through the status subresource, while coredns-istio serves.
func TestChangesAreVisibleWithinASecond(t *testing.T) {
	c := startIstioGlobal(t, "changes")
	if got := aValues(t, c, "svc.changes.global"); got != "NXDOMAIN" {
		t.Fatalf("before: %s", got)
	}

	applyServiceEntry(t, serviceEntryV1("changes", "svc", []string{"svc.changes.global"}, "240.0.2.1"))
	answersWithin(t, c, time.Second, "svc.changes.global", "240.0.2.1")

	applyServiceEntry(t, serviceEntryV1("changes", "svc", []string{"svc.changes.global"}, "240.0.2.2", "fd00::2"))
	answersWithin(t, c, time.Second, "svc.changes.global", "240.0.2.2,fd00::2")

	applyServiceEntryV1alpha3(t, &networkingv1alpha3.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Namespace: "changes", Name: "old-api"},
		Spec:       *guideSpec([]string{"old.changes.global"}, []string{"240.0.2.3"}),
	})
	answersWithin(t, c, time.Second, "old.changes.global", "240.0.2.3")

	// No spec address: our VIP (autoallocate is on by default) until Istio's allocator writes
	// status.addresses, per host, which then win.
	applyServiceEntry(t, serviceEntryV1("changes", "auto", []string{"auto.changes.global", "auto2.changes.global"}))
	eventually(t, time.Second, func() error {
		if got := aValues(t, c, "auto.changes.global"); !strings.HasPrefix(got, "240.") {
			return fmt.Errorf("auto.changes.global: %s, want an allocated VIP", got)
		}
		return nil
	})
	setServiceEntryAddresses(t, "changes", "auto",
		&networking.ServiceEntryAddress{Host: "auto.changes.global", Value: "240.240.0.1"},
		&networking.ServiceEntryAddress{Host: "auto.changes.global", Value: "2001:2::1"},
		&networking.ServiceEntryAddress{Host: "auto2.changes.global", Value: "240.240.0.2"})
	answersWithin(t, c, time.Second, "auto.changes.global", "240.240.0.1,2001:2::1")
	answersWithin(t, c, time.Second, "auto2.changes.global", "240.240.0.2")

	deleteServiceEntry(t, "changes", "svc")
	answersWithin(t, c, time.Second, "svc.changes.global", "NXDOMAIN")
	if got := aValues(t, c, "old.changes.global"); got != "240.0.2.3" {
		t.Errorf("an unrelated entry changed: %s", got)
	}
}

// TestBadServiceEntriesAreSkipped: the CRD accepts garbage addresses; they are skipped,
// counted and logged once, and everything else keeps serving.
func TestBadServiceEntriesAreSkipped(t *testing.T) {
	createNamespace(t, "bad")
	applyServiceEntry(t, serviceEntryV1("bad", "garbage", []string{"garbage.bad.global"}, "999.1.1.1", "hello", "240.0.3.1"))
	applyServiceEntry(t, serviceEntryV1("bad", "good", []string{"good.bad.global"}, "240.0.3.2"))
	// An egress entry of another zone is not ours to judge, whatever it holds: not logged, not
	// counted as skipped, only counted apart.
	egress := serviceEntryV1("bad", "egress", []string{"api.example.com"}, "10.0.0.0/8", "hello")
	egress.Spec.Resolution, egress.Spec.Endpoints = networking.ServiceEntry_NONE, nil
	applyServiceEntry(t, egress)
	c := startIstioGlobal(t, "bad")
	if got := aValues(t, c, "garbage.bad.global"); got != "240.0.3.1" {
		t.Errorf("garbage.bad.global: %s, want its one usable address", got)
	}
	if got := aValues(t, c, "good.bad.global"); got != "240.0.3.2" {
		t.Errorf("good.bad.global: %s", got)
	}
	// More rebuilds: the problems must not be logged again.
	for i := range 3 {
		applyServiceEntry(t, serviceEntryV1("bad", "good", []string{"good.bad.global"}, fmt.Sprintf("240.0.3.%d", 10+i)))
		answersWithin(t, c, time.Second, "good.bad.global", fmt.Sprintf("240.0.3.%d", 10+i))
	}
	if n := strings.Count(c.output(), `ServiceEntry bad/garbage: address skipped (invalid): spec.addresses "999.1.1.1"`); n != 1 {
		t.Errorf("the bad address was logged %d times, want once:\n%s", n, c.output())
	}
	m := c.metrics(t)
	if !strings.Contains(m, `coredns_istioglobal_skipped{kind="address",reason="invalid"} 2`+"\n") ||
		strings.Contains(m, `reason="cidr"`) {
		t.Errorf("skipped metric:\n%s", grepLines(m, "coredns_istioglobal_skipped"))
	}
	if !strings.Contains(m, "coredns_istioglobal_other_zone_entries 1\n") {
		t.Errorf("other zones' entries:\n%s", grepLines(m, "coredns_istioglobal_other_zone_entries"))
	}
	if strings.Contains(c.output(), "bad/egress") {
		t.Errorf("the egress entry was logged:\n%s", c.output())
	}
}

// TestServesThroughAPIServerOutage: once synced, a frozen API server changes nothing for
// clients; when it comes back, changes flow again.
func TestServesThroughAPIServerOutage(t *testing.T) {
	c := startIstioGlobal(t, "outage")
	applyServiceEntry(t, serviceEntryV1("outage", "svc", []string{"svc.outage.global"}, "240.0.4.1"))
	answersWithin(t, c, time.Second, "svc.outage.global", "240.0.4.1")

	resume := pauseAPIServer(t)
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		if got := aValues(t, c, "svc.outage.global"); got != "240.0.4.1" {
			t.Fatalf("query %d with the API server stopped: %s", n, got)
		}
		if got := aValues(t, c, "nosuch.outage.global"); got != "NXDOMAIN" {
			t.Fatalf("query %d with the API server stopped: %s", n, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resume()

	applyServiceEntry(t, serviceEntryV1("outage", "svc", []string{"svc.outage.global"}, "240.0.4.2"))
	answersWithin(t, c, 10*time.Second, "svc.outage.global", "240.0.4.2")
}

// TestServfailBeforeSync: started while the API server cannot answer, coredns-istio answers
// SERVFAIL (never NXDOMAIN) and is not ready; once it has synced, it serves.
func TestServfailBeforeSync(t *testing.T) {
	createNamespace(t, "presync")
	applyServiceEntry(t, serviceEntryV1("presync", "svc", []string{"svc.presync.global"}, "240.0.5.1"))
	resume := pauseAPIServer(t)
	c := startCoreDNS(t, corefileFor("presync"))
	for range 5 {
		if got := aValues(t, c, "svc.presync.global"); got != "SERVFAIL" {
			t.Fatalf("before sync: %s, want SERVFAIL", got)
		}
		if got := aValues(t, c, "nosuch.presync.global"); got != "SERVFAIL" {
			t.Fatalf("before sync, an unknown name: %s, want SERVFAIL", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := httpOK(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/ready", c.ReadyPort)); err == nil {
		t.Error("ready before sync")
	}
	resume()
	c.waitReady(t, 30*time.Second)
	answersWithin(t, c, time.Second, "svc.presync.global", "240.0.5.1")
}

func TestPluginIsListed(t *testing.T) {
	out, err := exec.Command(corednsBinary, "-plugins").CombinedOutput()
	if err != nil || !slices.Contains(strings.Fields(string(out)), "istioglobal") {
		t.Errorf("coredns-istio -plugins (%v):\n%s", err, out)
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReloadLeavesNoWatch reloads the Corefile three times: each new instance serves, and the
// API server's own count of open ServiceEntry watches shows the old instances' informers gone.
func TestReloadLeavesNoWatch(t *testing.T) {
	createNamespace(t, "reload")
	applyServiceEntry(t, serviceEntryV1("reload", "svc", []string{"svc.reload.global"}, "240.0.6.1"))
	withTTL := func(ttl int) string {
		return strings.Replace(corefileFor("reload"), "    errors\n", "    errors\n    reload 2s 0s\n", 1) +
			"# ttl " + fmt.Sprint(ttl) + "\n"
	}
	c := startCoreDNS(t, withTTL(30))
	c.waitReady(t, 20*time.Second)
	if n := serviceEntryWatches(t); n != 1 {
		t.Fatalf("%d ServiceEntry watches open before any reload, want 1", n)
	}
	for _, ttl := range []uint32{10, 11, 12} {
		corefile := strings.Replace(withTTL(int(ttl)), "ttl 30", fmt.Sprintf("ttl %d", ttl), 1)
		corefile = strings.NewReplacer("{{.Port}}", fmt.Sprint(c.Port), "{{.ReadyPort}}", fmt.Sprint(c.ReadyPort),
			"{{.HealthPort}}", fmt.Sprint(c.HealthPort), "{{.MetricsPort}}", fmt.Sprint(c.MetricsPort),
			"{{.Kubeconfig}}", c.Kubeconfig).Replace(corefile)
		if err := os.WriteFile(filepath.Join(c.Dir, "Corefile"), []byte(corefile), 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, func() error {
			m, err := exchangeMsg(c.Addr, new(dns.Msg).SetQuestion("svc.reload.global.", dns.TypeA), false)
			if err != nil {
				return err
			}
			if len(m.Answer) != 1 || m.Answer[0].Header().Ttl != ttl {
				return fmt.Errorf("after reload: %v, want TTL %d", m.Answer, ttl)
			}
			return nil
		})
	}
	eventually(t, 10*time.Second, func() error {
		if n := serviceEntryWatches(t); n != 1 {
			return fmt.Errorf("%d ServiceEntry watches open after 3 reloads, want 1", n)
		}
		return nil
	})
}

// serviceEntryWatches is the API server's count of open watches on ServiceEntries.
func serviceEntryWatches(t *testing.T) int {
	t.Helper()
	raw, err := kubeClient.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(apiContext(t))
	if err != nil {
		t.Fatalf("API server metrics: %v", err)
	}
	n := 0
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "apiserver_longrunning_requests{") && strings.Contains(l, `resource="serviceentries"`) &&
			strings.Contains(l, `verb="WATCH"`) {
			var v float64
			fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v)
			n += int(v)
		}
	}
	return n
}
