package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// knot is a Knot DNS server (Debian's knot package) running as a secondary.
type knot struct {
	addr string
	out  *syncBuffer
}

// startKnot runs knotd in the foreground on 127.0.0.1 port p as a secondary of zones from the
// primary at primary, which may NOTIFY it and which it allows to transfer the zones back (so
// that a test can compare). It keeps nothing on disk beyond its journal.
func startKnot(t *testing.T, p int, primary string, zones ...string) *knot {
	t.Helper()
	bin := sbinBinary(t, "knotd")
	dir := t.TempDir()
	host, pport, err := net.SplitHostPort(primary)
	if err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
    rundir: "%[1]s"
    listen: 127.0.0.1@%[2]d
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "%[1]s/db"
control:
    listen: "%[1]s/knot.sock"
remote:
  - id: primary
    address: %[3]s@%[4]s
acl:
  - id: primary
    address: %[3]s
    action: [notify, transfer]
template:
  - id: default
    storage: "%[1]s/zones"
    zonefile-load: none
    zonefile-sync: -1
    journal-content: changes
zone:
`, dir, p, host, pport)
	for _, z := range zones {
		fmt.Fprintf(&conf, "  - domain: %s\n    master: primary\n    acl: primary\n", z)
	}
	for _, sub := range []string{"db", "zones"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil { // knotd does not create them
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &knot{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), out: &syncBuffer{}}
	proc, err := startProcess("knotd", k.out, dir, bin, "-c", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.stop(5 * time.Second)
		if t.Failed() {
			t.Logf("knotd (%s):\n%s\n%s", path, conf.String(), k.out.String())
		}
	})
	err = poll(context.Background(), 10*time.Second, proc, func(context.Context) error {
		conn, err := net.DialTimeout("tcp", k.addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("knotd does not listen on %s: %v\n%s", k.addr, err, k.out.String())
	}
	return k
}

// transferCorefile serves the ServiceEntries of ns in global and the reverse zone of the seeds'
// 127.255.0.0/16 VIPs, and transfers both to (and NOTIFYs) the secondary on secondaryPort.
func transferCorefile(ns string, secondaryPort int) string {
	return testCorefile("global:{{.Port}} 255.127.in-addr.arpa:{{.Port}}", "", []string{"kubeconfig {{.Kubeconfig}}", "namespaces " + ns},
		fmt.Sprintf("transfer {\n        to 127.0.0.1:%d\n    }", secondaryPort))
}

// axfr is a zone transferred from addr with miekg/dns, as sorted record texts without the SOAs
// (whose serials differ between a primary and a secondary only in time), and its serial.
func axfr(t *testing.T, addr, zone string) ([]string, uint32, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetAxfr(zone)
	envs, err := new(dns.Transfer).In(m, addr)
	if err != nil {
		return nil, 0, err
	}
	var out []string
	var serial uint32
	for env := range envs {
		if env.Error != nil {
			return nil, 0, env.Error
		}
		for _, rr := range env.RR {
			if soa, ok := rr.(*dns.SOA); ok {
				serial = soa.Serial
				continue
			}
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return out, serial, nil
}

// agree waits until the secondary holds zone exactly as the primary serves it: same serial,
// same records.
func agree(t *testing.T, timeout time.Duration, primary, secondary, zone string) []string {
	t.Helper()
	var ours []string
	eventually(t, timeout, func() error {
		var serial, theirSerial uint32
		var theirs []string
		var err error
		if ours, serial, err = axfr(t, primary, zone); err != nil {
			return fmt.Errorf("AXFR of %s from us: %w", zone, err)
		}
		if theirs, theirSerial, err = axfr(t, secondary, zone); err != nil {
			return fmt.Errorf("AXFR of %s from the secondary: %w", zone, err)
		}
		if serial != theirSerial || !slices.Equal(ours, theirs) {
			return fmt.Errorf("%s: we serve serial %d, %d records; the secondary %d, %d records", zone, serial, len(ours), theirSerial, len(theirs))
		}
		return nil
	})
	return ours
}

// TestTransferToKnot: Knot DNS as a secondary of global and of a reverse zone, from
// coredns-istio watching the real API server. It answers the seeds' names; a change reaches it
// by NOTIFY and IXFR (its log says incremental, not AXFR-style) within 2 s; after 100 more
// changes it agrees with us record for record; dig and kdig see what the RFCs say.
func TestTransferToKnot(t *testing.T) {
	const ns = "xfr"
	createNamespace(t, ns)
	seeds := map[string][]string{
		"httpbin-bar":      {"httpbin.bar.global", "127.255.0.2"},
		"helloworld":       {"helloworld.hello.global", "127.255.0.8"},
		"reviews-bookinfo": {"reviews.bookinfo.global", "240.0.0.3"},
		"ratings-bookinfo": {"ratings.bookinfo.global", "240.0.0.4", "fd00:255::4"},
	}
	for name, v := range seeds {
		applyServiceEntry(t, serviceEntryV1(ns, name, v[:1], v[1:]...))
	}
	secondaryPort := port(t)
	c := startCoreDNS(t, transferCorefile(ns, secondaryPort))
	c.waitReady(t, 20*time.Second)
	k := startKnot(t, secondaryPort, c.Addr, "global.", "255.127.in-addr.arpa.")

	// The secondary answers the seeds' names, as we do, and the reverse zone.
	agree(t, 10*time.Second, c.Addr, k.addr, "global.")
	agree(t, 10*time.Second, c.Addr, k.addr, "255.127.in-addr.arpa.")
	for _, v := range seeds {
		if got, want := aValues(t, &coreDNS{Addr: k.addr}, v[0]), strings.Join(v[1:], ","); got != want {
			t.Errorf("the secondary answers %s with %s, want %s", v[0], got, want)
		}
	}
	if got := strings.TrimSpace(dig(t, k.addr, "-x", "127.255.0.2", "+short")); got != "httpbin.bar.global." {
		t.Errorf("the secondary's PTR for 127.255.0.2: %q", got)
	}

	// One change: NOTIFY, then an incremental transfer, within 2 s.
	logBefore := len(k.out.String())
	start := time.Now()
	applyServiceEntry(t, serviceEntryV1(ns, "httpbin-bar", []string{"httpbin.bar.global"}, "127.255.0.22"))
	eventually(t, 2*time.Second, func() error {
		if got := aValues(t, &coreDNS{Addr: k.addr}, "httpbin.bar.global"); got != "127.255.0.22" {
			return fmt.Errorf("the secondary answers %s", got)
		}
		return nil
	})
	t.Logf("a change reached the secondary in %v", time.Since(start).Round(time.Millisecond))
	since := k.out.String()[logBefore:]
	if !strings.Contains(since, "IXFR, incoming") || strings.Contains(since, "AXFR-style") || strings.Contains(since, "fallback to AXFR") {
		t.Errorf("the secondary's log since the change shows no plain incremental transfer:\n%s", since)
	}

	// 100 more changes: creates, updates, deletes. The secondary ends up with exactly our zone.
	for i := range 100 {
		name := fmt.Sprintf("churn-%d", i%40)
		switch {
		case i >= 80 && i%2 == 0:
			deleteServiceEntry(t, ns, name)
		default:
			applyServiceEntry(t, serviceEntryV1(ns, name, []string{name + ".churn.global"}, fmt.Sprintf("127.255.1.%d", i+1)))
		}
	}
	records := agree(t, 10*time.Second, c.Addr, k.addr, "global.")
	agree(t, 10*time.Second, c.Addr, k.addr, "255.127.in-addr.arpa.")
	t.Logf("after 100 changes the secondary agrees on %d records", len(records))
	all := k.out.String()
	axfrs, ixfrs := 0, 0
	for _, l := range strings.Split(all, "\n") {
		switch {
		case strings.Contains(l, "AXFR, incoming") && strings.Contains(l, "started"):
			axfrs++ // the bootstrap of each zone, and nothing after it
		case strings.Contains(l, "IXFR, incoming") && strings.Contains(l, "finished"):
			ixfrs++
		}
	}
	if axfrs != 2 || ixfrs < 2 || strings.Contains(all[logBefore:], "AXFR-style") || strings.Contains(all, "fallback to AXFR") {
		t.Errorf("%d whole-zone transfers (want the 2 bootstraps), %d incremental ones:\n%s", axfrs, ixfrs, all)
	}
	t.Logf("the secondary made %d incremental transfers after its 2 bootstraps", ixfrs)

	// dig AXFR: the whole zone, SOA first and last.
	out := dig(t, c.Addr, "AXFR", "global.")
	lines := nonComments(out)
	if len(lines) < 4 || !strings.Contains(lines[0], "\tSOA\t") || !strings.Contains(lines[len(lines)-1], "\tSOA\t") ||
		!strings.Contains(out, "churn-1.churn.global.") || strings.Contains(out, "Transfer failed") {
		t.Errorf("dig AXFR global.:\n%s", out)
	}
	// kdig IXFR=SERIAL from a serial before the last change: the difference (RFC 1995), which
	// kdig prints as the SOAs around deletions and additions.
	serial := soaSerialAt(t, c.Addr)
	applyServiceEntry(t, serviceEntryV1(ns, "helloworld", []string{"helloworld.hello.global"}, "127.255.0.88"))
	eventually(t, 2*time.Second, func() error {
		if s := soaSerialAt(t, c.Addr); s == serial {
			return fmt.Errorf("serial still %d", s)
		}
		return nil
	})
	kd := kdig(t, c.Addr, "IXFR="+strconv.FormatUint(uint64(serial), 10), "global.")
	ixfr := nonComments(kd)
	if len(ixfr) != 6 || !strings.Contains(ixfr[1], fmt.Sprintf(" %d ", serial)) ||
		!strings.Contains(ixfr[2], "helloworld.hello.global.") || !strings.Contains(ixfr[2], "127.255.0.8") ||
		!strings.Contains(ixfr[4], "127.255.0.88") {
		t.Errorf("kdig IXFR=%d global.: want SOA, SOA %d, the old A, SOA, the new A, SOA:\n%s", serial, serial, kd)
	}
	if kd := kdig(t, c.Addr, "+notcp", "IXFR="+strconv.FormatUint(uint64(serial), 10), "global."); !strings.Contains(kd, "REFUSED") {
		t.Errorf("IXFR over UDP: want REFUSED (the transfer plugin's rule):\n%s", kd)
	}
}

func soaSerialAt(t *testing.T, addr string) uint32 {
	t.Helper()
	m := exchange(t, addr, "global.", dns.TypeSOA, false)
	if len(m.Answer) != 1 {
		t.Fatalf("SOA of global.: %v", m)
	}
	return m.Answer[0].(*dns.SOA).Serial
}

func kdig(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("kdig", append([]string{"@" + host, "-p", p, "+time=2", "+retry=0"}, args...)...).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "REFUSED") {
		t.Fatalf("kdig %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nonComments are the record lines of dig's or kdig's output.
func nonComments(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, l)
		}
	}
	return lines
}
