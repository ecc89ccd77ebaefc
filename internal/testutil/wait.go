package testutil

import (
	"testing"
	"time"
)

// maxPause is the longest WaitFor sleeps between two calls of cond.
const maxPause = 20 * time.Millisecond

// WaitFor calls cond until it reports true, sleeping between calls (1 ms
// at first, doubling up to 20 ms), and fails the test if that has not
// happened after d: the failure names what was awaited and how long
// WaitFor waited. cond runs on the caller's goroutine, so it may fail the
// test itself on an error that waiting will not cure.
//
// WaitFor must be called from the goroutine running the test or benchmark
// (or one of its Cleanup functions), never from a goroutine the test
// started: it stops the test with t.Fatalf. Inside a testing/synctest
// bubble its sleeps advance the bubble's clock.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for pause := time.Millisecond; !cond(); pause = min(2*pause, maxPause) {
		if waited := time.Since(start); waited > d {
			t.Fatalf("timed out after %v waiting for %s", waited.Round(time.Millisecond), what)
		}
		time.Sleep(pause)
	}
}
