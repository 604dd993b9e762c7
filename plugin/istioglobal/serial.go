package istioglobal

import (
	"sync"
	"time"
)

// serialTick is the unit of the SOA serial: the serial is the Unix time in hundredths of a
// second, modulo 2^32 (it wraps every 497 days, which RFC 1982 serial arithmetic handles),
// skipping 0.
const serialTick = 10 * time.Millisecond

// serialClock hands out SOA serials that grow with every published table (RFC 1982) and never
// go backwards, across reloads (one clock per process) and across restarts: a serial is never
// ahead of the clock, because next waits for the next tick rather than run ahead of it. A new
// process therefore starts above every serial its predecessor published, as long as the wall
// clock did not step back meanwhile. Within a process a clock that steps back is bridged by
// counting on from the last serial. Replicas each publish their own serials: two replicas
// serving the same entries agree on the answers, not on the serial (it tells when each built
// its table).
type serialClock struct {
	mu    sync.Mutex
	last  uint32
	used  bool
	now   func() time.Time
	sleep func(time.Duration)
}

// serials is the process's clock, shared by every instance so that a reloaded server's first
// serial is above its predecessor's last.
var serials = &serialClock{now: time.Now, sleep: time.Sleep}

// ticks is t's serial value.
func ticks(t time.Time) uint32 { return uint32(t.UnixMilli() / serialTick.Milliseconds()) }

// serialLess reports whether a comes before b in RFC 1982 serial arithmetic (SERIAL_BITS 32).
func serialLess(a, b uint32) bool { return a != b && int32(b-a) > 0 }

// next returns a serial after every one it returned before. It may wait up to one tick.
func (c *serialClock) next() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := ticks(c.now())
	if c.used && !serialLess(c.last, s) {
		if behind := c.last - s; behind > 1 {
			// The clock stepped back: count on rather than wait for it to catch up.
			s = c.last + 1
		} else {
			c.sleep(time.Duration(behind+1) * serialTick)
			if s = ticks(c.now()); !serialLess(c.last, s) {
				s = c.last + 1
			}
		}
	}
	if s == 0 {
		s = 1 // to the transfer plugin serial 0 means AXFR: an IXFR from it could never be one
	}
	c.last, c.used = s, true
	return s
}
