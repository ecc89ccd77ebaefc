package gateway

import (
	"context"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Shutdown drains the gateway: new connections are refused, every client is
// closed with 1001 so it resumes on another instance, in-flight appends
// finish. If ctx ends first, what is left is cut off. Shutdown returns when
// every connection goroutine, the keepalive and the poller have exited. It
// may be called more than once: later calls wait like the first.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if !g.draining.Swap(true) {
		close(g.drainCh)
	}
	conns := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	kaStop, kaDone := g.kaStop, g.kaDone
	g.kaStop = nil // a second Shutdown must not close it again
	g.mu.Unlock()
	for _, c := range conns {
		// Wakes parked connections; none parks once closing.
		c.closeWith(wire.CloseGoingAway, "server shutting down: reconnect with since", "going_away")
	}
	// Every connection is closing: nothing left to ping or park.
	if kaStop != nil {
		close(kaStop)
		<-kaDone
	}
	g.poll.stop()
	done := make(chan struct{})
	defer g.aud.close()
	if g.tokens != nil {
		defer g.tokens.Close()
	}
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		g.cancel()
		return nil
	case <-ctx.Done():
	}
	g.cancel()
	g.mu.Lock()
	for c := range g.conns {
		_ = c.nc.Close()
	}
	g.mu.Unlock()
	<-done
	return ctx.Err()
}
