package kube

import (
	"context"
	"os"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Lease names a coordination.k8s.io Lease and how to hold it. Zero durations take client-go's
// usual values (15 s lease, 10 s renew deadline, 2 s retry period).
type Lease struct {
	Namespace, Name string
	Identity        string // "" means HOSTNAME_UUID: two candidates never share one
	LeaseDuration   time.Duration
	RenewDeadline   time.Duration
	RetryPeriod     time.Duration
}

func (l Lease) withDefaults() Lease {
	if l.Identity == "" {
		host, _ := os.Hostname()
		l.Identity = host + "_" + string(uuid.NewUUID())
	}
	l.LeaseDuration = orDefault(l.LeaseDuration, 15*time.Second)
	l.RenewDeadline = orDefault(l.RenewDeadline, 10*time.Second)
	l.RetryPeriod = orDefault(l.RetryPeriod, 2*time.Second)
	return l
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// LeaseConfig is config for a client that renews a Lease: one hung request must not use up the
// whole renew deadline (client-go's own NewFromKubeconfig does the same).
func LeaseConfig(config *rest.Config, l Lease) *rest.Config {
	cfg := rest.CopyConfig(config)
	cfg.Timeout = max(time.Second, l.withDefaults().RenewDeadline/2)
	return cfg
}

// Campaign competes for a Lease, so that of several replicas only one writes.
type Campaign struct {
	lease  Lease
	client kubernetes.Interface
	logf   func(string, ...any)
}

// NewCampaign checks the Lease's timings; logf (nil discards) hears who leads.
func NewCampaign(client kubernetes.Interface, l Lease, logf func(string, ...any)) (*Campaign, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	c := &Campaign{lease: l.withDefaults(), client: client, logf: logf}
	if _, err := c.elector(func(context.Context) {}); err != nil {
		return nil, err
	}
	return c, nil
}

// Identity is this candidate's name in the Lease.
func (c *Campaign) Identity() string { return c.lease.Identity }

// Run campaigns until ctx ends or a term's lead returns an error (then Run returns it). Each
// time the Lease is won, lead runs with a context that ends with the term: the Lease lost, or
// ctx ended. The Lease is given up only after lead has returned, so that no standby starts
// writing while this one still might; after a lost term the campaign starts again.
func (c *Campaign) Run(ctx context.Context, lead func(term context.Context) error) error {
	for ctx.Err() == nil {
		if err := c.term(ctx, lead); err != nil {
			return err
		}
	}
	return nil
}

// term campaigns until it has led once (or ctx ends), and returns lead's error.
func (c *Campaign) term(ctx context.Context, lead func(context.Context) error) error {
	// The elector's context outlives ctx until lead has returned: cancelling it ends the term.
	electorCtx, endTerm := context.WithCancel(context.WithoutCancel(ctx))
	defer endTerm()
	var (
		mu      sync.Mutex
		led     chan struct{} // closed when lead has returned; nil until it starts
		leadErr error
	)
	waitLead := func() {
		mu.Lock()
		done := led
		mu.Unlock()
		if done != nil {
			<-done
		}
	}
	le, _ := c.elector(func(leading context.Context) {
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			endTerm()
			return
		}
		done := make(chan struct{})
		led = done
		mu.Unlock()
		defer close(done)
		defer endTerm() // however the term ended, stop renewing
		term, end := context.WithCancel(leading)
		defer end()
		defer context.AfterFunc(ctx, end)()
		c.logf("leader election: %s leads (Lease %s/%s)", c.lease.Identity, c.lease.Namespace, c.lease.Name)
		leadErr = lead(term)
	})
	defer context.AfterFunc(ctx, func() {
		waitLead()
		endTerm()
	})()
	c.logf("leader election: candidate %s for Lease %s/%s", c.lease.Identity, c.lease.Namespace, c.lease.Name)
	le.Run(electorCtx)
	waitLead()
	mu.Lock()
	didLead := led != nil
	mu.Unlock()
	if didLead {
		c.release()
	}
	return leadErr
}

// release gives the Lease up, if this candidate still holds it, once its lead has returned, so
// that a standby takes over at once. client-go's ReleaseOnCancel would do it as soon as a
// renewal fails, while lead may still be writing.
func (c *Campaign) release() {
	ctx, cancel := context.WithTimeout(context.Background(), c.lease.RenewDeadline)
	defer cancel()
	leases := c.client.CoordinationV1().Leases(c.lease.Namespace)
	l, err := leases.Get(ctx, c.lease.Name, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != c.lease.Identity {
		return
	}
	// As client-go releases: no holder, and a lease of a second (0 is not valid).
	l.Spec.HolderIdentity = nil
	one := int32(1)
	l.Spec.LeaseDurationSeconds = &one
	now := metav1.NewMicroTime(time.Now())
	l.Spec.RenewTime, l.Spec.AcquireTime = &now, &now
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err == nil {
		c.logf("leader election: %s released Lease %s/%s", c.lease.Identity, c.lease.Namespace, c.lease.Name)
	}
}

func (c *Campaign) elector(started func(context.Context)) (*leaderelection.LeaderElector, error) {
	l := c.lease
	return leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: l.Namespace, Name: l.Name},
			Client:     c.client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: l.Identity},
		},
		Name:            l.Namespace + "/" + l.Name,
		LeaseDuration:   l.LeaseDuration,
		RenewDeadline:   l.RenewDeadline,
		RetryPeriod:     l.RetryPeriod,
		ReleaseOnCancel: false, // see release
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: started,
			OnStoppedLeading: func() {},
			OnNewLeader: func(leader string) {
				if leader != l.Identity {
					c.logf("leader election: %s leads; %s stands by", leader, l.Identity)
				}
			},
		},
	})
}
