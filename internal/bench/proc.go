package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// A server may be several processes (NATS nodes, sequencers, gateways):
// its CPU time and resident memory are those of all of them, summed.

// readCPU returns utime+stime of the processes pids, summed, in seconds;
// -1 if there are none or one of them cannot be read (it has exited).
func readCPU(pids []int) float64 {
	if len(pids) == 0 {
		return -1
	}
	var sum float64
	for _, pid := range pids {
		s := cpuOf(pid)
		if s < 0 {
			return -1
		}
		sum += s
	}
	return sum
}

// cpuEach returns utime+stime of each of the processes pids, in seconds;
// nil if there are none or one of them cannot be read.
func cpuEach(pids []int) []float64 {
	if len(pids) == 0 {
		return nil
	}
	out := make([]float64, len(pids))
	for i, pid := range pids {
		if out[i] = cpuOf(pid); out[i] < 0 {
			return nil
		}
	}
	return out
}

// cpuOf returns utime+stime of pid in seconds, or -1.
func cpuOf(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	return parseStatCPU(string(b))
}

// parseStatCPU returns utime+stime in seconds from the text of
// /proc/<pid>/stat, or -1.
func parseStatCPU(s string) float64 {
	// Fields after the command name (which is in parentheses and may
	// hold spaces and parentheses itself).
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return -1
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (ut + st) / clockTicks
}

// clockTicks is USER_HZ, 100 on Linux for every common architecture.
const clockTicks = 100

// readRSS returns the resident sets of the processes pids, summed, in
// bytes; -1 if there are none or one of them cannot be read.
func readRSS(pids []int) int64 {
	if len(pids) == 0 {
		return -1
	}
	var sum int64
	for _, pid := range pids {
		n := rssOf(pid)
		if n < 0 {
			return -1
		}
		sum += n
	}
	return sum
}

// rssOf returns the resident set of pid in bytes, or -1.
func rssOf(pid int) int64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return -1
}
