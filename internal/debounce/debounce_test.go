package debounce

import (
	"testing"
	"time"
)

// waits reports how many bursts Wait returned for until stop closes.
func waits(b *Burst, stop chan struct{}) <-chan int {
	n := make(chan int, 1)
	go func() {
		count := 0
		for b.Wait(stop) {
			count++
		}
		n <- count
	}()
	return n
}

func TestBurstIsOneWait(t *testing.T) {
	b := New(20*time.Millisecond, 0, 0)
	stop := make(chan struct{})
	n := waits(b, stop)
	for range 50 {
		b.Signal()
		time.Sleep(time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	if got := <-n; got != 1 {
		t.Errorf("a burst of 50 signals gave %d waits, want 1", got)
	}
}

// A burst that never goes quiet still ends Max after its first signal.
func TestMaxBoundsABurst(t *testing.T) {
	b := New(50*time.Millisecond, 100*time.Millisecond, 0)
	stop := make(chan struct{})
	ended := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		if b.Wait(stop) {
			ended <- time.Since(start)
		}
	}()
	done := time.After(time.Second)
	for {
		b.Signal()
		select {
		case d := <-ended:
			close(stop)
			if d < 100*time.Millisecond {
				t.Errorf("ended after %v, before Max", d)
			}
			return
		case <-done:
			t.Fatal("an unquiet burst did not end at Max")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// With no quiet time, a signal after a quiet spell ends its burst at once, and the next burst
// waits for Spacing.
func TestSpacing(t *testing.T) {
	b := New(0, 0, 200*time.Millisecond)
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	b.Signal()
	if !b.Wait(stop) {
		t.Fatal("Wait false")
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("first burst took %v: want at once", d)
	}
	b.Signal()
	if !b.Wait(stop) {
		t.Fatal("Wait false")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("second burst after %v: want Spacing", d)
	}
}

// A signal while the caller works (between Waits) begins the next burst; one during Wait does not.
func TestSignalsDuringWaitBelongToIt(t *testing.T) {
	b := New(10*time.Millisecond, 0, 0)
	stop := make(chan struct{})
	b.Signal()
	go func() { time.Sleep(3 * time.Millisecond); b.Signal() }()
	if !b.Wait(stop) {
		t.Fatal("Wait false")
	}
	next := make(chan bool, 1)
	go func() { next <- b.Wait(stop) }()
	select {
	case <-next:
		t.Fatal("a signal inside the burst began another")
	case <-time.After(50 * time.Millisecond):
	}
	b.Signal()
	select {
	case ok := <-next:
		if !ok {
			t.Fatal("Wait false")
		}
	case <-time.After(time.Second):
		t.Fatal("a signal after the burst did not begin another")
	}
	close(stop)
}

func TestStop(t *testing.T) {
	b := New(time.Hour, 0, 0)
	stop := make(chan struct{})
	b.Signal()
	go func() { time.Sleep(10 * time.Millisecond); close(stop) }()
	if b.Wait(stop) {
		t.Fatal("Wait true after stop")
	}
}
