package stubdomain

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Patcher edits the cluster DNS's ConfigMap so that it forwards zones to coredns-istio.
//
// Every write is a get-modify-update of one ConfigMap that carries the resourceVersion it read,
// retried from the Get on a conflict, so a concurrent edit by anyone else is merged, never
// overwritten. When the edit leaves the stored data as it is, nothing is written.
type Patcher struct {
	Client    kubernetes.Interface
	Namespace string // of the cluster DNS: kube-system
	Target    Target // KubeDNS, CoreDNS, CoreDNSCustom or NodeLocalCache (not Auto: see DetectPath)
	// ConfigMap is the ConfigMap to edit when it is not the target's usual one: a NodeLocal
	// DNSCache's own (nodelocaldns), an imported ConfigMap named otherwise than coredns-custom.
	ConfigMap string
	DryRun    bool // compute the change and its diff, write nothing

	// Backoff paces the retries after a conflict; the zero value means DefaultBackoff.
	Backoff wait.Backoff
}

// DefaultBackoff is generous, with jitter, so that we get through even while others keep
// writing the same ConfigMap: each attempt is a fresh chance, so many of them, 40 within about
// 5 to 9 seconds. (No Cap: in wait.Backoff reaching it ends the retries.)
var DefaultBackoff = wait.Backoff{Steps: 40, Duration: 10 * time.Millisecond, Factor: 1.1, Jitter: 1}

// Action is what a Patcher did (or, under DryRun, would do) to a ConfigMap.
type Action string

const (
	Unchanged Action = "unchanged"
	Created   Action = "created"
	Updated   Action = "updated"
	Deleted   Action = "deleted" // a ConfigMap that we had created and that is empty again
)

// Result reports one Apply or Remove.
type Result struct {
	ConfigMap string // namespace/name
	Action    Action
	Diff      string   // unified diff of the changed keys; "" when Unchanged
	Warnings  []string // e.g. a Corefile without reload
	Attempts  int      // get-modify-update rounds: more than 1 after conflicts
}

// managedByLabel marks the ConfigMaps a Patcher created, so Remove deletes them again once
// they are empty, and only those.
const (
	managedByLabel = "app.kubernetes.io/managed-by"
	managedBy      = "coredns-istio"
)

// ErrNoConfigMap is returned when the target's ConfigMap must exist (CoreDNS's Corefile) but
// does not.
var ErrNoConfigMap = errors.New("ConfigMap not found")

// Apply makes the cluster DNS forward each zone to servers: stubDomains[zone] in kube-dns's
// ConfigMap, our server block in CoreDNS's Corefile, or our key in coredns-custom. Everything
// else in the ConfigMap is kept as it is.
func (p *Patcher) Apply(ctx context.Context, zones []string, servers []netip.AddrPort) (Result, error) {
	if len(zones) == 0 || len(servers) == 0 {
		return Result{}, errors.New("apply needs at least one zone and one server")
	}
	for _, s := range servers {
		if _, err := normalize(s); err != nil {
			return Result{}, err
		}
	}
	var warnings []string
	var edit func(map[string]string) error
	switch p.Target {
	case KubeDNS:
		edit = func(data map[string]string) error {
			s := data[StubDomainsKey]
			for _, z := range zones {
				var err error
				if s, err = SetStubDomain(s, z, servers); err != nil {
					return fmt.Errorf("key %s: %w", StubDomainsKey, err)
				}
			}
			data[StubDomainsKey] = s
			return nil
		}
	case CoreDNS, NodeLocalCache:
		edit = func(data map[string]string) error {
			c, err := existingCorefile(data)
			if err != nil {
				return err
			}
			var directives []string
			if p.Target == NodeLocalCache {
				bind := Bind(c)
				if bind == "" {
					return fmt.Errorf("key %s: no server block binds an address: cannot tell where NodeLocal DNSCache listens", CorefileKey)
				}
				directives = []string{"bind " + bind}
			}
			for _, z := range zones {
				if c, err = SetServerBlock(c, z, servers, directives...); errors.Is(err, ErrForeignBlock) {
					return fmt.Errorf("key %s: %w; refusing to change it: delete that block (or make it forward to %s yourself)",
						CorefileKey, err, FormatServers(servers))
				} else if err != nil {
					return fmt.Errorf("key %s: %w", CorefileKey, err)
				}
			}
			data[CorefileKey] = c
			if p.Target == CoreDNS { // node-cache rereads its files itself
				warnings = reloadWarnings(p.Namespace, c)
			}
			return nil
		}
	case CoreDNSCustom:
		edit = func(data map[string]string) error {
			var b strings.Builder
			for _, z := range zones {
				b.WriteString(ServerBlock(z, servers))
			}
			if err := ValidateCorefile(b.String()); err != nil {
				return fmt.Errorf("key %s: %w", CustomKey, err)
			}
			data[CustomKey] = b.String()
			return nil
		}
	default:
		return Result{}, fmt.Errorf("target %q: want kube-dns, coredns, coredns-custom or node-local-dns", p.Target)
	}
	res, err := p.update(ctx, p.configMap(), p.Target != CoreDNS && p.Target != NodeLocalCache, edit)
	res.Warnings = warnings
	return res, err
}

