package stubdomain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Target is the cluster DNS whose configuration the patcher edits.
type Target string

const (
	// Auto detects the target (DetectPath).
	Auto Target = "auto"
	// KubeDNS is kube-dns: the zone goes into stubDomains of ConfigMap kube-dns, which its
	// dnsmasq turns into --server=/ZONE/IP.
	KubeDNS Target = "kube-dns"
	// CoreDNS is the cluster's CoreDNS: our server block goes into the Corefile of ConfigMap
	// coredns.
	CoreDNS Target = "coredns"
	// CoreDNSCustom is CoreDNS whose coredns ConfigMap belongs to the addon manager (AKS): our
	// server blocks go into ConfigMap coredns-custom, whose *.server keys the Corefile imports.
	CoreDNSCustom Target = "coredns-custom"
	// NodeLocalCache is NodeLocal DNSCache that does not read kube-dns's stubDomains: our server
	// block goes into its own Corefile (ConfigMap nodelocaldns or node-local-dns), listening
	// where its other blocks do.
	NodeLocalCache Target = "node-local-dns"
)

// Targets lists the values ParseTarget accepts.
var Targets = []Target{Auto, KubeDNS, CoreDNS, CoreDNSCustom, NodeLocalCache}

// ParseTarget returns the Target named s.
func ParseTarget(s string) (Target, error) {
	for _, t := range Targets {
		if string(t) == s {
			return t, nil
		}
	}
	return "", fmt.Errorf("unknown target %q (want one of auto, kube-dns, coredns, coredns-custom, node-local-dns)", s)
}

// Where each target keeps its configuration, in the cluster DNS's namespace.
const (
	KubeDNSConfigMap  = "kube-dns"             // kube-dns's ConfigMap
	StubDomainsKey    = "stubDomains"          // its JSON object of zone → servers
	CoreDNSConfigMap  = "coredns"              // CoreDNS's ConfigMap
	CorefileKey       = "Corefile"             // its Corefile
	CustomConfigMap   = "coredns-custom"       // AKS's ConfigMap for additions
	CustomKey         = "coredns-istio.server" // our key in it: *.server keys are server blocks
	DefaultDNSService = "istio-system/istiocoredns"
)

// ConfigMap returns the name of the ConfigMap that target t edits.
func (t Target) ConfigMap() string {
	switch t {
	case KubeDNS:
		return KubeDNSConfigMap
	case CoreDNS:
		return CoreDNSConfigMap
	case CoreDNSCustom:
		return CustomConfigMap
	case NodeLocalCache:
		return nodeLocalDaemonSets[0]
	}
	return ""
}

// Key returns the ConfigMap key that target t edits.
func (t Target) Key() string {
	switch t {
	case KubeDNS:
		return StubDomainsKey
	case CoreDNS:
		return CorefileKey
	case CoreDNSCustom:
		return CustomKey
	case NodeLocalCache:
		return CorefileKey
	}
	return ""
}

// addonManagerLabel marks objects the addon manager owns; with the value Reconcile it reverts
// every edit (AKS's coredns ConfigMap).
const addonManagerLabel = "addonmanager.kubernetes.io/mode"

// ErrUnknownDNS is detectCluster's error when namespace holds neither CoreDNS nor kube-dns.
var ErrUnknownDNS = errors.New("cannot tell which cluster DNS runs; use --target")

// ErrReconciled is detectCluster's error for a CoreDNS ConfigMap that a controller re-applies
// and whose Corefile imports no ConfigMap of server blocks: there is nowhere an edit would last.
var ErrReconciled = errors.New("the CoreDNS ConfigMap is reconciled and imports no server blocks")

