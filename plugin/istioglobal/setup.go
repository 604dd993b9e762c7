package istioglobal

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coredns-istio/coredns-istio/plugin/istioglobal/vip"
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/coredns/coredns/plugin/transfer"
	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/util/validation"
)

var log = clog.NewWithPlugin("istioglobal")

const (
	defaultTTL = 30
	maxTTL     = 3600
	// defaultGrace is how long a deleted host's VIP stays unused: far longer than any TTL, so no
	// cached answer can point at a VIP that has been handed to another host.
	defaultGrace = time.Hour
)

func init() { plugin.Register("istioglobal", setup) }

func setup(c *caddy.Controller) error {
	ig, err := parse(c)
	if err != nil {
		return plugin.Error("istioglobal", err)
	}
	server, block, keys := dnsserver.GetConfig(c), c.ServerBlockIndex, c.ServerBlockKeys
	ig.identity = func() string { return lineageKey(block, keys, server.ListenHosts, server.ViewName, ig.Zones) }
	c.OnStartup(func() error {
		// The transfer plugin of this server block, if any, to NOTIFY its secondaries.
		ig.xfer, _ = server.Handler("transfer").(*transfer.Transfer)
		return nil
	})
	c.OnStartup(ig.start)
	c.OnShutdown(ig.shutdown)
	c.OnRestartFailed(ig.resume)
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		ig.Next = next
		return ig
	})
	return nil
}

// parse reads the istioglobal block and builds the plugin with its sources, which read
// nothing until started:
//
//	istioglobal [ZONES...] {
//	    kubeconfig [KUBECONFIG [CONTEXT]]
//	    files PATH...
//	    namespaces NAMESPACE...
//	    ttl SECONDS
//	    fallthrough [ZONES...]
//	    txt on | off
//	    visibility any | mesh
//	    default_export_to VALUE...
//	    autoallocate CIDR... | off
//	    allocations NAMESPACE/NAME [GRACE]
//	    nameserver ADDRESS... | NAME
//	}
func parse(c *caddy.Controller) (*IstioGlobal, error) {
	ig := newIstioGlobal()
	var kube *kubeSource
	var files []string
	ranges, grace := vip.DefaultRanges, defaultGrace
	var allocations *[2]string // namespace, name
	var ns *nameServer
	for i := 0; c.Next(); i++ {
		if i > 0 {
			return nil, plugin.ErrOnce
		}
		ig.Zones = plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
		if len(ig.Zones) > maxZones {
			return nil, c.Errf("%d zones: at most %d", len(ig.Zones), maxZones)
		}
		for c.NextBlock() {
			var err error
			switch c.Val() {
			case "kubeconfig":
				if kube != nil {
					return nil, c.Err("kubeconfig given more than once")
				}
				kube, err = parseKubeconfig(c.RemainingArgs())
			case "files":
				var paths []string
				paths, err = parseFiles(c.RemainingArgs(), dnsserver.GetConfig(c).Root)
				files = append(files, paths...)
			case "namespaces":
				ig.namespaces, err = parseNamespaces(c.RemainingArgs())
			case "ttl":
				ig.ttl, err = parseTTL(c.RemainingArgs())
			case "fallthrough":
				ig.Fall.SetZonesFromArgs(c.RemainingArgs())
			case "txt":
				ig.txt, err = parseOnOff(c.RemainingArgs())
			case "debug": // the name of the TXT option until 0.4; CoreDNS has a debug plugin
				log.Warning(`"debug" is deprecated: it is "txt" now (and off by default)`)
				ig.txt, err = parseOnOff(c.RemainingArgs())
			case "visibility":
				ig.export.meshOnly, err = parseVisibility(c.RemainingArgs())
			case "default_export_to":
				ig.export.defaultTo, err = parseDefaultExportTo(c.RemainingArgs())
			case "autoallocate":
				ranges, err = parseRanges(c.RemainingArgs())
			case "allocations":
				allocations = new([2]string)
				allocations[0], allocations[1], grace, err = parseAllocations(c.RemainingArgs())
			case "nameserver":
				ns = new(nameServer)
				*ns, err = parseNameServer(c.RemainingArgs(), ig.Zones)
			default:
				return nil, c.Errf("unknown property %q", c.Val())
			}
			if err != nil {
				return nil, c.Errf("%s: %v", c.Val(), err)
			}
		}
	}
	if ns == nil {
		ns = new(nameServer)
		*ns = defaultNameServer(ig.Zones, dnsserver.GetConfig(c).ListenHosts)
		if len(ns.addrs) == 0 {
			log.Warningf("nameserver not set and no bind address: %s, the zones' NS, has no address; "+
				"give nameserver the addresses clients reach this server at, or a name that resolves elsewhere", ns.name)
		}
	}
	ig.ns = *ns
	if len(files) > 0 {
		ig.sources = append(ig.sources, newFileSource(files))
	}
	if kube == nil && len(files) == 0 {
		kube = &kubeSource{} // neither given: the cluster we run in
	}
	if kube != nil {
		if err := kube.loadConfig(); err != nil {
			return nil, c.Errf("kubeconfig: %v", err)
		}
		kube.namespaces = ig.namespaces
		ig.sources = append(ig.sources, kube)
	}
	if len(ranges) > 0 {
		a, err := vip.New(ranges, grace)
		if err != nil {
			return nil, c.Errf("autoallocate: %v", err)
		}
		ig.allocator = a
	}
	if allocations != nil {
		switch {
		case ig.allocator == nil:
			return nil, c.Err("allocations: needs autoallocate, which is off")
		case kube == nil:
			return nil, c.Err("allocations: needs the Kubernetes API; add kubeconfig")
		}
		ig.store = vip.NewStore(allocations[0], allocations[1], kube.config, ig.allocator)
		ig.sources = append(ig.sources, storeSource{ig.store, &ig.storeChanged})
	}
	return ig, nil
}

