package istioglobal

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/debounce"
)

// A burst of 200 changes a second costs a NOTIFY round per notifySpacing, not one per change;
// the first goes out at once, and the last change is always notified.
func TestNotifyCoalesces(t *testing.T) {
	var mu sync.Mutex
	var rounds []time.Time
	n := &notifier{zones: []string{"global.", "in-addr.arpa."}, changed: debounce.New(0, 0, notifySpacing)}
	n.notify = func(zone string) error {
		mu.Lock()
		defer mu.Unlock()
		if zone == "global." {
			rounds = append(rounds, time.Now())
		}
		if zone == "in-addr.arpa." {
			return errors.New("no secondary answers")
		}
		return nil
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); n.run(stop) }()

	start := time.Now()
	for range 200 {
		n.signal()
		time.Sleep(5 * time.Millisecond)
	}
	burst := time.Since(start)
	time.Sleep(2 * notifySpacing)
	close(stop)
	<-done

	mu.Lock()
	defer mu.Unlock()
	if len(rounds) == 0 || rounds[0].Sub(start) > 100*time.Millisecond {
		t.Fatalf("first NOTIFY %v after the first change, want at once", rounds)
	}
	if max := int(burst/notifySpacing) + 2; len(rounds) > max || len(rounds) < 2 {
		t.Errorf("%d NOTIFY rounds for 200 changes over %v, want 2 to %d", len(rounds), burst, max)
	}
	if last := rounds[len(rounds)-1]; last.Before(start.Add(burst - notifySpacing)) {
		t.Errorf("the last round was %v after the start; the burst ran %v: its last change was not notified", last.Sub(start), burst)
	}
	if !n.failing["in-addr.arpa."] || n.failing["global."] {
		t.Errorf("failing zones %v, want in-addr.arpa. only", n.failing)
	}
	for i := 1; i < len(rounds); i++ {
		if gap := rounds[i].Sub(rounds[i-1]); gap < notifySpacing-10*time.Millisecond {
			t.Errorf("rounds %d and %d %v apart, want at least %v", i-1, i, gap, notifySpacing)
		}
	}
}
