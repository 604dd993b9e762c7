// Package poll is for unit tests of several packages: waiting until a condition holds.
package poll

import (
	"testing"
	"time"
)

// Until polls cond every 10 ms until it returns nil, and fails the test with cond's last
// error once timeout has passed. cond must return errors, not call t.Fatal, to be retried.
func Until(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