// parseVisibility reads `visibility any | mesh`: whether only mesh-wide entries are served.
func parseVisibility(args []string) (meshOnly bool, err error) {
	if len(args) == 1 && (args[0] == "any" || args[0] == "mesh") {
		return args[0] == "mesh", nil
	}
	return false, fmt.Errorf("want any (every entry exported to some namespace) or mesh (only those exported to every namespace)")
}

// parseDefaultExportTo reads `default_export_to VALUE...`: what an empty exportTo means, as
// Istio's MeshConfig defaultServiceExportTo says it; the values are checked as an entry's are.
func parseDefaultExportTo(args []string) ([]string, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf(`needs values: "*", ".", "~" or namespaces`)
	}
	probe := &Entry{Namespace: "default", ExportTo: args}
	if _, p := (exportPolicy{}).scopeOf(probe); p != nil && p.Reason == reasonInvalidExportTo {
		return nil, fmt.Errorf("%s", strings.TrimPrefix(p.Detail, "exportTo "))
	}
	return args, nil
}

// parseRanges reads `autoallocate CIDR... | off`; off is no ranges.
func parseRanges(args []string) ([]netip.Prefix, error) {
	if len(args) == 1 && args[0] == "off" {
		return nil, nil
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("needs CIDRs, or off")
	}
	ranges := make([]netip.Prefix, len(args))
	for i, a := range args {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", a)
		}
		ranges[i] = p
	}
	return ranges, nil
}

// parseAllocations reads `allocations NAMESPACE/NAME [GRACE]`.
func parseAllocations(args []string) (namespace, name string, grace time.Duration, err error) {
	if len(args) < 1 || len(args) > 2 {
		return "", "", 0, fmt.Errorf("needs NAMESPACE/NAME of a ConfigMap, and optionally a grace period")
	}
	namespace, name, ok := strings.Cut(args[0], "/")
	if !ok || len(validation.IsDNS1123Label(namespace)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return "", "", 0, fmt.Errorf("%q is not NAMESPACE/NAME of a ConfigMap", args[0])
	}
	grace = defaultGrace
	if len(args) == 2 {
		if grace, err = time.ParseDuration(args[1]); err != nil || grace < 0 {
			return "", "", 0, fmt.Errorf("grace %q is not a duration such as 1h", args[1])
		}
	}
	return namespace, name, grace, nil
}

