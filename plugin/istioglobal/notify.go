package istioglobal

import (
	"strings"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/debounce"
	"github.com/coredns-istio/coredns-istio/internal/logonce"
	"github.com/coredns/coredns/plugin/transfer"
)

// notifySpacing is the least time between two rounds of NOTIFY (RFC 1996): the first change
// after a quiet spell is notified at once, a burst costs a round per spacing, not one per change.
const notifySpacing = 500 * time.Millisecond

// notifier tells the transfer plugin's secondaries that the zones changed, off the builder's
// path: transfer.Notify waits for every secondary's answer, with retries.
type notifier struct {
	notify  func(zone string) error // transfer.Transfer.Notify
	zones   []string
	changed *debounce.Burst
	failed  logonce.Set // the failures logged, until a round succeeds
}

func newNotifier(xfer *transfer.Transfer, zones []string) *notifier {
	return &notifier{notify: xfer.Notify, zones: zones, changed: debounce.New(0, 0, notifySpacing)}
}

// signal marks a published change. It never blocks.
func (n *notifier) signal() { n.changed.Signal() }

// run notifies every zone after each burst of changes until stop is closed. The transfer
// plugin sends only to the secondaries its `to` names for a zone, and nothing for zones it
// does not transfer.
func (n *notifier) run(stop <-chan struct{}) {
	for n.changed.Wait(stop) {
		var failures []string
		for _, z := range n.zones {
			if err := n.notify(z); err != nil {
				notifies.WithLabelValues("failed").Inc()
				failures = append(failures, strings.ReplaceAll(err.Error(), "\n", "; "))
				continue
			}
			notifies.WithLabelValues("sent").Inc()
		}
		n.failed.Replace(failures)
		n.failed.Flush(func(s string) { log.Warningf("NOTIFY: %s; the secondaries still poll at the SOA refresh", s) })
	}
}
