package gateway

import (
	"net"
	"sync"
	"time"
)

// addrLimiter is a token bucket per source address: rate tokens a second,
// at most burst saved. A bucket that has filled up again is forgotten, so
// memory grows only with the addresses active in the last burst/rate
// seconds. Safe for concurrent use.
type addrLimiter struct {
	// Static after construction.
	rate  float64
	burst float64

	mu sync.Mutex
	// Guarded by mu.
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newAddrLimiter(rate float64, burst int) *addrLimiter {
	return &addrLimiter{rate: rate, burst: float64(burst), buckets: make(map[string]*bucket)}
}

// allow takes a token from addr's bucket; false if it is empty.
func (l *addrLimiter) allow(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute {
		l.sweepLocked(now)
	}
	b := l.buckets[addr]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[addr] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweepLocked forgets the buckets that are full again. l.mu is held.
func (l *addrLimiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	for addr, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, addr)
		}
	}
}

// hostOf returns the address part of a host:port remote address.
func hostOf(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}
