package gateway

import (
	"time"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// pingBuckets splits the connections into groups pinged in turn: keepalive
// ticks pingBuckets times per PingInterval and pings one group per tick,
// so each connection is pinged once per interval and pings are spread out.
const pingBuckets = 8

// keepalive is the gateway's one keepalive goroutine (instead of a timer
// per connection): it pings every connection once per PingInterval and
// closes joined connections from which nothing was read for two intervals
// (1008 ping_timeout). Parked connections have no pending read, so this is
// what catches their dead peers. It returns when stop is closed.
func (g *Gateway) keepalive(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(g.cfg.PingInterval / pingBuckets)
	defer tick.Stop()
	limit := int64(2 * g.cfg.PingInterval)
	var ping, dead, expired []*conn
	for n := uint8(0); ; n = (n + 1) % pingBuckets {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		now, unix := g.now(), time.Now().Unix()
		g.mu.Lock()
		for c := range g.conns {
			switch t := c.lastRead.Load(); {
			case t != 0 && now-t > limit && !c.appending.Load():
				dead = append(dead, c)
			case c.exp.Load() != 0 && unix >= c.exp.Load():
				expired = append(expired, c)
			case c.bucket == n:
				ping = append(ping, c)
			}
		}
		g.mu.Unlock()
		for _, c := range dead {
			c.closeWith(wire.ClosePolicy, "ping timeout", "ping_timeout")
		}
		for _, c := range expired {
			c.sendError(wire.CodeTokenExpired, "the token expired: reconnect with a fresh token, or send refresh before it expires")
			c.closeWith(wire.ClosePolicy, "token expired", "token_expired")
		}
		for _, c := range ping {
			c.ping()
		}
		clear(dead)
		clear(ping)
		clear(expired)
		dead, ping, expired = dead[:0], ping[:0], expired[:0]
	}
}
