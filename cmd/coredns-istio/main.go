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

// http2Health are client-go's HTTP/2 health-check settings (k8s.io/apimachinery util/net), unless
// the environment sets them: a ping after 10 s without a frame, and the connection given up 5 s
// later. client-go's own 30 s + 15 s let a half-open connection (a network partition, a
// restarted load balancer) hold a watch for 45 s before anything notices.
var http2Health = map[string]string{"HTTP2_READ_IDLE_TIMEOUT_SECONDS": "10", "HTTP2_PING_TIMEOUT_SECONDS": "5"}

func main() {
	for k, v := range http2Health {
		if _, set := os.LookupEnv(k); !set {
			os.Setenv(k, v)
		}
	}
	// `coredns-istio stubdomain ...` wires the cluster DNS to coredns-istio; anything else is
	// CoreDNS's own command line.
	if len(os.Args) > 1 && os.Args[1] == "stubdomain" {
		os.Exit(stubdomainMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	coremain.Run()
}
