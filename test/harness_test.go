package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/miekg/dns"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
)

// apiTimeout bounds every API call the helpers make, so a paused API server fails a test
// instead of hanging it.
const apiTimeout = 30 * time.Second

// coreDNS is a running coredns-istio binary. Its exported fields are the data of the Corefile
// template given to startCoreDNS.
type coreDNS struct {
	Addr        string // 127.0.0.1:Port, for DNS over UDP and TCP.
	Port        int
	ReadyPort   int // For `ready 127.0.0.1:{{.ReadyPort}}`.
	HealthPort  int // For `health 127.0.0.1:{{.HealthPort}}`.
	MetricsPort int // For `prometheus 127.0.0.1:{{.MetricsPort}}`.
	Kubeconfig  string
	Dir         string // Holds the Corefile; the process's working directory.

	proc *process
	out  syncBuffer
}

// startCoreDNS renders corefile as a text/template with the new coreDNS as data, starts the
// binary on it and waits until its DNS port accepts TCP connections. The process is killed
// when the test ends, and its output logged if the test failed.
func startCoreDNS(t testing.TB, corefile string) *coreDNS {
	t.Helper()
	return startCoreDNSUnder(t, corefile)
}

// startCoreDNSUnder is startCoreDNS with the binary run under a command prefix, such as
// `taskset -c 1 env GOMAXPROCS=1` for the shape of a pod limited to one CPU.
func startCoreDNSUnder(t testing.TB, corefile string, prefix ...string) *coreDNS {
	t.Helper()
	c := &coreDNS{Kubeconfig: kubeconfig, Dir: t.TempDir()}
	for _, p := range []*int{&c.Port, &c.ReadyPort, &c.HealthPort, &c.MetricsPort} {
		*p = port(t)
	}
	c.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port))

	tmpl, err := template.New("Corefile").Parse(corefile)
	if err != nil {
		t.Fatalf("Corefile template: %v", err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, c); err != nil {
		t.Fatalf("Corefile template: %v", err)
	}
	path := filepath.Join(c.Dir, "Corefile")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	argv := append(slices.Clone(prefix), corednsBinary, "-conf", path)
	c.proc, err = startProcess("coredns-istio", &c.out, c.Dir, argv[0], argv[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("coredns-istio output (Corefile %s):\n%s\n%s", path, b.String(), c.output())
		}
	})
	err = poll(context.Background(), 20*time.Second, c.proc, func(context.Context) error {
		conn, err := net.DialTimeout("tcp", c.Addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("coredns-istio does not listen on %s: %v", c.Addr, err)
	}
	return c
}

// waitReady waits until the ready plugin answers 200 on ReadyPort.
func (c *coreDNS) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/ready", c.ReadyPort)
	err := poll(context.Background(), timeout, c.proc, func(ctx context.Context) error { return httpOK(ctx, url) })
	if err != nil {
		t.Fatalf("coredns-istio is not ready: %v", err)
	}
}

// metrics returns the Prometheus exposition from MetricsPort.
func (c *coreDNS) metrics(t testing.TB) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", c.MetricsPort))
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %s %v", resp.Status, err)
	}
	return string(body)
}

// output returns what the process has written to stdout and stderr so far.
func (c *coreDNS) output() string { return c.out.String() }

// signal sends sig to the process (SIGUSR1 makes CoreDNS reload its Corefile).
func (c *coreDNS) signal(sig os.Signal) error { return c.proc.signal(sig) }

// stop terminates the process (SIGTERM, then SIGKILL after 5s); later calls do nothing.
func (c *coreDNS) stop() { c.proc.stop(5 * time.Second) }

