package istioglobal

import (
	"testing"
	"time"
)

// fakeClock is a serialClock whose time moves only when told to, or by the clock's own sleep.
func fakeClock(start time.Time) (*serialClock, *time.Time, *[]time.Duration) {
	now := start
	var slept []time.Duration
	c := &serialClock{now: func() time.Time { return now }}
	c.sleep = func(d time.Duration) { slept = append(slept, d); now = now.Add(d) }
	return c, &now, &slept
}

func TestSerialFollowsTheClock(t *testing.T) {
	start := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	c, now, slept := fakeClock(start)
	first := c.next()
	if want := uint32(start.UnixMilli() / 10); first != want {
		t.Fatalf("first serial %d, want the Unix time in hundredths of a second mod 2^32, %d", first, want)
	}
	*now = now.Add(3 * time.Second)
	if s := c.next(); s != first+300 {
		t.Errorf("serial 3 s later: %d, want %d", s, first+300)
	}
	if len(*slept) != 0 {
		t.Errorf("waited %v with the clock ahead", *slept)
	}
}

// Two tables in one tick: the second waits for the next tick rather than run ahead of the
// clock, which is what keeps a restarted process above its predecessor's serials.
func TestSerialNeverAheadOfTheClock(t *testing.T) {
	c, now, slept := fakeClock(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	prev := c.next()
	for range 100 {
		s := c.next()
		if !serialLess(prev, s) {
			t.Fatalf("serial %d after %d", s, prev)
		}
		if s != ticks(*now) {
			t.Fatalf("serial %d, clock at %d: ahead of it", s, ticks(*now))
		}
		prev = s
	}
	if len(*slept) != 100 || (*slept)[0] > serialTick {
		t.Errorf("slept %d times (first %v), want once per serial, at most one tick", len(*slept), (*slept)[0])
	}

	// A restart: a new clock, started later, begins above every serial of the old one.
	restarted, _, _ := fakeClock(now.Add(time.Second))
	if s := restarted.next(); !serialLess(prev, s) {
		t.Errorf("after a restart: serial %d, last before it %d", s, prev)
	}
}

func TestSerialSurvivesAClockStepBack(t *testing.T) {
	c, now, slept := fakeClock(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	first := c.next()
	*now = now.Add(-time.Hour)
	if s := c.next(); s != first+1 {
		t.Errorf("after the clock stepped back an hour: %d, want %d", s, first+1)
	}
	if len(*slept) != 0 {
		t.Errorf("waited %v for a clock an hour behind", *slept)
	}
}

func TestSerialWraps(t *testing.T) {
	// 2^32 hundredths of a second after the epoch, minus 5 ticks.
	beforeWrap := time.UnixMilli((1<<32 - 5) * 10)
	c, now, _ := fakeClock(beforeWrap)
	first := c.next()
	*now = now.Add(time.Second)
	second := c.next()
	if first != 1<<32-5 || second != 95 {
		t.Fatalf("serials %d, %d across the wrap, want %d, 95", first, second, uint32(1<<32-5))
	}
	if !serialLess(first, second) || serialLess(second, first) {
		t.Errorf("RFC 1982: %d should precede %d", first, second)
	}
}

// Serial 0 is skipped: the transfer plugin reads an IXFR from serial 0 as an AXFR.
func TestSerialSkipsZero(t *testing.T) {
	c, now, _ := fakeClock(time.UnixMilli((1<<32 - 1) * 10))
	last := c.next()
	*now = now.Add(serialTick)
	if s := c.next(); last != 1<<32-1 || s != 1 {
		t.Errorf("serials %d, %d at the wrap, want %d, 1", last, s, uint32(1<<32-1))
	}
}

func TestSerialLess(t *testing.T) {
	for _, tc := range []struct {
		a, b uint32
		less bool
	}{
		{1, 2, true}, {2, 1, false}, {7, 7, false},
		{0xffffffff, 0, true}, {0, 0xffffffff, false},
		{0, 1<<31 - 1, true}, {1<<31 - 1, 0, false},
		{0, 1 << 31, false}, {1 << 31, 0, false}, // undefined in RFC 1982: neither
	} {
		if got := serialLess(tc.a, tc.b); got != tc.less {
			t.Errorf("serialLess(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.less)
		}
	}
}
