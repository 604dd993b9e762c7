package istioglobal

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/poll"
	"github.com/coredns/coredns/plugin/test"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/client-go/pkg/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// answers is the A values the plugin's current table gives name, as a string for messages.
func answers(t *testing.T, ig *IstioGlobal, name string) string {
	t.Helper()
	if ig.table.Load() == nil {
		return "no table"
	}
	v := values(t, ig, name)
	if v == nil {
		return "NXDOMAIN"
	}
	return strings.Join(v, ",")
}

func wantAnswer(t *testing.T, ig *IstioGlobal, name, want string) func() error {
	return func() error {
		if got := answers(t, ig, name); got != want {
			return fmt.Errorf("%s: %s, want %s", name, got, want)
		}
		return nil
	}
}

func startPlugin(t *testing.T, sources ...source) *IstioGlobal {
	t.Helper()
	ig := newIstioGlobal()
	ig.Zones = []string{"global."}
	ig.Next = test.NextHandler(0, nil)
	ig.sources = sources
	if err := ig.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ig.shutdown() })
	return ig
}

const seedYAML = `apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: httpbin-bar
  namespace: foo
spec:
  hosts:
  - httpbin.bar.global
  location: MESH_INTERNAL
  ports:
  - name: http1
    number: 8000
    protocol: http
  resolution: DNS
  addresses:
  - 127.255.0.2
  endpoints:
  - address: 127.0.0.12
    ports:
      http1: 15443
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: httpbin-global
spec:
  host: httpbin.bar.global
---
# an empty document
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: no-namespace
spec:
  hosts: [nons.bar.global]
  addresses: [240.0.0.9]
`

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceReads(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "seeds.yaml"), seedYAML)
	writeFile(t, filepath.Join(dir, "json.json"), `{"apiVersion":"networking.istio.io/v1beta1","kind":"ServiceEntry",
		"metadata":{"name":"j","namespace":"foo"},"spec":{"hosts":["json.bar.global"],"addresses":["240.0.0.7"]}}`)
	writeFile(t, filepath.Join(dir, "broken.yml"), "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: b}\nspec:\n  hosts: [\"x\"\n")
	writeFile(t, filepath.Join(dir, "mixed.yaml"), strings.Join([]string{
		"apiVersion: networking.istio.io/v2\nkind: ServiceEntry\nmetadata: {name: future}\nspec: {hosts: [f.bar.global]}",
		"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {namespace: foo}\nspec: {hosts: [noname.bar.global]}",
		"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: badfield}\nspec: {hosts: [bf.bar.global], addresses: 7}",
		"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: fine, namespace: foo}\nspec: {hosts: [fine.bar.global], addresses: [240.0.0.8]}",
	}, "\n---\n"))
	writeFile(t, filepath.Join(dir, "notes.txt"), "not a manifest")
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), "garbage: [")

	entries, problems := newFileSource([]string{dir}).entries()
	var got []string
	for _, e := range entries {
		got = append(got, e.key()+"="+strings.Join(e.Hosts, ","))
	}
	want := []string{"foo/j=json.bar.global", "foo/fine=fine.bar.global", "foo/httpbin-bar=httpbin.bar.global", "default/no-namespace=nons.bar.global"}
	if !slices.Equal(got, want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	if len(entries) > 2 && (len(entries[2].Ports) != 1 || entries[2].Ports[0].Number != 8000) {
		t.Errorf("ports of httpbin-bar: %+v", entries[2].Ports)
	}
	var where []string
	for _, p := range problems {
		where = append(where, filepath.Base(p.Entry))
		if p.Reason != reasonUnparsable || p.Detail == "" {
			t.Errorf("problem %v: want reason unparsable with a detail", p)
		}
	}
	if want := []string{"broken.yml#1", "mixed.yaml#1", "mixed.yaml#2", "mixed.yaml#3"}; !slices.Equal(where, want) {
		t.Errorf("problems at %v, want %v", where, want)
	}
}

func TestFileSourceFollowsChanges(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "se.yaml")
	writeFile(t, file, seedYAML)
	ig := startPlugin(t, newFileSource([]string{file}))
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "httpbin.bar.global.", "127.255.0.2"))

	writeFile(t, file, strings.Replace(seedYAML, "127.255.0.2", "127.255.0.3", 1))
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "httpbin.bar.global.", "127.255.0.3"))

	// Replaced by rename, as editors and ConfigMap volumes do.
	tmp := filepath.Join(dir, ".se.yaml.tmp")
	writeFile(t, tmp, strings.Replace(seedYAML, "127.255.0.2", "127.255.0.4", 1))
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "httpbin.bar.global.", "127.255.0.4"))

	// Broken: the document is skipped, the other one keeps serving.
	writeFile(t, file, strings.Replace(seedYAML, "kind: ServiceEntry\nmetadata:\n  name: httpbin-bar", "kind: ServiceEntry\nmetadata: [", 1))
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "httpbin.bar.global.", "NXDOMAIN"))
	if got := answers(t, ig, "nons.bar.global."); got != "240.0.0.9" {
		t.Errorf("the rest of the file: %s", got)
	}

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "nons.bar.global.", "NXDOMAIN"))
}

func serviceEntry(ns, name string, hosts []string, addrs ...string) *networkingv1.ServiceEntry {
	return &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{"big": strings.Repeat("x", 1000)}},
		Spec: networkingapi.ServiceEntry{
			Hosts:     hosts,
			Addresses: addrs,
			Endpoints: []*networkingapi.WorkloadEntry{{Address: "127.0.0.12"}},
			Ports:     []*networkingapi.ServicePort{{Name: "http1", Number: 8000, Protocol: "http"}},
		},
	}
}

