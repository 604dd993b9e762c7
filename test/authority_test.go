package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	istiometa "istio.io/api/meta/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// filesCorefile serves global (and in-addr.arpa) from the ServiceEntry files at path (a file or
// a directory), with the NS target at 127.0.0.1.
func filesCorefile(path string) string {
	return testCorefile("global:{{.Port}} in-addr.arpa:{{.Port}}", "global in-addr.arpa", []string{"files " + path, "nameserver 127.0.0.1", "txt on"})
}

func writeEntries(t *testing.T, dir, yaml string) {
	t.Helper()
	tmp := filepath.Join(dir, ".entries.yaml.tmp") // hidden: never read half written
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "entries.yaml")); err != nil {
		t.Fatal(err)
	}
}

func soaSerial(t *testing.T, c *coreDNS) uint32 {
	t.Helper()
	m := exchange(t, c.Addr, "global.", dns.TypeSOA, false)
	if len(m.Answer) != 1 {
		t.Fatalf("SOA: %v", m)
	}
	return m.Answer[0].(*dns.SOA).Serial
}

// serialAfter is RFC 1982's b > a.
func serialAfter(b, a uint32) bool { return a != b && int32(b-a) > 0 }

// TestSerialOrder: the SOA serial grows with every change, stays put when nothing changed, and
// a restarted server starts above it.
func TestSerialOrder(t *testing.T) {
	dir := t.TempDir()
	entry := func(addr string) string {
		return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: serial}
spec: {hosts: [svc.serial.global], addresses: [` + addr + `]}
`
	}
	writeEntries(t, dir, entry("240.0.8.1"))
	c := startCoreDNS(t, filesCorefile(dir))
	c.waitReady(t, 20*time.Second)
	first := soaSerial(t, c)

	writeEntries(t, dir, entry("240.0.8.2"))
	answersWithin(t, c, 5*time.Second, "svc.serial.global", "240.0.8.2")
	changed := soaSerial(t, c)
	if !serialAfter(changed, first) {
		t.Fatalf("serial %d after a change, %d before", changed, first)
	}

	// The same content written again: read, but nothing to publish.
	unchanged := metricValue(t, c, `coredns_istioglobal_builds_total{result="unchanged"}`)
	writeEntries(t, dir, entry("240.0.8.2"))
	eventually(t, 5*time.Second, func() error {
		if metricValue(t, c, `coredns_istioglobal_builds_total{result="unchanged"}`) == unchanged {
			return fmt.Errorf("the rewritten file was not read")
		}
		return nil
	})
	if s := soaSerial(t, c); s != changed {
		t.Errorf("serial %d after rewriting the same entries, want it to stay %d", s, changed)
	}

	c.stop()
	restarted := startCoreDNS(t, filesCorefile(dir))
	restarted.waitReady(t, 20*time.Second)
	if s := soaSerial(t, restarted); !serialAfter(s, changed) {
		t.Errorf("serial %d after a restart, %d before it: went backwards", s, changed)
	}
}

// TestSharedAddressAnswersPack: 10k ServiceEntries on one address. Every answer about it comes
// whole over TCP, bounded, and says how much it left out.
func TestSharedAddressAnswersPack(t *testing.T) {
	const n = 10_000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s%d, namespace: shared}\nspec: {hosts: [s%d.shared.global], addresses: [240.0.9.1]}\n", i, i)
	}
	dir := t.TempDir()
	writeEntries(t, dir, b.String())
	c := startCoreDNS(t, filesCorefile(dir))
	c.waitReady(t, 60*time.Second)

	for _, q := range []struct {
		name  string
		qtype uint16
		check func(*dns.Msg) error
	}{
		{"s0.shared.global", dns.TypeA, func(m *dns.Msg) error {
			if len(m.Answer) != 1 {
				return fmt.Errorf("%d A records", len(m.Answer))
			}
			return nil
		}},
		{"s0.shared.global", dns.TypeTXT, func(m *dns.Msg) error {
			want := fmt.Sprintf(`"conflict=+%d more"`, n-1-32)
			if len(m.Answer) != 1 || !strings.Contains(m.Answer[0].String(), want) {
				return fmt.Errorf("TXT without %s: %v", want, m.Answer)
			}
			return nil
		}},
		{"1.9.0.240.in-addr.arpa", dns.TypePTR, func(m *dns.Msg) error {
			if len(m.Answer) != 32 {
				return fmt.Errorf("%d PTR records, want the 32 oldest holders", len(m.Answer))
			}
			return nil
		}},
	} {
		m := exchange(t, c.Addr, q.name, q.qtype, true)
		if m.Truncated || m.Rcode != dns.RcodeSuccess {
			t.Errorf("%s %s over TCP: truncated %v, %s", q.name, dns.TypeToString[q.qtype], m.Truncated, dns.RcodeToString[m.Rcode])
		}
		if err := q.check(m); err != nil {
			t.Errorf("%s %s over TCP: %v", q.name, dns.TypeToString[q.qtype], err)
		}
	}
	metrics := c.metrics(t)
	// One address: its PTR holders and the conflicts its holders' TXT lists are capped, each
	// counted once (not once per holder).
	for _, want := range []string{`coredns_istioglobal_capped{record="ptr"} 1` + "\n", `coredns_istioglobal_capped{record="txt"} 1` + "\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "coredns_istioglobal_capped"))
		}
	}
	// dig takes the TXT whole over TCP.
	if out := dig(t, c.Addr, "+tcp", "TXT", "s1.shared.global"); !strings.Contains(out, "conflict=240.0.9.1 also s0.shared.global") {
		t.Errorf("dig +tcp TXT:\n%s", out)
	}
}

// TestAuthorityRecords: the NS target resolves, NS answers carry its address, ANY answers the
// one RRset a name has, NOTIFY is not implemented and zone transfers are refused.
func TestAuthorityRecords(t *testing.T) {
	dir := t.TempDir()
	writeEntries(t, dir, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: auth}
spec: {hosts: [web.auth.global], addresses: [240.0.10.1]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: noaddr
  namespace: auth
  labels: {networking.istio.io/enable-autoallocate-ip: "false"}
spec: {hosts: [noaddr.auth.global]}
`)
	c := startCoreDNS(t, filesCorefile(dir))
	c.waitReady(t, 20*time.Second)

	ns := dig(t, c.Addr, "NS", "global")
	for _, want := range []string{"status: NOERROR", "flags: qr aa", "global.\t\t\t30\tIN\tNS\tns.dns.global.", "ns.dns.global.\t\t30\tIN\tA\t127.0.0.1"} {
		if !strings.Contains(ns, want) {
			t.Errorf("dig NS global lacks %q:\n%s", want, ns)
		}
	}
	if got := aValues(t, c, "ns.dns.global"); got != "127.0.0.1" {
		t.Errorf("the NS target: %s, want 127.0.0.1", got)
	}
	soa := exchange(t, c.Addr, "global.", dns.TypeSOA, false)
	if len(soa.Answer) != 1 || soa.Answer[0].(*dns.SOA).Ns != "ns.dns.global." {
		t.Errorf("SOA: %v", soa.Answer)
	}
	if anyTXT := dig(t, c.Addr, "ANY", "noaddr.auth.global"); !strings.Contains(anyTXT, `TXT	"serviceentry=auth/noaddr"`) {
		t.Errorf("ANY on a name with only TXT:\n%s", anyTXT)
	}
	if notify := dig(t, c.Addr, "+opcode=notify", "SOA", "global"); !strings.Contains(notify, "status: NOTIMP") {
		t.Errorf("NOTIFY:\n%s", notify)
	}
	for _, tcp := range []bool{false, true} {
		for _, q := range []*dns.Msg{new(dns.Msg).SetAxfr("global."), new(dns.Msg).SetIxfr("global.", 1, "ns.dns.global.", "hostmaster.global.")} {
			m, err := exchangeMsg(c.Addr, q, tcp)
			if err != nil || m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
				t.Errorf("%s (tcp %v): %v %v, want REFUSED", dns.TypeToString[q.Question[0].Qtype], tcp, m, err)
			}
		}
	}
	if axfr := dig(t, c.Addr, "AXFR", "global"); !strings.Contains(axfr, "Transfer failed") {
		t.Errorf("dig AXFR:\n%s", axfr)
	}
}

