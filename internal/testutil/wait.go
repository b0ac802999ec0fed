// Package testutil holds helpers shared by keygate's tests.
package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond every interval (10 ms by default) until it returns true, and fails the
// test with what (and how long it waited) if timeout passes first. It returns how long it
// took, for tests that report latencies.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	return WaitEvery(tb, timeout, 10*time.Millisecond, what, cond)
}

// WaitEvery is WaitFor with its own polling interval.
func WaitEvery(tb testing.TB, timeout, interval time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}
