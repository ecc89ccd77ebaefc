package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/sequencer"
)

// hub is one game hosted on this gateway: one feed subscription, fanned out
// to the game's local clients. Each message is compiled into a WebSocket
// frame once and the same bytes are queued for every client.
type hub struct {
	// Static after construction.
	game  string
	ready chan struct{} // closed once feed and err are set

	// Set before ready is closed.
	feed   *sequencer.Feed
	cancel func()
	err    error

	// Guarded by Gateway.mu.
	refs int // clients joined or joining

	// Owned by onMsg, which the feed calls one message at a time.
	fanout []*conn // the clients a message goes to, reused

	mu sync.Mutex
	// Guarded by mu.
	clients map[*conn]struct{}
	last    uint64 // msg_id of the last message fanned out
	closed  bool   // the last client left; the hub is gone
	// The audience (see audience.go).
	players, spectators         int                      // this gateway's joined clients, by role
	remote                      map[string]audienceCount // other gateways' counts, by instance
	sentPlayers, sentSpectators int                      // the audience last sent to clients; -1: none yet
	sentAt                      time.Time                // when it was sent
	pubPlayers, pubSpectators   int                      // the count last published; -1: none yet
	pubForce, pubHello          bool                     // publish on the next tick (hello: ask others for theirs)
	audSub                      *nats.Subscription
	audSubject                  string
}

// onMsg fans one ordered message out to every client of the game. It runs
// on the feed's delivery goroutine.
func (h *hub) onMsg(m sequencer.Stored) {
	frame := textFrame(m.Data)
	h.mu.Lock()
	h.last = m.ID
	to := h.fanout[:0]
	for c := range h.clients {
		to = append(to, c)
	}
	h.mu.Unlock()
	// Written without h.mu: a join or leave of this game never waits for
	// the sockets of its audience. A client that joins now has head m.ID
	// and gets m in its replay; one that leaves now is closing and drops
	// it.
	for _, c := range to {
		c.enqueue(item{kind: itemFrame, id: m.ID, frame: frame})
	}
	clear(to)
	h.fanout = to
}

// acquireHub returns the game's hub, opening its feed if this is the
// game's first client here. Release it with releaseHub.
func (g *Gateway) acquireHub(ctx context.Context, game string) (*hub, error) {
	g.mu.Lock()
	h := g.hubs[game]
	if h != nil {
		h.refs++
		g.mu.Unlock()
		<-h.ready
		if h.err != nil {
			g.releaseHub(h)
			return nil, h.err
		}
		return h, nil
	}
	h = &hub{game: game, ready: make(chan struct{}), refs: 1, clients: make(map[*conn]struct{}),
		sentPlayers: -1, sentSpectators: -1, pubPlayers: -1, pubSpectators: -1}
	g.hubs[game] = h
	g.mu.Unlock()

	h.feed, h.err = g.feeds.Open(ctx, game)
	if h.err == nil {
		var last uint64
		last, h.cancel = h.feed.Subscribe(h.onMsg)
		h.mu.Lock()
		h.last = max(h.last, last)
		h.mu.Unlock()
		g.m.gamesHosted(1)
		g.aud.open(h)
	}
	close(h.ready)
	if h.err != nil {
		g.releaseHub(h)
		return nil, h.err
	}
	return h, nil
}

// releaseHub drops one reference; the last one closes the game's feed.
func (g *Gateway) releaseHub(h *hub) {
	g.mu.Lock()
	h.refs--
	last := h.refs == 0
	if last && g.hubs[h.game] == h {
		delete(g.hubs, h.game)
	}
	g.mu.Unlock()
	if last && h.err == nil {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		g.aud.release(h)
		h.cancel()
		h.feed.Close()
		g.m.gamesHosted(-1)
	}
}
