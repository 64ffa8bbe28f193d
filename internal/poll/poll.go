// Package poll waits in tests for a condition to hold: the one polling
// loop of the tests, in place of a loop with a sleep of each test's own.
// It backs off gently, from 10 ms doubling to 100 ms between tries, and
// fails the test with what it awaited. It is for tests only.
//
// Its waits are on the time package's clock, so they run on the fake
// clock inside a testing/synctest bubble too.
package poll

import (
	"testing"
	"time"
)

// The pauses between tries: the first, doubling up to the last.
const (
	first = 10 * time.Millisecond
	last  = 100 * time.Millisecond
)

// Wait calls cond until it returns true or timeout has passed, pausing
// between calls, and reports whether cond returned true. cond is called
// at least once, and once more at the end of timeout. For a test that
// says itself what failed; Until fails it.
func Wait(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	pause := first
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(pause, left))
		pause = min(2*pause, last)
	}
}

// Until calls cond until it returns true, and fails t if it does not
// within timeout: "timed out after <timeout> waiting until <what>".
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Wait(timeout, cond) {
		t.Fatalf("timed out after %v waiting until %s", timeout, what)
	}
}

// UntilNil calls f until it returns nil, and fails t if it does not within
// timeout, with what and the last error f returned.
func UntilNil(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	var err error
	if !Wait(timeout, func() bool { err = f(); return err == nil }) {
		t.Fatalf("timed out after %v waiting until %s: %v", timeout, what, err)
	}
}
