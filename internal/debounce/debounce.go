// Package debounce turns a burst of change signals into one run of whatever reads the changes:
// the plugin's table builds, its files source, and the stubdomain watcher all wait this way.
package debounce

import "time"

// Burst collects signals into bursts. A burst begins with a signal and ends Quiet after its
// last signal, or Max after its first (0: no bound), but not sooner than Spacing after the
// previous burst ended. One goroutine waits; any may signal.
type Burst struct {
	Quiet, Max, Spacing time.Duration

	signal chan struct{}
	last   time.Time // when the previous burst ended
}

// New returns a Burst with the given timings.
func New(quiet, max, spacing time.Duration) *Burst {
	return &Burst{Quiet: quiet, Max: max, Spacing: spacing, signal: make(chan struct{}, 1)}
}

// Signal marks a change. It never blocks: signals before the next Wait are one.
func (b *Burst) Signal() {
	select {
	case b.signal <- struct{}{}:
	default: // a burst is pending already and will see this change
	}
}

// Wait blocks until a burst has begun and ended, and reports true; false when stop closed
// first. Signals that arrive while it waits belong to the burst it returns for: the caller reads
// the changes after Wait, so they must not begin another.
func (b *Burst) Wait(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return false
	case <-b.signal:
	}
	quiet := time.NewTimer(b.Quiet)
	defer quiet.Stop()
	var bound <-chan time.Time
	if b.Max > 0 {
		t := time.NewTimer(b.Max)
		defer t.Stop()
		bound = t.C
	}
settle:
	for {
		select {
		case <-stop:
			return false
		case <-b.signal:
			quiet.Reset(b.Quiet)
		case <-quiet.C:
			break settle
		case <-bound:
			break settle
		}
	}
	if d := b.Spacing - time.Since(b.last); d > 0 {
		spaced := time.NewTimer(d)
		defer spaced.Stop()
		select {
		case <-stop:
			return false
		case <-spaced.C:
		}
	}
	select {
	case <-b.signal:
	default:
	}
	b.last = time.Now()
	return true
}
