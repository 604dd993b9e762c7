// Command coredns-istio is CoreDNS with its stock plugins plus istioglobal, which answers
// Istio's multicluster name.namespace.global names from ServiceEntries.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/core/plugin" // The stock CoreDNS plugins.
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns-istio/coredns-istio/plugin/istioglobal"
)

func init() {
	dnsserver.Directives = insertBefore(dnsserver.Directives, "forward", "istioglobal")
}

// insertBefore returns directives with name placed just before anchor, or appended when the
// anchor is missing, so istioglobal answers its zones before anything forwards them.
func insertBefore(directives []string, anchor, name string) []string {
	out := make([]string, 0, len(directives)+1)
	placed := false
	for _, d := range directives {
		if d == anchor && !placed {
			out = append(out, name)
			placed = true
		}
		out = append(out, d)
	}
	if !placed {
		out = append(out, name)
	}
	return out
}

func main() {
	coremain.Run()
}