// detectCluster tells which cluster DNS runs in namespace, where its configuration for our
// zones goes, and why it thinks so:
//   - CoreDNS, when ConfigMap coredns has a Corefile key or Deployment coredns exists. When the
//     Corefile imports DIR/*.server at the top level and the CoreDNS Deployment mounts a
//     ConfigMap at DIR (AKS, k3s, DigitalOcean, OVH: coredns-custom), our blocks go into that
//     ConfigMap (CoreDNSCustom); when the Deployment cannot be read, a Corefile that imports
//     custom/*.server is taken to import coredns-custom, as those distributions name it.
//     Otherwise the Corefile itself (CoreDNS), unless a controller reconciles the ConfigMap
//     (ErrReconciled);
//   - else KubeDNS, when Deployment or ConfigMap kube-dns exists;
//   - else ErrUnknownDNS.
//
// Not being allowed to read Deployments counts as their absence; other errors are returned.
func detectCluster(ctx context.Context, client kubernetes.Interface, namespace string) (Hop, error) {
	hop := func(t Target, cm, why string) Hop {
		return Hop{Role: "cluster DNS", Target: t, ConfigMap: cm, Why: why}
	}
	cms := client.CoreV1().ConfigMaps(namespace)
	deployments := client.AppsV1().Deployments(namespace)
	exists := func(err error, name string) (bool, error) {
		switch {
		case err == nil:
			return true, nil
		case apierrors.IsNotFound(err):
			return false, nil
		}
		return false, fmt.Errorf("detecting the cluster DNS: ConfigMap %s/%s: %w", namespace, name, err)
	}

	var coreDNS string // why we think CoreDNS runs
	cm, err := cms.Get(ctx, CoreDNSConfigMap, metav1.GetOptions{})
	found, err := exists(err, CoreDNSConfigMap)
	if err != nil {
		return Hop{}, err
	}
	corefile, hasCorefile := "", false
	if found {
		if corefile, hasCorefile = cm.Data[CorefileKey]; hasCorefile {
			coreDNS = fmt.Sprintf("ConfigMap %s/%s has a %s", namespace, CoreDNSConfigMap, CorefileKey)
		}
	}
	d, err := deployments.Get(ctx, CoreDNSConfigMap, metav1.GetOptions{})
	haveDeployment, err := deploymentExists(err, namespace, CoreDNSConfigMap)
	if err != nil {
		return Hop{}, err
	}
	if coreDNS == "" && haveDeployment {
		coreDNS = fmt.Sprintf("Deployment %s/%s exists", namespace, CoreDNSConfigMap)
	}
	if coreDNS != "" {
		reconciled := ""
		if found {
			if by := reconciledBy(cm); by != "" {
				reconciled = fmt.Sprintf("; the ConfigMap is re-applied by %s, so only the imported one is edited", by)
			}
		}
		if haveDeployment {
			if imp := ImportedConfigMap(corefile, d); imp != nil {
				return hop(CoreDNSCustom, imp.ConfigMap, fmt.Sprintf("%s, which imports %s from ConfigMap %s/%s (mounted by Deployment %s/%s)%s",
					coreDNS, imp.Pattern, namespace, imp.ConfigMap, namespace, CoreDNSConfigMap, reconciled)), nil
			}
		} else if importsCustom(corefile) {
			// The mounts cannot be seen: the directory is coredns-custom's by convention.
			return hop(CoreDNSCustom, CustomConfigMap, fmt.Sprintf("%s, which imports custom/*.server: ConfigMap %s/%s, as on AKS and k3s%s",
				coreDNS, namespace, CustomConfigMap, reconciled)), nil
		}
		if found {
			if by := reconciledBy(cm); by != "" {
				return Hop{}, fmt.Errorf("%w: ConfigMap %s/%s is re-applied by %s, so an edit would be lost, and its Corefile imports no ConfigMap of *.server blocks. "+
					"Have the tool that manages CoreDNS add one (an `import /etc/coredns/custom/*.server` line and a ConfigMap volume mounted there, as k3s and AKS ship), "+
					"or pass --target explicitly if you know the edit will stay", ErrReconciled, namespace, CoreDNSConfigMap, by)
			}
		}
		return hop(CoreDNS, CoreDNSConfigMap, coreDNS), nil
	}

	_, err = deployments.Get(ctx, KubeDNSConfigMap, metav1.GetOptions{})
	if ok, err := deploymentExists(err, namespace, KubeDNSConfigMap); err != nil {
		return Hop{}, err
	} else if ok {
		return hop(KubeDNS, KubeDNSConfigMap, fmt.Sprintf("no CoreDNS, and Deployment %s/%s exists", namespace, KubeDNSConfigMap)), nil
	}
	_, err = cms.Get(ctx, KubeDNSConfigMap, metav1.GetOptions{})
	if ok, err := exists(err, KubeDNSConfigMap); err != nil {
		return Hop{}, err
	} else if ok {
		return hop(KubeDNS, KubeDNSConfigMap, fmt.Sprintf("no CoreDNS, and ConfigMap %s/%s exists", namespace, KubeDNSConfigMap)), nil
	}
	return Hop{}, fmt.Errorf("%w (no ConfigMap or Deployment coredns or kube-dns in namespace %s)", ErrUnknownDNS, namespace)
}

// importsCustom reports whether a Corefile imports the conventional custom/*.server directory
// (relative, as AKS writes it, or absolute, as k3s does).
func importsCustom(corefile string) bool {
	return slices.ContainsFunc(serverImports(corefile), func(imp string) bool {
		return imp == "custom/*.server" || imp == "/etc/coredns/custom/*.server"
	})
}