// TestStatusOnlyUpdatesPublishNothing: Istio writes conditions into a ServiceEntry's status;
// they change no answer, so the serial stays. A change that matters moves it.
func TestStatusOnlyUpdatesPublishNothing(t *testing.T) {
	c := startIstioGlobal(t, "statusonly")
	applyServiceEntry(t, serviceEntryV1("statusonly", "svc", []string{"svc.statusonly.global"}, "240.0.11.1"))
	answersWithin(t, c, 5*time.Second, "svc.statusonly.global", "240.0.11.1")
	before := soaSerial(t, c)

	ctx := apiContext(t)
	client := istioClient.NetworkingV1().ServiceEntries("statusonly")
	for i := range 3 {
		se, err := client.Get(ctx, "svc", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		se.Status.ObservedGeneration = int64(10 + i)
		se.Status.Conditions = []*istiometa.IstioCondition{{Type: "Reconciled", Status: "True", Message: fmt.Sprint(i)}}
		if _, err := client.UpdateStatus(ctx, se, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Then a change: the informer delivers events in order, so once it is answered the status
	// updates have been seen, and only the change may have been published.
	published := metricValue(t, c, `coredns_istioglobal_builds_total{result="published"}`)
	applyServiceEntry(t, serviceEntryV1("statusonly", "svc", []string{"svc.statusonly.global"}, "240.0.11.2"))
	answersWithin(t, c, 5*time.Second, "svc.statusonly.global", "240.0.11.2")
	if n := metricValue(t, c, `coredns_istioglobal_builds_total{result="published"}`) - published; n != 1 {
		t.Errorf("%v tables published for status-only updates and one change, want 1", n)
	}
	if s := soaSerial(t, c); !serialAfter(s, before) {
		t.Errorf("serial %d after a change, %d before", s, before)
	}
}

// metricValue is the value of one sample (name and labels, exactly as exposed) of c's metrics,
// 0 when absent.
func metricValue(t *testing.T, c *coreDNS, sample string) float64 {
	t.Helper()
	for _, line := range strings.Split(c.metrics(t), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	return 0
}
