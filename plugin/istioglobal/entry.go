package istioglobal

import (
	"cmp"
	"fmt"
	"slices"
	"time"
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

// exported reports whether the entry is visible mesh-wide, the only entries a shared DNS
// server may answer for.
func (e *Entry) exported() bool {
	return len(e.ExportTo) == 0 || slices.Contains(e.ExportTo, "*")
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
	reasonNotExported = "not_exported" // exportTo does not include "*"
	reasonNoHosts     = "no_hosts"     // spec.hosts is empty
	reasonUnparsable  = "unparsable"   // a YAML document that is not a ServiceEntry we can read
	reasonInvalidHost = "invalid_host" // not a DNS name, a bad wildcard, or the zone apex
	reasonInvalid     = "invalid"      // not an IP address or CIDR
	reasonCIDR        = "cidr"         // a CIDR wider than one address
	reasonUnspecified = "unspecified"  // 0.0.0.0 or ::
	reasonTooMany     = "too_many"     // more than maxAddressesPerHost for one host
	reasonExhausted   = "exhausted"    // no free VIP left in the autoallocate ranges
	reasonCorrupt     = "corrupt"      // an allocations entry that does not decode; its addresses stay held
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
