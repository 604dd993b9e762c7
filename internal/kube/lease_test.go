package kube

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/poll"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestCampaign(t *testing.T) {
	client := fake.NewClientset()
	// Reactors must be in place before the clients run: the fake does not lock them.
	var unreachable atomic.Bool
	client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if unreachable.Load() {
			return true, nil, errors.New("API server unreachable")
		}
		return false, nil, nil
	})
	lease := Lease{Namespace: "istio-system", Name: "lease", LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond}

	type candidate struct {
		cancel  context.CancelFunc
		done    chan error
		running atomic.Bool
		terms   atomic.Int32
	}
	start := func(id string) *candidate {
		c := &candidate{done: make(chan error, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		c.cancel = cancel
		l := lease
		l.Identity = id
		campaign, err := NewCampaign(client, l, func(f string, a ...any) { t.Logf(id+": "+f, a...) })
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c.done <- campaign.Run(ctx, func(term context.Context) error {
				c.terms.Add(1)
				c.running.Store(true)
				<-term.Done()
				c.running.Store(false)
				return nil
			})
		}()
		return c
	}
	holder := func() string {
		l, err := client.CoordinationV1().Leases("istio-system").Get(context.Background(), "lease", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	leads := func(c *candidate, id string) func() error {
		return func() error {
			if !c.running.Load() || holder() != id {
				return fmt.Errorf("running %v, holder %q", c.running.Load(), holder())
			}
			return nil
		}
	}

	a := start("a")
	poll.Until(t, 5*time.Second, leads(a, "a"))
	b := start("b")
	time.Sleep(300 * time.Millisecond)
	if b.running.Load() || holder() != "a" {
		t.Fatalf("b runs beside a (holder %q)", holder())
	}

	// a stops: it releases the Lease, and b takes over well before the lease would expire.
	stopped := time.Now()
	a.cancel()
	if err := <-a.done; err != nil {
		t.Errorf("a: %v", err)
	}
	if a.running.Load() {
		t.Error("a's lead still running after Run returned")
	}
	poll.Until(t, 5*time.Second, leads(b, "b"))
	if d := time.Since(stopped); d > lease.LeaseDuration {
		t.Errorf("b took over %v after a stopped: the Lease was not released", d)
	}

	// b cannot renew: its term ends, and it campaigns again; once the API server is back it
	// leads a second term.
	unreachable.Store(true)
	poll.Until(t, 5*time.Second, func() error {
		if b.running.Load() {
			return errors.New("still leading")
		}
		return nil
	})
	unreachable.Store(false)
	poll.Until(t, 5*time.Second, leads(b, "b"))
	if n := b.terms.Load(); n != 2 {
		t.Errorf("b led %d terms, want 2", n)
	}
	select {
	case err := <-b.done:
		t.Fatalf("b's campaign ended: %v", err)
	default:
	}
	b.cancel()
	if err := <-b.done; err != nil {
		t.Errorf("b: %v", err)
	}
}

// A lead that fails ends the campaign with its error, and gives the Lease up.
func TestCampaignLeadError(t *testing.T) {
	client := fake.NewClientset()
	campaign, err := NewCampaign(client, Lease{Namespace: "ns", Name: "lease", Identity: "a", RetryPeriod: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := campaign.Run(context.Background(), func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Run: %v, want boom", err)
	}
	l, err := client.CoordinationV1().Leases("ns").Get(context.Background(), "lease", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("Lease still held by %q", *h)
	}
}

func TestNewCampaignChecksTimings(t *testing.T) {
	_, err := NewCampaign(fake.NewClientset(), Lease{Namespace: "ns", Name: "l", LeaseDuration: time.Second, RenewDeadline: 2 * time.Second}, nil)
	if err == nil {
		t.Fatal("lease duration below renew deadline accepted")
	}
}
