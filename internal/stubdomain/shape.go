package stubdomain

import (
	"context"
	"fmt"
	"path"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The DaemonSets of NodeLocal DNSCache (kubernetes/dns cmd/node-cache): node-local-dns in the
// current add-on, nodelocaldns in older installs (kops, kubespray).
var nodeLocalDaemonSets = []string{"node-local-dns", "nodelocaldns"}

// NodeLocal is NodeLocal DNSCache as its DaemonSet shows it. Pods ask it first; it forwards only
// the cluster domain and the reverse zones to the cluster DNS, everything else to the node's
// resolv.conf, so the cluster DNS alone never sees a `global` question.
type NodeLocal struct {
	DaemonSet string
	// ConfigMap holds node-cache's own Corefile (mounted for its -conf).
	ConfigMap string
	// KubeDNS is whether it mounts ConfigMap kube-dns: then node-cache appends one server block
	// per stubDomains key to its Corefile (cmd/node-cache/app/configmap.go), and that is where
	// our zones go; else our marked block goes into its own Corefile.
	KubeDNS bool
}

// DetectNodeLocal finds NodeLocal DNSCache in namespace, by the names its DaemonSet has, or
// returns nil. Only get by name is needed, which RBAC can restrict by resource name.
func DetectNodeLocal(ctx context.Context, client kubernetes.Interface, namespace string) (*NodeLocal, string, error) {
	for _, name := range nodeLocalDaemonSets {
		ds, err := client.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case apierrors.IsForbidden(err):
			// Not knowing is not absence: a cache we did not see would leak the zones.
			return nil, "", fmt.Errorf("detecting NodeLocal DNSCache: not allowed to get DaemonSet %s/%s (grant get on daemonsets %s in %s): %w",
				namespace, name, strings.Join(nodeLocalDaemonSets, ", "), namespace, err)
		case err != nil:
			return nil, "", fmt.Errorf("detecting NodeLocal DNSCache: DaemonSet %s/%s: %w", namespace, name, err)
		}
		nl := &NodeLocal{DaemonSet: name}
		for _, v := range ds.Spec.Template.Spec.Volumes {
			cm := v.ConfigMap
			if cm == nil {
				continue
			}
			switch {
			case cm.Name == KubeDNSConfigMap:
				nl.KubeDNS = true
			case nl.ConfigMap == "":
				nl.ConfigMap = cm.Name
			}
		}
		why := fmt.Sprintf("DaemonSet %s/%s runs NodeLocal DNSCache", namespace, name)
		if nl.KubeDNS {
			why += fmt.Sprintf(", mounting ConfigMap %s (its stubDomains become server blocks of the cache)", KubeDNSConfigMap)
		} else {
			why += fmt.Sprintf(", without ConfigMap %s: its own Corefile (ConfigMap %s) must forward the zones", KubeDNSConfigMap, nl.ConfigMap)
		}
		return nl, why, nil
	}
	return nil, "", nil
}

// Hop is one DNS server on a pod's query path, and the ConfigMap whose edit makes it forward
// the zones.
type Hop struct {
	Role      string // "node-local cache", "cluster DNS", or both when one edit serves both
	Target    Target
	ConfigMap string // in the cluster DNS's namespace
	Why       string
}

// DetectPath returns the hops a pod's query for the zones passes, first first: NodeLocal
// DNSCache when it runs, then the cluster DNS (cluster, or detected when it is Auto). Each must
// forward the zones, or the question leaks to the node's upstream (`global` is a public TLD).
func DetectPath(ctx context.Context, client kubernetes.Interface, namespace string, cluster Target) ([]Hop, error) {
	var hops []Hop
	nl, why, err := DetectNodeLocal(ctx, client, namespace)
	if err != nil {
		return nil, err
	}
	if nl != nil {
		h := Hop{Role: "node-local cache", Target: NodeLocalCache, ConfigMap: nl.ConfigMap, Why: why}
		if nl.KubeDNS {
			h.Target, h.ConfigMap = KubeDNS, KubeDNSConfigMap
		}
		hops = append(hops, h)
	}
	c := Hop{Role: "cluster DNS", Target: cluster, ConfigMap: cluster.ConfigMap(), Why: "--target"}
	if cluster == Auto {
		if c, err = detectCluster(ctx, client, namespace); err != nil {
			return nil, err
		}
	}
	if len(hops) == 1 && hops[0].Target == c.Target && hops[0].ConfigMap == c.ConfigMap {
		// kube-dns behind the cache: both read its stubDomains.
		hops[0].Role += " and cluster DNS"
		hops[0].Why += "; " + c.Why
		return hops, nil
	}
	return append(hops, c), nil
}

// Imported is a ConfigMap whose keys CoreDNS imports into its Corefile as server blocks: AKS's,
// k3s's, DigitalOcean's and OVH's coredns-custom.
type Imported struct {
	ConfigMap string
	Pattern   string // the glob the Corefile imports, relative to the mount: *.server
}

// ImportedConfigMap finds the ConfigMap behind the Corefile's top-level `import DIR/GLOB` lines:
// the ConfigMap volume that deployment's CoreDNS container mounts at DIR (relative directories
// are relative to the Corefile's, /etc/coredns as CoreDNS's images run it). It returns nil when
// the Corefile imports no mounted ConfigMap.
func ImportedConfigMap(corefile string, d *appsv1.Deployment) *Imported {
	volumes := map[string]string{} // volume name → ConfigMap
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			volumes[v.Name] = v.ConfigMap.Name
		}
	}
	mounts := map[string]string{} // directory → ConfigMap
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if cm, ok := volumes[m.Name]; ok {
				mounts[path.Clean(m.MountPath)] = cm
			}
		}
	}
	for _, imp := range serverImports(corefile) {
		dir, glob := path.Split(imp)
		if !path.IsAbs(dir) {
			dir = path.Join("/etc/coredns", dir)
		}
		if cm, ok := mounts[path.Clean(dir)]; ok {
			return &Imported{ConfigMap: cm, Pattern: glob}
		}
	}
	return nil
}

// serverImports are the paths of the Corefile's top-level `import DIR/*.server`-like lines: the
// imports of server blocks (inside a block, an import brings in snippets).
func serverImports(corefile string) []string {
	var out []string
	for _, line := range strings.Split(corefile, "\n") {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			continue
		}
		if f := strings.Fields(line); len(f) == 2 && f[0] == "import" && strings.HasSuffix(f[1], ".server") {
			out = append(out, f[1])
		}
	}
	return out
}

// reconciledBy names what reverts edits to a ConfigMap, or "": the addon manager (label
// addonmanager.kubernetes.io/mode=Reconcile, AKS and kube-up) or k3s's deploy controller (its
// objectset labels and annotations, re-applied from the manifests on the server's disk).
func reconciledBy(cm *corev1.ConfigMap) string {
	if cm.Labels[addonManagerLabel] == "Reconcile" {
		return "the addon manager (" + addonManagerLabel + "=Reconcile)"
	}
	for _, m := range []map[string]string{cm.Labels, cm.Annotations} {
		for k := range m {
			if strings.HasPrefix(k, "objectset.rio.cattle.io/") {
				return "k3s's deploy controller (" + k + ")"
			}
		}
	}
	return ""
}