func parseKubeconfig(args []string) (*kubeSource, error) {
	switch len(args) {
	case 0:
		return &kubeSource{}, nil
	case 1:
		return &kubeSource{kubeconfig: args[0]}, nil
	case 2:
		return &kubeSource{kubeconfig: args[0], context: args[1]}, nil
	}
	return nil, fmt.Errorf("takes at most a path and a context, got %d arguments", len(args))
}

func parseFiles(args []string, root string) ([]string, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("needs at least one path")
	}
	paths := make([]string, len(args))
	for i, p := range args {
		if !filepath.IsAbs(p) && root != "" {
			p = filepath.Join(root, p)
		}
		if err := checkReadable(p); err != nil {
			return nil, err
		}
		paths[i] = p
	}
	return paths, nil
}

func parseNamespaces(args []string) ([]string, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("needs at least one namespace")
	}
	for _, ns := range args {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("%q is not a namespace name: %s", ns, strings.Join(errs, "; "))
		}
	}
	return args, nil
}

func parseTTL(args []string) (uint32, error) {
	if len(args) != 1 {
		return 0, fmt.Errorf("needs exactly one number of seconds")
	}
	ttl, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil || ttl > maxTTL {
		return 0, fmt.Errorf("%q is not a number of seconds from 0 to %d", args[0], maxTTL)
	}
	return uint32(ttl), nil
}

func parseOnOff(args []string) (bool, error) {
	if len(args) == 1 && (args[0] == "on" || args[0] == "off") {
		return args[0] == "on", nil
	}
	return false, fmt.Errorf("needs on or off")
}

// parseNameServer reads `nameserver ADDRESS... | NAME`: the addresses that the zones' NS target
// (ns.dns.ZONE) answers, or a name outside the zones that resolves elsewhere.
func parseNameServer(args []string, zones []string) (nameServer, error) {
	if len(args) == 0 {
		return nameServer{}, fmt.Errorf("needs the addresses this server is reached at, or a name outside the zones")
	}
	if _, err := netip.ParseAddr(args[0]); err != nil && len(args) == 1 {
		name := dns.Fqdn(strings.ToLower(args[0]))
		if _, ok := dns.IsDomainName(name); !ok || strings.Contains(name, "*") {
			return nameServer{}, fmt.Errorf("%q is neither an IP address nor a DNS name", args[0])
		}
		if plugin.Zones(zones).Matches(name) != "" {
			return nameServer{}, fmt.Errorf("%q is inside the zones served here: give addresses instead, and the NS is ns.dns.ZONE", args[0])
		}
		return nameServer{name: name}, nil
	}
	ns := nameServer{name: defaultNameServer(zones, nil).name}
	for _, arg := range args {
		a, err := netip.ParseAddr(arg)
		if err != nil || a.Zone() != "" || a.IsUnspecified() {
			return nameServer{}, fmt.Errorf("%q is not an IP address", arg)
		}
		ns.addrs = append(ns.addrs, a.Unmap())
	}
	return ns, nil
}

// defaultNameServer is ns.dns. followed by the first zone that is not a reverse zone (as the
// kubernetes plugin names its NS), answering the server's bind addresses if it has specific ones.
func defaultNameServer(zones, listenHosts []string) nameServer {
	if len(zones) == 0 {
		return nameServer{name: "ns.dns."}
	}
	zone := zones[0]
	for _, z := range zones {
		if !dns.IsSubDomain("arpa.", z) {
			zone = z
			break
		}
	}
	ns := nameServer{name: "ns.dns." + zone}
	if zone == "." {
		ns.name = "ns.dns."
	}
	for _, h := range listenHosts {
		a, err := netip.ParseAddr(h)
		if err != nil || a.IsUnspecified() {
			return nameServer{name: ns.name}
		}
		ns.addrs = append(ns.addrs, a.Unmap().WithZone(""))
	}
	return ns
}