func deploymentExists(err error, namespace, name string) (bool, error) {
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		return false, nil
	}
	return false, fmt.Errorf("detecting the cluster DNS: Deployment %s/%s: %w", namespace, name, err)
}

// ParseZones parses a comma-separated list of zones, as --zones takes it: each lowercased,
// without a trailing dot, and a plain domain name.
func ParseZones(s string) ([]string, error) {
	var out []string
	for z := range strings.SplitSeq(s, ",") {
		z = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(z), "."))
		if z == "" {
			continue
		}
		// The text layer's own check: an empty stubDomains object holds any valid zone.
		if _, err := StubDomainServers("", z); err != nil {
			return nil, err
		}
		if !slices.Contains(out, z) {
			out = append(out, z)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no zone given")
	}
	return out, nil
}

// ParseServers parses a comma-separated list of IP or IP:PORT ([IPv6]:PORT), as --ip takes it.
// Port 53 and no port both become port 0, which the text layer writes as the default.
func ParseServers(s string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		ap, err := ParseServer(f)
		if err != nil {
			return nil, err
		}
		out = append(out, ap)
	}
	if len(out) == 0 {
		return nil, errors.New("no server address given")
	}
	return out, nil
}

// ParseServer parses one IP, IP:PORT or [IPv6]:PORT; see ParseServers.
func ParseServer(s string) (netip.AddrPort, error) {
	s = strings.TrimPrefix(s, "dns://") // as a Corefile's forward may write them
	bare := s
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		bare = s[1 : len(s)-1]
	}
	if a, err := netip.ParseAddr(bare); err == nil {
		return normalize(netip.AddrPortFrom(a, 0))
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad server address %q: want IP, IP:PORT or [IPv6]:PORT", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("bad server address %q: port 0", s)
	}
	return normalize(ap)
}

// normalize unmaps IPv4-mapped IPv6, drops zones, and turns port 53 into 0 (the default).
func normalize(ap netip.AddrPort) (netip.AddrPort, error) {
	a := ap.Addr().Unmap()
	if a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("bad server address %s: no zones", ap)
	}
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
		return netip.AddrPort{}, fmt.Errorf("bad server address %s", ap.Addr())
	}
	p := ap.Port()
	if p == 53 {
		p = 0
	}
	return netip.AddrPortFrom(a, p), nil
}

// ServiceServers returns the addresses that reach svc's DNS port: every spec.clusterIPs entry
// (both families of a dual-stack Service), on the port of its UDP port named "dns", else its
// UDP port 53, else its only UDP port.
func ServiceServers(svc *corev1.Service) ([]netip.AddrPort, error) {
	name := svc.Namespace + "/" + svc.Name
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	if len(ips) == 0 || ips[0] == corev1.ClusterIPNone {
		return nil, fmt.Errorf("Service %s has no cluster IP (headless or ExternalName): the cluster DNS needs a stable address", name)
	}
	port, err := dnsPort(svc)
	if err != nil {
		return nil, err
	}
	var out []netip.AddrPort
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("Service %s: bad cluster IP %q", name, ip)
		}
		ap, err := normalize(netip.AddrPortFrom(a, port))
		if err != nil {
			return nil, fmt.Errorf("Service %s: %w", name, err)
		}
		out = append(out, ap)
	}
	return out, nil
}

func dnsPort(svc *corev1.Service) (uint16, error) {
	var udp []corev1.ServicePort
	for _, p := range svc.Spec.Ports {
		if p.Protocol == corev1.ProtocolUDP {
			udp = append(udp, p)
		}
	}
	for _, p := range udp {
		if p.Name == "dns" {
			return uint16(p.Port), nil
		}
	}
	for _, p := range udp {
		if p.Port == 53 {
			return 53, nil
		}
	}
	if len(udp) == 1 {
		return uint16(udp[0].Port), nil
	}
	if len(udp) == 0 {
		return 0, fmt.Errorf("Service %s/%s has no UDP port for DNS", svc.Namespace, svc.Name)
	}
	return 0, fmt.Errorf("Service %s/%s has several UDP ports, none named dns or numbered 53: use --ip IP:PORT", svc.Namespace, svc.Name)
}

// FormatServers writes servers as --ip takes them, for messages.
func FormatServers(servers []netip.AddrPort) string {
	s := make([]string, len(servers))
	for i, ap := range servers {
		s[i] = formatServer(ap)
	}
	return strings.Join(s, ",")
}

func formatServer(ap netip.AddrPort) string {
	if ap.Port() == 0 {
		return ap.Addr().String()
	}
	return ap.String()
}