// port returns a free 127.0.0.1 TCP and UDP port.
func port(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// exchange sends a plain query (RD set, no EDNS0) for name and qtype to addr over UDP, or TCP,
// and fails the test if no response arrives.
func exchange(t testing.TB, addr, name string, qtype uint16, tcp bool) *dns.Msg {
	t.Helper()
	return exchangeEDNS(t, addr, name, qtype, tcp, 0)
}

// exchangeEDNS is exchange with an EDNS0 OPT record advertising udpSize; 0 sends none.
func exchangeEDNS(t testing.TB, addr, name string, qtype uint16, tcp bool, udpSize uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype)
	if udpSize > 0 {
		m.SetEdns0(udpSize, false)
	}
	r, err := exchangeMsg(addr, m, tcp)
	if err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

// exchangeMsg sends m and returns the response, for callers that build their own queries or
// poll with eventually. Over UDP the client accepts what the query's EDNS0 advertises (512
// bytes without it), so truncation shows as TC, not as an error.
func exchangeMsg(addr string, m *dns.Msg, tcp bool) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if tcp {
		c.Net = "tcp"
	}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// dig runs the real dig against addr with +time=2 +tries=1 before args (later options win)
// and returns its stdout; a non-zero exit (no response, bad arguments) fails the test.
func dig(t testing.TB, addr string, args ...string) string {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dig", append([]string{"@" + host, "-p", p, "+time=2", "+tries=1"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// eventually calls f every 50ms until it returns nil, failing the test with f's last error
// once timeout has passed. f runs on the test's goroutine; it must return errors, not call
// t.Fatal, to be retried.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	err := poll(context.Background(), timeout, nil, func(context.Context) error { return f() })
	if err != nil {
		t.Fatal(err)
	}
}

// pauseAPIServer freezes the kube-apiserver with SIGSTOP: its connections stay open but
// nothing answers. resume (SIGCONT) runs at the latest when the test ends. Any API call, from
// the helpers here too, blocks until resume or its timeout. The API server is shared: tests
// that pause it must not run in parallel with others.
func pauseAPIServer(t testing.TB) (resume func()) {
	t.Helper()
	if err := cluster.apiserver.signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP kube-apiserver: %v", err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if err := cluster.apiserver.signal(syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT kube-apiserver: %v", err)
			}
		})
	}
	t.Cleanup(resume)
	return resume
}

func apiContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	t.Cleanup(cancel)
	return ctx
}

// createNamespace creates the namespace unless it exists. Namespaces are never deleted:
// without a namespace controller a deleted one stays Terminating and refuses new objects, so
// tests share them and clean up their own objects instead.
func createNamespace(t testing.TB, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	_, err := kubeClient.CoreV1().Namespaces().Create(apiContext(t), ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// objectClient is what apply needs of a typed client, e.g. NetworkingV1().ServiceEntries(ns).
type objectClient[T metav1.Object] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Get(context.Context, string, metav1.GetOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
}

// apply creates obj, or replaces the stored object of that name, and deletes it when the test
// ends. It returns the object as stored.
func apply[T metav1.Object](t testing.TB, c objectClient[T], obj T) T {
	t.Helper()
	ctx := apiContext(t)
	got, err := c.Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := c.Get(ctx, obj.GetName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			obj.SetResourceVersion(cur.GetResourceVersion())
			got, err = c.Update(ctx, obj, metav1.UpdateOptions{})
			return err
		})
	}
	if err != nil {
		t.Fatalf("applying %s/%s: %v", obj.GetNamespace(), obj.GetName(), err)
	}
	t.Cleanup(func() {
		err := c.Delete(apiContext(t), obj.GetName(), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %s/%s: %v", obj.GetNamespace(), obj.GetName(), err)
		}
	})
	return got
}

// applyServiceEntry applies se through networking.istio.io/v1.
func applyServiceEntry(t testing.TB, se *networkingv1.ServiceEntry) *networkingv1.ServiceEntry {
	t.Helper()
	return apply(t, istioClient.NetworkingV1().ServiceEntries(se.Namespace), se)
}

// applyServiceEntryV1alpha3 applies se through networking.istio.io/v1alpha3, as older Istio
// installations and tools still do.
func applyServiceEntryV1alpha3(t testing.TB, se *networkingv1alpha3.ServiceEntry) *networkingv1alpha3.ServiceEntry {
	t.Helper()
	return apply(t, istioClient.NetworkingV1alpha3().ServiceEntries(se.Namespace), se)
}

// deleteServiceEntry deletes a ServiceEntry now; a missing one is not an error.
func deleteServiceEntry(t testing.TB, namespace, name string) {
	t.Helper()
	err := istioClient.NetworkingV1().ServiceEntries(namespace).Delete(apiContext(t), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("deleting ServiceEntry %s/%s: %v", namespace, name, err)
	}
}

