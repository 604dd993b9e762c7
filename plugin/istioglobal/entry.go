package istioglobal

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Entry is one ServiceEntry reduced to what the table needs. Sources (the Kubernetes API, YAML
// files) produce entries; the engine knows nothing about where they came from.
type Entry struct {
	Namespace, Name string
	Created         time.Time
	Hosts           []string
	Addresses       []string        // spec.addresses, exactly as written
	StatusAddresses []StatusAddress // status.addresses, written by Istio's allocator
	Ports           []Port
	ExportTo        []string
	Labels          map[string]string
}

// StatusAddress is an address Istio allocated for one host of an entry.
type StatusAddress struct{ Host, Value string }

// Port is a named port of an entry.
type Port struct {
	Name     string
	Number   uint32
	Protocol string
}

func (e *Entry) key() string { return e.Namespace + "/" + e.Name }

// exportPolicy decides from exportTo which entries a shared server answers for: it cannot see
// the namespace that asks, since the cluster DNS forwards for every pod.
type exportPolicy struct {
	meshOnly  bool     // serve only entries visible to every namespace ("visibility mesh")
	defaultTo []string // what an empty exportTo means (MeshConfig defaultServiceExportTo); nil: "*"
}

// scope is who may see an entry: every namespace (meshScope), or the namespaces it is exported
// to, sorted and comma-separated.
type scope string

const meshScope scope = "*"

// scopeOf returns the scope of an entry under p, or why it is not served: exported to no
// namespace ("~"), not mesh-wide under meshOnly, or an exportTo that Istio's validation rejects.
func (p exportPolicy) scopeOf(e *Entry) (scope, *Problem) {
	to, field := e.ExportTo, "exportTo"
	if len(to) == 0 {
		to, field = p.defaultTo, "exportTo (empty: the default)"
		if len(to) == 0 {
			return meshScope, nil
		}
	}
	problem := func(reason, why string) (scope, *Problem) {
		return "", &Problem{kindEntry, reason, e.key(), fmt.Sprintf("%s %q: %s", field, to, why)}
	}
	var namespaces []string
	mesh, none := false, false
	for _, v := range to {
		switch v {
		case "*":
			mesh = true
		case "~":
			none = true
		case ".":
			namespaces = append(namespaces, e.Namespace)
		default:
			if errs := validation.IsDNS1123Label(v); len(errs) > 0 {
				return problem(reasonInvalidExportTo, "not a namespace: "+errs[0])
			}
			namespaces = append(namespaces, v)
		}
	}
	switch {
	case none && len(to) > 1:
		return problem(reasonInvalidExportTo, `"~" (no namespace) must be the only value`)
	case mesh && len(to) > 1:
		return problem(reasonInvalidExportTo, `"*" (every namespace) must be the only value`)
	case none:
		return problem(reasonNotExported, "exported to no namespace")
	case mesh:
		return meshScope, nil
	case p.meshOnly:
		return problem(reasonNotExported, "not exported to every namespace (visibility mesh)")
	}
	slices.Sort(namespaces)
	return scope(strings.Join(slices.Compact(namespaces), ",")), nil
}

// String is the scope as the TXT facts and the logs show it.
func (s scope) String() string {
	if s == meshScope {
		return "*"
	}
	return "[" + string(s) + "]"
}

// same reports whether e and o are the same to the table: an event between them (a
// status-only update, a resync, a relist) changes no answer.
func (e *Entry) same(o *Entry) bool {
	return e.Namespace == o.Namespace && e.Name == o.Name && e.Created.Equal(o.Created) &&
		slices.Equal(e.Hosts, o.Hosts) && slices.Equal(e.Addresses, o.Addresses) &&
		slices.Equal(e.StatusAddresses, o.StatusAddresses) && slices.Equal(e.Ports, o.Ports) &&
		slices.Equal(e.ExportTo, o.ExportTo) && e.Labels[optOutLabel] == o.Labels[optOutLabel]
}

// What a skipped piece of input was.
const (
	kindEntry      = "entry"
	kindHost       = "host"
	kindAddress    = "address"
	kindPort       = "port"
	kindAllocation = "allocation" // an entry of the allocations ConfigMap
)

// Why it was skipped: the values of the reason label of the skipped_* metrics.
const (
	reasonNotExported     = "not_exported"      // exportTo is "~", or not "*" under visibility mesh
	reasonInvalidExportTo = "invalid_export_to" // an exportTo value Istio's validation rejects
	reasonScopeConflict   = "scope_conflict"    // entries of another scope declare other addresses for the host
	reasonNoHosts         = "no_hosts"          // spec.hosts is empty
	reasonUnparsable      = "unparsable"        // a YAML document that is not a ServiceEntry we can read
	reasonInvalidHost     = "invalid_host"      // not a DNS name, a bad wildcard, or the zone apex
	reasonInvalid         = "invalid"           // not an IP address or CIDR
	reasonCIDR            = "cidr"              // a CIDR wider than one address
	reasonUnspecified     = "unspecified"       // 0.0.0.0 or ::
	reasonTooMany         = "too_many"          // more than maxAddressesPerHost for one host
	reasonExhausted       = "exhausted"         // no free VIP left in the autoallocate ranges
	reasonNoVIP           = "no_vip"            // the persisted allocations held no VIP for pendingLimit
	reasonCorrupt         = "corrupt"           // an allocations entry that does not decode; its addresses stay held
)

// Problem is one piece of input that is not served, with enough detail to fix it.
type Problem struct {
	Kind, Reason string
	Entry        string // namespace/name, or the file for unparsable documents
	Detail       string
}

func (p Problem) String() string {
	if p.Kind == kindAllocation {
		return fmt.Sprintf("allocations ConfigMap %s: entry skipped (%s): %s", p.Entry, p.Reason, p.Detail)
	}
	return fmt.Sprintf("ServiceEntry %s: %s skipped (%s): %s", p.Entry, p.Kind, p.Reason, p.Detail)
}

// compareEntryPtrs is entry order: oldest first, then by namespace/name, so that the union of
// addresses for a host is stable whatever order the sources list them in.
func compareEntryPtrs(a, b *Entry) int {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}
