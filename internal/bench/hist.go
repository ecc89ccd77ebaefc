package bench

import (
	"math"
	"sort"
	"time"
)

// hist is a log-linear latency histogram: 64 sub-buckets per power of two
// of microseconds, so every recorded value is within 1.6 % of its bucket.
// Not safe for concurrent use; merge per-client histograms at the end.
type hist struct {
	counts map[int]uint64
	n      uint64
	max    time.Duration
}

func newHist() *hist { return &hist{counts: make(map[int]uint64)} }

const subBuckets = 64

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 1 {
		return 0
	}
	return int(math.Log2(us)*subBuckets) + 1
}

func bucketValue(b int) time.Duration {
	if b == 0 {
		return 0
	}
	return time.Duration(math.Exp2(float64(b-1)/subBuckets) * float64(time.Microsecond))
}

func (h *hist) record(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *hist) merge(o *hist) {
	for b, c := range o.counts {
		h.counts[b] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the value at q (0..1).
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	keys := make([]int, 0, len(h.counts))
	for b := range h.counts {
		keys = append(keys, b)
	}
	sort.Ints(keys)
	target := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for _, b := range keys {
		seen += h.counts[b]
		if seen >= target {
			return min(bucketValue(b+1), h.max)
		}
	}
	return h.max
}

// Latency summarises a histogram.
type Latency struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

func (h *hist) summary() Latency {
	return Latency{Count: h.n, P50: h.quantile(0.5), P90: h.quantile(0.9), P99: h.quantile(0.99), Max: h.max}
}