// Remove takes out of the cluster DNS's ConfigMap exactly what Apply adds for zones: their
// stubDomains entries, our server blocks, our coredns-custom key; and the ConfigMap itself when
// Apply created it and nothing else is left in it.
func (p *Patcher) Remove(ctx context.Context, zones []string) (Result, error) {
	if len(zones) == 0 {
		return Result{}, errors.New("remove needs at least one zone")
	}
	var edit func(map[string]string) error
	switch p.Target {
	case KubeDNS:
		edit = func(data map[string]string) error {
			return removeZones(data, StubDomainsKey, zones, RemoveStubDomain)
		}
	case CoreDNS, NodeLocalCache:
		edit = func(data map[string]string) error {
			if _, ok := data[CorefileKey]; !ok {
				return nil // Nothing of ours can be there.
			}
			c, err := existingCorefile(data)
			if err != nil {
				return err
			}
			for _, z := range zones {
				if c, err = RemoveServerBlock(c, z); err != nil {
					return fmt.Errorf("key %s: %w", CorefileKey, err)
				}
			}
			data[CorefileKey] = c
			return nil
		}
	case CoreDNSCustom:
		edit = func(data map[string]string) error {
			return removeZones(data, CustomKey, zones, removeCustomBlock)
		}
	default:
		return Result{}, fmt.Errorf("target %q: want kube-dns, coredns, coredns-custom or node-local-dns", p.Target)
	}
	// A missing ConfigMap holds nothing of ours: the edit leaves it empty, update writes nothing.
	return p.update(ctx, p.configMap(), true, edit)
}

// configMap is the name of the ConfigMap the Patcher edits.
func (p *Patcher) configMap() string {
	if p.ConfigMap != "" {
		return p.ConfigMap
	}
	return p.Target.ConfigMap()
}

// removeCustomBlock removes zone's block from our coredns-custom key, which holds nothing but
// our blocks: removing the last one leaves "".
func removeCustomBlock(c, zone string) (string, error) {
	if strings.TrimSpace(c) == "" {
		return "", nil
	}
	return RemoveServerBlock(c, zone)
}

// existingCorefile returns the Corefile in data after checking that it parses, so that a broken
// Corefile is reported as such rather than edited.
func existingCorefile(data map[string]string) (string, error) {
	c, ok := data[CorefileKey]
	if !ok {
		return "", fmt.Errorf("no %s key", CorefileKey)
	}
	if err := ValidateCorefile(c); err != nil {
		return "", fmt.Errorf("key %s does not parse: %w", CorefileKey, err)
	}
	return c, nil
}

