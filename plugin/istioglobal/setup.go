package istioglobal

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"k8s.io/apimachinery/pkg/util/validation"
)

var log = clog.NewWithPlugin("istioglobal")

const (
	defaultTTL = 30
	maxTTL     = 3600
)

func init() { plugin.Register("istioglobal", setup) }

func setup(c *caddy.Controller) error {
	ig, err := parse(c)
	if err != nil {
		return plugin.Error("istioglobal", err)
	}
	c.OnStartup(ig.start)
	c.OnShutdown(ig.shutdown)
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
//	}
func parse(c *caddy.Controller) (*IstioGlobal, error) {
	ig := newIstioGlobal()
	var kube *kubeSource
	var files []string
	for i := 0; c.Next(); i++ {
		if i > 0 {
			return nil, plugin.ErrOnce
		}
		ig.Zones = plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
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
			default:
				return nil, c.Errf("unknown property %q", c.Val())
			}
			if err != nil {
				return nil, c.Errf("%s: %v", c.Val(), err)
			}
		}
	}
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
	return ig, nil
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
