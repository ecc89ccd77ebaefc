package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
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

// admit counts a new connection from addr against MaxConns and
// MaxConnsPerAddr; it returns the reason of a refusal, or "" and the
// connection counts until leave.
func (g *Gateway) admit(addr string) string {
	g.addrMu.Lock()
	defer g.addrMu.Unlock()
	switch {
	case g.cfg.MaxConns > 0 && g.total >= g.cfg.MaxConns:
		return "conns"
	case g.cfg.MaxConnsPerAddr > 0 && g.perAddr[addr] >= g.cfg.MaxConnsPerAddr:
		return "conns_per_addr"
	}
	g.total++
	g.perAddr[addr]++
	return ""
}

// leave undoes admit.
func (g *Gateway) leave(addr string) {
	g.addrMu.Lock()
	defer g.addrMu.Unlock()
	g.total--
	if n := g.perAddr[addr] - 1; n > 0 {
		g.perAddr[addr] = n
	} else {
		delete(g.perAddr, addr)
	}
}

// clientAddr returns the address of the client behind r: the peer, or,
// when the peer is a trusted proxy, the right-most X-Forwarded-For entry
// that is not a trusted proxy itself.
func clientAddr(r *http.Request, trusted []netip.Prefix) string {
	peer := hostOf(r.RemoteAddr)
	if len(trusted) == 0 || !isTrusted(peer, trusted) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return peer // a garbled header: count the proxy
			}
			if a = a.Unmap(); !isTrustedAddr(a, trusted) {
				return a.String()
			}
		}
	}
	return peer
}

func isTrusted(host string, trusted []netip.Prefix) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && isTrustedAddr(a.Unmap(), trusted)
}

func isTrustedAddr(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
