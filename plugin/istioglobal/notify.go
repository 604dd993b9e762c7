package istioglobal

import (
	"sync"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/debounce"
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
	failing map[string]bool // zones whose last round failed; owned by run
}

func newNotifier(xfer *transfer.Transfer, zones []string) *notifier {
	return &notifier{notify: xfer.Notify, zones: zones, changed: debounce.New(0, 0, notifySpacing)}
}

// signal marks a published change. It never blocks.
func (n *notifier) signal() { n.changed.Signal() }

// run notifies every zone, all at once, after each burst of changes until stop is closed. The
// transfer plugin sends only to the secondaries its `to` names for a zone (nothing for a zone
// it does not transfer). A zone's failure is logged when it begins, and its end too.
func (n *notifier) run(stop <-chan struct{}) {
	n.failing = map[string]bool{}
	errs := make([]error, len(n.zones))
	for n.changed.Wait(stop) {
		var wg sync.WaitGroup
		for i, z := range n.zones {
			wg.Go(func() { errs[i] = n.notify(z) })
		}
		wg.Wait()
		for i, z := range n.zones {
			switch err := errs[i]; {
			case err != nil:
				notifies.WithLabelValues("failed").Inc()
				if !n.failing[z] {
					n.failing[z] = true
					log.Warningf("NOTIFY for %s failed: %v; its secondaries still poll at the SOA refresh", z, err)
				}
			default:
				notifies.WithLabelValues("sent").Inc()
				if n.failing[z] {
					delete(n.failing, z)
					log.Infof("NOTIFY for %s succeeds again", z)
				}
			}
		}
	}
}
