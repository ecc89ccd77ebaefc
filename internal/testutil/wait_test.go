package testutil

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// fatalTB records WaitFor's failure; Fatalf ends the goroutine as
// t.Fatalf does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// waitFor runs WaitFor on a goroutine of its own with a fatalTB and
// returns the failure message, "" if WaitFor returned.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) string {
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		WaitFor(f, d, what, cond)
	}()
	<-done
	return f.msg
}

func TestWaitForReturnsOnceCondHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		start := time.Now()
		if msg := waitFor(t, time.Second, "the fifth call", func() bool { calls++; return calls == 5 }); msg != "" {
			t.Fatal(msg)
		}
		// Pauses of 1, 2, 4 and 8 ms between the five calls.
		if waited := time.Since(start); calls != 5 || waited != 15*time.Millisecond {
			t.Fatalf("%d calls in %v, want 5 in 15ms", calls, waited)
		}
	})
}

func TestWaitForHoldingAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if msg := waitFor(t, 0, "nothing", func() bool { return true }); msg != "" || time.Since(start) != 0 {
			t.Fatalf("%q after %v, want a return at once", msg, time.Since(start))
		}
	})
}

func TestWaitForTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		start := time.Now()
		msg := waitFor(t, time.Second, "the impossible", func() bool { calls++; return false })
		waited := time.Since(start)
		if !strings.Contains(msg, "waiting for the impossible") || !strings.Contains(msg, waited.String()) {
			t.Fatalf("failure %q, want what and the %v waited", msg, waited)
		}
		if waited <= time.Second || waited > time.Second+maxPause {
			t.Fatalf("failed after %v, want just over 1s", waited)
		}
		// Pauses of at most maxPause: about 50 calls in a second.
		if calls < int(time.Second/maxPause) {
			t.Fatalf("%d calls in %v", calls, waited)
		}
	})
}
