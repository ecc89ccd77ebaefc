package bench

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	for name, tc := range map[string]struct {
		stat string
		want float64
	}{
		// utime 250, stime 50 ticks; the command name holds ") " itself.
		"odd command name": {"42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0", 3},
		"short":            {"42 (a) S 1 42", -1},
		"no command":       {"garbage", -1},
	} {
		if got := parseStatCPU(tc.stat); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

// A server of several processes is charged the CPU and memory of all of
// them; one that cannot be read spoils the sum rather than shrinking it.
func TestReadingsSumOverProcesses(t *testing.T) {
	self := os.Getpid()
	for start, x := time.Now(), 0; readCPU([]int{self}) < 0.02 && time.Since(start) < 2*time.Second; x++ {
		_ = x * x // some CPU time to read
	}
	one, two := readCPU([]int{self}), readCPU([]int{self, self})
	if one <= 0 || two < 2*one || two > 2*one+0.05 {
		t.Fatalf("CPU of one process %v, of it twice %v", one, two)
	}
	rss1, rss2 := readRSS([]int{self}), readRSS([]int{self, self})
	if rss1 <= 0 || rss2 < 2*rss1*9/10 || rss2 > 2*rss1*11/10 {
		t.Fatalf("RSS of one process %d, of it twice %d", rss1, rss2)
	}
	const gone = 1 << 30 // above pid_max
	if readCPU([]int{self, gone}) != -1 || readRSS([]int{self, gone}) != -1 || readCPU(nil) != -1 || readRSS(nil) != -1 {
		t.Fatal("a process that cannot be read, or none, gives a figure")
	}
}