// setServiceEntryAddresses writes status.addresses through the status subresource, as Istio's
// IP autoallocator does, and returns the updated object.
func setServiceEntryAddresses(t testing.TB, namespace, name string, addrs ...*networking.ServiceEntryAddress) *networkingv1.ServiceEntry {
	t.Helper()
	ctx := apiContext(t)
	client := istioClient.NetworkingV1().ServiceEntries(namespace)
	var got *networkingv1.ServiceEntry
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		se, err := client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		se.Status.Addresses = addrs
		got, err = client.UpdateStatus(ctx, se, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("setting status.addresses of ServiceEntry %s/%s: %v", namespace, name, err)
	}
	return got
}

// userKubeconfig writes a kubeconfig that authenticates as user in groups (a client
// certificate) and returns its path. Grant it rights with RBAC objects.
func userKubeconfig(t testing.TB, user string, groups ...string) string {
	t.Helper()
	cfg, err := cluster.userConfig(user, groups...)
	if err != nil {
		t.Fatal(err)
	}
	return kubeconfigFile(t, cfg)
}

// serviceAccountKubeconfig creates the ServiceAccount namespace/name if needed, mints a token
// for it and returns the path of a kubeconfig using that token.
func serviceAccountKubeconfig(t testing.TB, namespace, name string) string {
	t.Helper()
	ctx := apiContext(t)
	sas := kubeClient.CoreV1().ServiceAccounts(namespace)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := sas.Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating ServiceAccount %s/%s: %v", namespace, name, err)
	}
	tr, err := sas.CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for ServiceAccount %s/%s: %v", namespace, name, err)
	}
	cfg := rest.AnonymousClientConfig(restConfig)
	cfg.BearerToken = tr.Status.Token
	return kubeconfigFile(t, cfg)
}

func kubeconfigFile(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := writeKubeconfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

// testCorefile is a server block for keys (global:{{.Port}} ...) on 127.0.0.1 with errors, ready
// and prometheus on the test's ports, an istioglobal block with args and options (one a line),
// and further plugins (each one line, or a block).
func testCorefile(keys, args string, options []string, plugins ...string) string {
	var b strings.Builder
	b.WriteString(keys + " {\n    bind 127.0.0.1\n    errors\n    ready 127.0.0.1:{{.ReadyPort}}\n    prometheus 127.0.0.1:{{.MetricsPort}}\n")
	b.WriteString(strings.TrimRight("    istioglobal "+args, " ") + " {\n")
	for _, o := range options {
		b.WriteString("        " + o + "\n")
	}
	b.WriteString("    }\n")
	for _, p := range plugins {
		b.WriteString("    " + p + "\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// dnsmasqBinary finds dnsmasq, which Debian's dnsmasq-base installs in /usr/sbin.
func dnsmasqBinary(t testing.TB) string { return sbinBinary(t, "dnsmasq") }

// sbinBinary finds a daemon from Debian's packages (test/tools/install-deps.sh), which live in
// /usr/sbin, often not on a non-root PATH. It skips the test when it is missing, or fails it
// under CI=true.
func sbinBinary(t testing.TB, name string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	if _, err := os.Stat("/usr/sbin/" + name); err == nil {
		return "/usr/sbin/" + name
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (test/tools/install-deps.sh)", name)
	}
	t.Skipf("%s is not installed (test/tools/install-deps.sh)", name)
	return ""
}

// startDnsmasq runs dnsmasq in the foreground on a free 127.0.0.1 port, with no upstream,
// hosts file or configuration file of its own, plus args (e.g. --server=/global/IP#PORT, as
// kube-dns runs it). It waits until the port accepts TCP connections and returns its address;
// the process is stopped when the test ends, and its log shown if the test failed.
func startDnsmasq(t testing.TB, args ...string) string {
	t.Helper()
	bin := dnsmasqBinary(t)
	p := port(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	all := append([]string{
		"--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
		"--listen-address=127.0.0.1", "--bind-interfaces", "--port=" + strconv.Itoa(p),
		"--pid-file=", // No pid file: several may run at once.
		"--log-facility=-", "--log-queries",
	}, args...)
	var out syncBuffer
	proc, err := startProcess("dnsmasq", &out, t.TempDir(), bin, all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.stop(5 * time.Second)
		if t.Failed() {
			t.Logf("dnsmasq %s:\n%s", strings.Join(all, " "), out.String())
		}
	})
	err = poll(context.Background(), 10*time.Second, proc, func(context.Context) error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("dnsmasq does not listen on %s: %v\n%s", addr, err, out.String())
	}
	return addr
}

// rssKB is the resident set size of the process, in KiB, from /proc.
func (c *coreDNS) rssKB(t testing.TB) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.proc.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}
