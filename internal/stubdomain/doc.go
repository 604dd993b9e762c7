// Package stubdomain wires a cluster's DNS to forward one zone (by default Istio's `global`) to
// coredns-istio without losing anybody else's configuration.
//
// kubedns.go, corefile.go and diff.go are the pure text-editing layer: string in, string out,
// no Kubernetes API calls. There are three targets, one per kind of cluster DNS.
//
// # kube-dns: the stubDomains key
//
// The `stubDomains` key of the kube-system/kube-dns ConfigMap is a JSON object mapping a domain
// to its name servers:
//
//	{"acme.local": ["1.2.3.4"], "global": ["10.0.0.53", "[fd00::35]:5353"]}
//
// SetStubDomain, RemoveStubDomain and StubDomainServers edit the one entry for the zone and keep
// every other domain, its value and its position.
//
// # CoreDNS: the Corefile key
//
// The `Corefile` key of the kube-system/coredns ConfigMap. SetServerBlock appends (or replaces in
// place) one server block for the zone between two marker comments:
//
//	# BEGIN coredns-istio stubdomain global (managed by `coredns-istio stubdomain`; do not edit)
//	global:53 {
//	    errors
//	    cache 30
//	    forward . 10.0.0.53 fd00::35
//	}
//	# END coredns-istio stubdomain global
//
// Nothing outside the markers changes, byte for byte, and RemoveServerBlock takes exactly that
// block (and the blank line before it) back out. A server block for the zone that is not between
// our markers is somebody else's: SetServerBlock refuses with ErrForeignBlock rather than fight
// it. Every result is checked with CoreDNS's own Corefile parser (ValidateCorefile) before it is
// returned, so a caller never writes a Corefile that CoreDNS would reject.
//
// # AKS: a coredns-custom <name>.server key
//
// AKS manages the coredns ConfigMap itself and imports the kube-system/coredns-custom ConfigMap
// instead: its `<name>.server` keys become extra server blocks (`import custom/*.server`).
// ServerBlock renders the same marked block on its own for such a key.
//
// UnifiedDiff renders any of these edits as a unified diff for --dry-run.
package stubdomain
