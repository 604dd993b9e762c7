package stubdomain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/poll"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func globalServers(client *fake.Clientset) (string, error) {
	cm, err := client.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "kube-dns", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	s, err := StubDomainServers(cm.Data["stubDomains"], "global")
	return strings.Join(s, ","), err
}

func wantGlobal(client *fake.Clientset, want string) func() error {
	return func() error {
		got, err := globalServers(client)
		if err == nil && got != want {
			err = fmt.Errorf("global → %q, want %q", got, want)
		}
		return err
	}
}

func TestWatcher(t *testing.T) {
	svc := service([]string{"10.0.0.53"}, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	client := fake.NewClientset(svc, configMap("kube-dns", map[string]string{"upstreamNameservers": `["8.8.8.8"]`}))
	var logMu sync.Mutex
	var log strings.Builder
	w := &Watcher{
		Patcher:  &Patcher{Client: client, Namespace: "kube-system", Target: KubeDNS},
		Zones:    []string{"global"},
		Service:  "istio-system/istiocoredns",
		Debounce: 10 * time.Millisecond,
		Logf: func(format string, args ...any) {
			logMu.Lock()
			defer logMu.Unlock()
			fmt.Fprintf(&log, format+"\n", args...)
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		logMu.Lock()
		t.Logf("log:\n%s", log.String())
		logMu.Unlock()
	}()

	poll.Until(t, 5*time.Second, wantGlobal(client, "10.0.0.53"))

	// The Service changes its addresses: the config follows.
	svcs := client.CoreV1().Services("istio-system")
	svc.Spec.ClusterIPs = []string{"10.0.0.54", "fd00:10::54"}
	svc.Spec.ClusterIP = "10.0.0.54"
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, wantGlobal(client, "10.0.0.54,fd00:10::54"))

	// Someone reverts the ConfigMap: re-applied, their other key kept.
	cms := client.CoreV1().ConfigMaps("kube-system")
	if _, err := cms.Update(ctx, configMap("kube-dns", map[string]string{"upstreamNameservers": `["8.8.8.8"]`, "x": "y"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		cm, err := cms.Get(ctx, "kube-dns", metav1.GetOptions{})
		if err != nil || cm.Data["x"] != "y" || cm.Data["upstreamNameservers"] != `["8.8.8.8"]` {
			return fmt.Errorf("%v %q", err, cm.Data)
		}
		return wantGlobal(client, "10.0.0.54,fd00:10::54")()
	})

	// The Service goes away: the config stays; it comes back elsewhere: the config follows.
	if err := svcs.Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		logMu.Lock()
		defer logMu.Unlock()
		if !strings.Contains(log.String(), "not found") {
			return errors.New("not logged")
		}
		return nil
	})
	if err := wantGlobal(client, "10.0.0.54,fd00:10::54")(); err != nil {
		t.Errorf("after the Service's deletion: %v", err)
	}
	svc = service([]string{"10.0.0.99"}, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, wantGlobal(client, "10.0.0.99"))
}

// TestWatcherDebounces: a burst of events costs a few applies, not one per event.
func TestWatcherDebounces(t *testing.T) {
	client := fake.NewClientset(configMap("kube-dns", nil))
	var gets atomic.Int32
	client.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		gets.Add(1)
		return false, nil, nil
	})
	w := &Watcher{
		Patcher:  &Patcher{Client: client, Namespace: "kube-system", Target: KubeDNS},
		Zones:    []string{"global"},
		Servers:  istioDNS,
		Debounce: 100 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	poll.Until(t, 5*time.Second, wantGlobal(client, "10.0.0.53"))
	time.Sleep(300 * time.Millisecond)
	before := gets.Load()
	for i := range 50 {
		cm := configMap("kube-dns", map[string]string{"stubDomains": `{"global":["10.0.0.53"]}`, "n": fmt.Sprint(i)})
		if _, err := client.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	// Each apply is one Get (the test's own Gets of the loop above are none).
	if n := gets.Load() - before; n < 1 || n > 3 {
		t.Errorf("%d applies for a burst of 50 events", n)
	}
}

// Behind NodeLocal DNSCache the watcher keeps both hops: CoreDNS's Corefile and kube-dns's
// stubDomains, which the cache reads; an edit that drops the cache's entry is put back.
func TestWatcherKeepsEveryHop(t *testing.T) {
	svc := service([]string{"10.0.0.53"}, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	client := fake.NewClientset(svc, configMap("coredns", map[string]string{"Corefile": kubeadmCorefile}))
	w := &Watcher{
		Patcher:  &Patcher{Client: client, Namespace: "kube-system", Target: CoreDNS},
		Hops:     []*Patcher{{Client: client, Namespace: "kube-system", Target: KubeDNS}},
		Zones:    []string{"global"},
		Service:  "istio-system/istiocoredns",
		Debounce: 10 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	corefileForwards := func() error {
		cm, err := client.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s, err := ServerBlockServers(cm.Data["Corefile"], "global"); err != nil || strings.Join(s, ",") != "10.0.0.53" {
			return fmt.Errorf("Corefile's global block: %v, %v", s, err)
		}
		return nil
	}
	poll.Until(t, 5*time.Second, corefileForwards)
	poll.Until(t, 5*time.Second, wantGlobal(client, "10.0.0.53"))

	cms := client.CoreV1().ConfigMaps("kube-system")
	if _, err := cms.Update(ctx, configMap("kube-dns", map[string]string{"stubDomains": `{"acme.local": ["1.2.3.4"]}`}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, wantGlobal(client, "10.0.0.53"))
	if err := corefileForwards(); err != nil {
		t.Error(err)
	}
}

// RBAC that forbids listing a watched ConfigMap ends the watcher with an error that names it,
// instead of a wait for a sync that never comes.
func TestWatcherEndsWhenForbidden(t *testing.T) {
	client := fake.NewClientset(configMap("kube-dns", nil))
	client.PrependReactor("list", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "", errors.New("RBAC: no"))
	})
	w := &Watcher{Patcher: &Patcher{Client: client, Namespace: "kube-system", Target: KubeDNS}, Zones: []string{"global"},
		Servers: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.53:53")}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := w.Run(ctx)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "ConfigMap kube-system/kube-dns") || ctx.Err() != nil {
		t.Errorf("Run: %v (context %v)", err, ctx.Err())
	}
}