func reloadWarnings(namespace, corefile string) []string {
	if HasReload(corefile) {
		return nil
	}
	return []string{fmt.Sprintf("the Corefile in ConfigMap %s/%s has no reload plugin: CoreDNS will not pick up the change until its pods restart (add `reload` to its server blocks, or kubectl -n %s rollout restart deployment coredns)",
		namespace, CoreDNSConfigMap, namespace)}
}

// update runs one get-modify-update of ConfigMap name: edit changes a copy of its data; if the
// copy differs from what is stored, it is written with the resourceVersion that was read. On a
// conflict (someone wrote in between) the whole round runs again from the Get. A missing
// ConfigMap is created when mayCreate (if the edit leaves anything), else ErrNoConfigMap.
func (p *Patcher) update(ctx context.Context, name string, mayCreate bool, edit func(map[string]string) error) (Result, error) {
	res := Result{ConfigMap: p.Namespace + "/" + name}
	cms := p.Client.CoreV1().ConfigMaps(p.Namespace)
	backoff := p.Backoff
	if backoff.Steps == 0 {
		backoff = DefaultBackoff
	}
	retryable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err := retry.OnError(backoff, retryable, func() error {
		res.Attempts++
		res.Action, res.Diff = Unchanged, ""
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		exists := err == nil
		switch {
		case apierrors.IsNotFound(err) && mayCreate:
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
				Name:      name,
				Namespace: p.Namespace,
				Labels:    map[string]string{managedByLabel: managedBy},
			}}
		case apierrors.IsNotFound(err):
			return fmt.Errorf("%w: %s", ErrNoConfigMap, res.ConfigMap)
		case err != nil:
			return fmt.Errorf("reading ConfigMap %s: %w", res.ConfigMap, err)
		}

		after := maps.Clone(cm.Data)
		if after == nil {
			after = map[string]string{}
		}
		if err := edit(after); err != nil {
			return fmt.Errorf("ConfigMap %s: %w", res.ConfigMap, err)
		}
		if maps.Equal(cm.Data, after) {
			return nil
		}
		res.Diff = diffData(res.ConfigMap, cm.Data, after)
		switch {
		case !exists:
			res.Action = Created
		case len(after) == 0 && len(cm.BinaryData) == 0 && cm.Labels[managedByLabel] == managedBy:
			res.Action = Deleted
		default:
			res.Action = Updated
		}
		if p.DryRun {
			return nil
		}

		switch res.Action {
		case Created:
			cm.Data = after
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: managedBy})
		case Deleted:
			err = cms.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{
				UID: &cm.UID, ResourceVersion: &cm.ResourceVersion,
			}})
		case Updated:
			cm.Data = after
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: managedBy})
		}
		if apierrors.IsNotFound(err) {
			// Deleted since the Get: start over, as after a conflict.
			err = apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, name, err)
		}
		if err != nil && !retryable(err) {
			err = fmt.Errorf("writing ConfigMap %s: %w", res.ConfigMap, err)
		}
		return err
	})
	if err != nil {
		if retryable(err) {
			err = fmt.Errorf("writing ConfigMap %s: still conflicting after %d attempts: %w", res.ConfigMap, res.Attempts, err)
		}
		return res, err
	}
	return res, nil
}

