package gateway

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"
)

// Players' joins and leaves are system messages in the game's log, so they
// take their place in msg_id order with the moves ("the opponent left").
// Spectators never write to the log. A gateway coalesces one game's player
// events: the first goes at once; those that come while it is appended, or
// within the coalescing window after it, go as one presence message listing
// them all. The window starts at presenceWindow and doubles with every
// message that carried more than one event, up to presenceMaxWindow, so a
// crowd joining a lobby makes a few presence messages, not one per player,
// and each member receives a few, not one per joiner. A quiet window resets
// it.
//
// A message names its players only while it has at most presenceListMax
// events in at most presenceListBytes: every message reaches every member
// and every later joiner, so a list that grew with the crowd would cost
// the crowd's size squared in bytes (9,000 joins listed one by one to a
// lobby of up to 9,000 members are gigabytes). A bigger batch is stored as
// its counts of joins and leaves.
const (
	presenceWindow    = 100 * time.Millisecond
	presenceMaxWindow = 3200 * time.Millisecond
	presenceListMax   = 64
	presenceListBytes = 16 << 10
)

// presenceEvent is one player joining or leaving.
type presenceEvent struct {
	event  string // "join" or "leave"
	client string
	user   string
}

// presenceBatch is the events of one presence message.
type presenceBatch struct {
	events []presenceEvent
	size   int           // bytes the events take in the message body
	done   chan struct{} // closed once the message is stored (or the gateway stopped trying)
}

// presenceQueue coalesces one game's player events on this gateway. It
// exists while its loop goroutine runs.
type presenceQueue struct {
	// Static after construction.
	game string

	// Guarded by Gateway.presMu.
	next *presenceBatch // events not yet taken by the loop; nil: none
	wake chan struct{}  // the loop's wait for the window ends when this closes; nil: not waiting
}

// presenceEventBytes estimates what ev adds to a presence body.
func presenceEventBytes(ev presenceEvent) int {
	return len(`{"event":"leave","client":"","user":""},`) + len(ev.client) + len(ev.user)
}

// playerEvent queues a player's join or leave for the game's next presence
// message and returns the batch it went into.
func (g *Gateway) playerEvent(game string, ev presenceEvent) *presenceBatch {
	g.presMu.Lock()
	defer g.presMu.Unlock()
	q := g.presence[game]
	if q == nil {
		q = &presenceQueue{game: game}
		g.presence[game] = q
		g.wg.Add(1)
		go g.presenceLoop(q)
	}
	if q.next == nil {
		q.next = &presenceBatch{done: make(chan struct{})}
	}
	b := q.next
	b.events = append(b.events, ev)
	b.size += presenceEventBytes(ev)
	return b
}

// awaitPresence waits until b is stored, cutting the coalescing window
// short: a player's first message must follow its join in the log, and
// must not wait for the window of a busy game.
func (g *Gateway) awaitPresence(ctx context.Context, game string, b *presenceBatch) {
	select {
	case <-b.done:
		return
	default:
	}
	g.presMu.Lock()
	if q := g.presence[game]; q != nil && q.next == b && q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
	g.presMu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
	}
}

// presenceLoop appends the game's presence messages, one at a time, until
// no event came during a whole window; then it removes the queue.
func (g *Gateway) presenceLoop(q *presenceQueue) {
	defer g.wg.Done()
	window := presenceWindow
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		g.presMu.Lock()
		b := q.next
		if b == nil {
			delete(g.presence, q.game)
			g.presMu.Unlock()
			return
		}
		q.next = nil
		g.presMu.Unlock()

		start := time.Now()
		g.appendPresence(q.game, b)
		close(b.done)
		if len(b.events) > 1 {
			window = min(2*window, presenceMaxWindow)
		} else {
			window = presenceWindow
		}
		wait := window - time.Since(start)
		if wait <= 0 {
			continue
		}
		g.presMu.Lock()
		wake := make(chan struct{})
		q.wake = wake
		g.presMu.Unlock()
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-wake: // a player waits to send its first message
		case <-g.drainCh: // draining: leaves go without waiting
		}
		g.presMu.Lock()
		q.wake = nil
		g.presMu.Unlock()
	}
}

// presenceMessage is the presence message of a batch of events that take
// size bytes listed: the list, or the counts when the list is too long.
func presenceMessage(events []presenceEvent, size int) []byte {
	if len(events) <= presenceListMax && size <= presenceListBytes {
		return presenceBody(events)
	}
	return presenceCounts(events)
}

// appendPresence appends one presence message, retrying with the same
// idempotency key until it is stored or the gateway gives up (a drain ran
// out of time).
func (g *Gateway) appendPresence(game string, b *presenceBatch) {
	events := b.events
	body := presenceMessage(events, b.size)
	idem := g.cfg.Instance + "-presence-" + strconv.FormatUint(g.presenceSeq.Add(1), 36)
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(g.ctx, g.cfg.AppendTimeout)
		_, err := g.app.Append(ctx, game, body, idem)
		cancel()
		if err == nil {
			return
		}
		if g.ctx.Err() != nil || g.draining.Load() {
			// A drain makes one attempt per message: it must end.
			g.log.Warn("gateway: presence not stored", "game", game, "events", len(events), "err", err)
			return
		}
		g.log.Warn("gateway: presence append failed; retrying", "game", game, "events", len(events), "err", err)
		d := time.Duration(rand.Int64N(int64(100*time.Millisecond) << min(attempt, 5)))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-g.ctx.Done():
		}
		t.Stop()
	}
}