func TestKubeSource(t *testing.T) {
	client := fake.NewSimpleClientset(
		serviceEntry("foo", "httpbin-bar", []string{"httpbin.bar.global"}, "127.255.0.2"),
		serviceEntry("hello", "helloworld", []string{"helloworld.hello.global"}, "127.255.0.8"),
	)
	ks := &kubeSource{client: client}
	ig := startPlugin(t, ks)
	poll.Until(t, 5*time.Second, wantAnswer(t, ig, "httpbin.bar.global.", "127.255.0.2"))
	if got := answers(t, ig, "helloworld.hello.global."); got != "127.255.0.8" {
		t.Errorf("helloworld: %s", got)
	}

	ctx := context.Background()
	ses := client.NetworkingV1().ServiceEntries("foo")
	if _, err := ses.Create(ctx, serviceEntry("foo", "new", []string{"new.bar.global"}, "240.0.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "new.bar.global.", "240.0.0.1"))
	if _, err := ses.Update(ctx, serviceEntry("foo", "new", []string{"new.bar.global"}, "240.0.0.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "new.bar.global.", "240.0.0.2"))
	if err := ses.Delete(ctx, "new", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "new.bar.global.", "NXDOMAIN"))

	// The cache keeps what build reads, as our own type, and nothing else.
	ks.stores[0].mu.RLock()
	defer ks.stores[0].mu.RUnlock()
	for _, c := range ks.stores[0].items {
		if len(c.Ports) != 1 || len(c.Hosts) != 1 || c.Labels != nil {
			t.Errorf("cached object not slimmed: %#v", c)
		}
	}
}

func TestKubeSourceNamespaces(t *testing.T) {
	client := fake.NewSimpleClientset(
		serviceEntry("foo", "a", []string{"a.bar.global"}, "240.0.0.1"),
		serviceEntry("bar", "b", []string{"b.bar.global"}, "240.0.0.2"),
		serviceEntry("baz", "c", []string{"c.bar.global"}, "240.0.0.3"),
	)
	ig := startPlugin(t, &kubeSource{client: client, namespaces: []string{"foo", "baz"}})
	poll.Until(t, 5*time.Second, wantAnswer(t, ig, "a.bar.global.", "240.0.0.1"))
	for name, want := range map[string]string{"b.bar.global.": "NXDOMAIN", "c.bar.global.": "240.0.0.3"} {
		if got := answers(t, ig, name); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
}

// TestShutdownStopsEverything is what a reload relies on: an instance leaves no goroutine.
func TestShutdownStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "se.yaml"), seedYAML)
	for range 3 {
		ig := newIstioGlobal()
		ig.Zones = []string{"global."}
		ig.sources = []source{
			&kubeSource{client: fake.NewSimpleClientset(serviceEntry("foo", "a", []string{"a.bar.global"}, "240.0.0.1"))},
			newFileSource([]string{dir}),
		}
		if err := ig.start(); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 5*time.Second, wantAnswer(t, ig, "a.bar.global.", "240.0.0.1"))
		if got := answers(t, ig, "httpbin.bar.global."); got != "127.255.0.2" {
			t.Errorf("both sources feed one table: httpbin %s", got)
		}
		if err := ig.shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines after shutdown, %d before", n, before)
		}
		return nil
	})
}

// countingSource is a source whose entries can be changed and whose reads are counted.
type countingSource struct {
	notify func()
	reads  atomic.Int64
	list   atomic.Pointer[[]Entry]
	snap   snapshots
}

func (c *countingSource) start(notify func()) error { c.notify = notify; notify(); return nil }
func (c *countingSource) stop()                     {}
func (c *countingSource) synced() bool              { return true }
func (c *countingSource) changes() ([]change, []Problem) {
	c.reads.Add(1)
	return c.snap.diff(*c.list.Load()), nil
}

func TestBurstsCoalesce(t *testing.T) {
	src := &countingSource{}
	src.list.Store(&[]Entry{})
	ig := startPlugin(t, src)
	poll.Until(t, 2*time.Second, func() error {
		if !ig.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	time.Sleep(3 * coalesceDelay) // the start's own notifications are built
	base := src.reads.Load()
	start := time.Now()
	for i := range 1000 {
		src.list.Store(&[]Entry{se("foo", "e", 0, hosts("e.bar.global"), fmt.Sprintf("240.0.%d.%d", i/250, i%250+1))})
		src.notify()
	}
	burst := time.Since(start)
	poll.Until(t, 2*time.Second, wantAnswer(t, ig, "e.bar.global.", "240.0.3.250"))
	time.Sleep(3 * coalesceDelay)
	// One build at the start, one per window the burst lasts, one at its end.
	if n, most := src.reads.Load()-base, int64(burst/coalesceDelay)+2; n > most {
		t.Errorf("a burst of 1000 changes in %v cost %d rebuilds, want at most %d", burst, n, most)
	}
}

// failingSource fails to start, as a source with a bad configuration would.
type failingSource struct{ countingSource }

func (*failingSource) start(func()) error { return fmt.Errorf("cannot start") }

func TestFailedStartShutsDown(t *testing.T) {
	ok := &countingSource{}
	ok.list.Store(&[]Entry{})
	ig := newIstioGlobal()
	ig.Zones = []string{"global."}
	ig.sources = []source{ok, &failingSource{}}
	if err := ig.start(); err == nil || !strings.Contains(err.Error(), "cannot start") {
		t.Fatalf("start: %v", err)
	}
	done := make(chan struct{})
	go func() { ig.shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown after a failed start hangs")
	}
}