// diffData is the unified diff of every key whose value differs between before and after.
func diffData(configMap string, before, after map[string]string) string {
	keys := slices.Sorted(maps.Keys(before))
	for k := range after {
		if _, ok := before[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var b strings.Builder
	for _, k := range keys {
		if before[k] != after[k] {
			b.WriteString(UnifiedDiff(configMap+" "+k, before[k], after[k]))
		}
	}
	return b.String()
}

// ZoneStatus is what the cluster DNS's configuration says for one zone.
type ZoneStatus struct {
	Zone       string
	Configured []string // the servers it forwards to, as written; nil when not configured
	Want       []string // the desired servers
	Match      bool     // Configured and Want are the same set of addresses
	Note       string   // why it is not configured, when that is known
}

// StatusReport is the outcome of Status.
type StatusReport struct {
	ConfigMap string // namespace/name that was read
	Zones     []ZoneStatus
	Warnings  []string
}

// Match reports whether every zone matches.
func (r StatusReport) Match() bool {
	for _, z := range r.Zones {
		if !z.Match {
			return false
		}
	}
	return len(r.Zones) > 0
}

// Status reads the target's ConfigMap and tells, per zone, which servers are configured and
// whether they are the desired ones (as a set; port 53 and no port are the same).
func (p *Patcher) Status(ctx context.Context, zones []string, servers []netip.AddrPort) (StatusReport, error) {
	name := p.configMap()
	rep := StatusReport{ConfigMap: p.Namespace + "/" + name}
	if name == "" {
		return rep, fmt.Errorf("target %q: want kube-dns, coredns, coredns-custom or node-local-dns", p.Target)
	}
	cm, err := p.Client.CoreV1().ConfigMaps(p.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm = &corev1.ConfigMap{}
	} else if err != nil {
		return rep, fmt.Errorf("reading ConfigMap %s: %w", rep.ConfigMap, err)
	}
	value, hasValue := cm.Data[p.Target.Key()]
	if p.Target == CoreDNS || p.Target == NodeLocalCache {
		if !hasValue {
			return rep, fmt.Errorf("ConfigMap %s: no %s key", rep.ConfigMap, CorefileKey)
		}
		if err := ValidateCorefile(value); err != nil {
			return rep, fmt.Errorf("ConfigMap %s: key %s does not parse: %w", rep.ConfigMap, CorefileKey, err)
		}
		if p.Target == CoreDNS {
			rep.Warnings = reloadWarnings(p.Namespace, value)
		}
	}
	want := make([]string, len(servers))
	for i, s := range servers {
		want[i] = formatServer(s)
	}
	for _, z := range zones {
		zs := ZoneStatus{Zone: z, Want: want}
		var err error
		switch p.Target {
		case KubeDNS:
			zs.Configured, err = StubDomainServers(value, z)
		case CoreDNS, NodeLocalCache:
			zs.Configured, err = ServerBlockServers(value, z)
			if err == nil && len(zs.Configured) == 0 {
				if _, ferr := SetServerBlock(value, z, servers); errors.Is(ferr, ErrForeignBlock) {
					zs.Note = "a server block that coredns-istio did not write serves it"
				}
			}
		case CoreDNSCustom:
			if strings.TrimSpace(value) != "" {
				zs.Configured, err = ServerBlockServers(value, z)
			}
		}
		if err != nil {
			return rep, fmt.Errorf("ConfigMap %s: key %s: %w", rep.ConfigMap, p.Target.Key(), err)
		}
		zs.Match = sameServers(zs.Configured, servers)
		rep.Zones = append(rep.Zones, zs)
	}
	return rep, nil
}

// sameServers compares configured (as written in a ConfigMap) with want as sets of addresses.
func sameServers(configured []string, want []netip.AddrPort) bool {
	if len(configured) == 0 {
		return false
	}
	got := make(map[netip.AddrPort]bool, len(configured))
	for _, s := range configured {
		ap, err := ParseServer(s)
		if err != nil {
			return false
		}
		got[ap] = true
	}
	wanted := make(map[netip.AddrPort]bool, len(want))
	for _, ap := range want {
		ap, err := normalize(ap)
		if err != nil {
			return false
		}
		wanted[ap] = true
	}
	return maps.Equal(got, wanted)
}

// removeZones takes each zone out of data[key] with remove, and deletes the key once nothing
// but white space is left in it.
func removeZones(data map[string]string, key string, zones []string, remove func(value, zone string) (string, error)) error {
	v, ok := data[key]
	if !ok {
		return nil
	}
	for _, z := range zones {
		var err error
		if v, err = remove(v, z); err != nil {
			return fmt.Errorf("key %s: %w", key, err)
		}
	}
	if strings.TrimSpace(v) == "" {
		delete(data, key)
	} else {
		data[key] = v
	}
	return nil
}
