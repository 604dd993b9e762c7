// Command coredns-istio is CoreDNS with its stock plugins plus istioglobal, which answers
// Istio's multicluster name.namespace.global names from ServiceEntries.
package main

import (
	"os"

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
	// `coredns-istio stubdomain ...` wires the cluster DNS to coredns-istio; anything else is
	// CoreDNS's own command line.
	if len(os.Args) > 1 && os.Args[1] == "stubdomain" {
		os.Exit(stubdomainMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	coremain.Run()
}
