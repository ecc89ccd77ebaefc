package gateway

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// The audience of a game is how many players and spectators it has on all
// gateways. It reaches clients as an ephemeral frame
// {"type":"audience","game":G,"players":P,"spectators":S}: no msg_id, not
// stored, sent only when the numbers changed, at most once per
// Config.AudienceInterval per game, less often for big audiences (see gap).
//
// Each gateway counts its own clients of a game and publishes the counts on
// the game's audience subject when they change (at most once per
// interval), when another gateway starts hosting the game (its first count
// says "hello"), and every audienceRefresh. Every gateway hosting the game
// subscribes to that subject and adds up the latest count of every gateway.
// Every gateway also says every second that it is alive; the counts of a
// gateway not heard from for Config.AudienceTTL are dropped, so a gateway
// that dies stops counting within seconds. A count not refreshed for three
// refresh periods is dropped too (its gateway stopped hosting the game and
// the message saying so was lost).
const (
	audienceHeartbeat = time.Second
	audienceRefresh   = 20 * time.Second
)

// audienceCount is one gateway's clients of a game.
type audienceCount struct {
	players, spectators int
	seen                time.Time // when it was last received
}

// audience exchanges audience counts with the other gateways and sends
// audience frames to this gateway's clients.
type audience struct {
	// Static after construction.
	g     *Gateway
	nc    *nats.Conn // nil: this gateway counts only its own clients
	names wire.Names
	parts int

	mu sync.Mutex
	// Guarded by mu.
	dirty   map[*hub]struct{}    // hubs to look at on the next tick
	alive   map[string]time.Time // other gateways, by instance: last sign of life
	aliveSb *nats.Subscription
	stop    chan struct{} // closes to stop the loop; nil until it starts
	done    chan struct{} // closed when the loop returns
}

func newAudience(g *Gateway) *audience {
	a := &audience{g: g, dirty: make(map[*hub]struct{}), alive: make(map[string]time.Time)}
	if fs := g.feeds; fs != nil && fs.Conn() != nil {
		a.nc, a.names, a.parts = fs.Conn(), fs.Names(), fs.Partitions()
	}
	return a
}

// startLocked starts the audience loop with the first hub. a.mu is held.
func (a *audience) startLocked() {
	if a.stop != nil {
		return
	}
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	if a.nc != nil {
		sub, err := a.nc.Subscribe(a.names.AudienceAlive(), a.onAlive)
		if err != nil {
			a.g.log.Warn("gateway: audience: subscribe", "err", err)
		}
		a.aliveSb = sub
	}
	go a.loop(a.stop, a.done)
}

// close stops the loop and waits for it.
func (a *audience) close() {
	a.mu.Lock()
	stop, done, sub := a.stop, a.done, a.aliveSb
	a.stop, a.aliveSb = nil, nil
	a.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	if stop != nil {
		close(stop)
		<-done
	}
}

// mark makes the next tick look at h.
func (a *audience) mark(h *hub) {
	a.mu.Lock()
	a.dirty[h] = struct{}{}
	a.startLocked()
	a.mu.Unlock()
}

// open starts exchanging h's counts: it subscribes to the game's audience
// subject and says hello, so the other gateways hosting the game send
// theirs.
func (a *audience) open(h *hub) {
	if a.nc != nil {
		subj := a.names.AudienceSubject(wire.Partition(h.game, a.parts), h.game)
		sub, err := a.nc.Subscribe(subj, func(m *nats.Msg) { a.onCount(h, m.Data) })
		if err != nil {
			a.g.log.Warn("gateway: audience: subscribe", "game", h.game, "err", err)
		}
		h.mu.Lock()
		h.audSub, h.audSubject, h.pubHello = sub, subj, true
		h.mu.Unlock()
	}
	a.mark(h)
}

// release stops exchanging h's counts and tells the other gateways that
// this one has no client of the game any more.
func (a *audience) release(h *hub) {
	a.mu.Lock()
	delete(a.dirty, h)
	a.mu.Unlock()
	h.mu.Lock()
	sub, subj := h.audSub, h.audSubject
	h.audSub = nil
	h.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
		a.publish(subj, 0, 0, plainCount)
	}
}

// onAlive records another gateway's heartbeat.
func (a *audience) onAlive(m *nats.Msg) {
	inst := string(m.Data)
	if inst == a.g.cfg.Instance || inst == "" {
		return
	}
	a.mu.Lock()
	a.alive[inst] = time.Now()
	a.mu.Unlock()
}

// onCount takes another gateway's count of h's game.
func (a *audience) onCount(h *hub, data []byte) {
	var (
		inst  string
		p, s  int64 = -1, -1
		hello bool
	)
	err := jsonobj.Scan(data, func(k, v []byte) error {
		switch {
		case jsonobj.KeyEquals(k, "gateway"):
			inst, _ = jsonobj.StringValue(v)
		case jsonobj.KeyEquals(k, "players"):
			p, _ = strconv.ParseInt(string(v), 10, 32)
		case jsonobj.KeyEquals(k, "spectators"):
			s, _ = strconv.ParseInt(string(v), 10, 32)
		case jsonobj.KeyEquals(k, "hello"):
			hello = string(v) == "true"
		}
		return nil
	})
	if err != nil || inst == "" || inst == a.g.cfg.Instance || p < 0 || s < 0 {
		return
	}
	now := time.Now()
	a.mu.Lock()
	a.alive[inst] = now
	a.mu.Unlock()
	h.mu.Lock()
	if p == 0 && s == 0 {
		delete(h.remote, inst)
	} else {
		if h.remote == nil {
			h.remote = make(map[string]audienceCount)
		}
		h.remote[inst] = audienceCount{players: int(p), spectators: int(s), seen: now}
	}
	if hello {
		h.pubForce = true // a new host of the game needs our count
	}
	h.mu.Unlock()
	a.mark(h)
}

// countKind says whether a published count asks the other gateways for
// theirs.
type countKind uint8

const (
	plainCount countKind = iota
	helloCount           // this gateway just started hosting the game
)

// publish sends this gateway's count of a game.
func (a *audience) publish(subj string, players, spectators int, kind countKind) {
	if a.nc == nil || subj == "" {
		return
	}
	b := make([]byte, 0, 96)
	b = append(b, `{"gateway":`...)
	b = appendJSONString(b, a.g.cfg.Instance)
	b = append(b, `,"players":`...)
	b = strconv.AppendInt(b, int64(players), 10)
	b = append(b, `,"spectators":`...)
	b = strconv.AppendInt(b, int64(spectators), 10)
	if kind == helloCount {
		b = append(b, `,"hello":true`...)
	}
	b = append(b, '}')
	if err := a.nc.Publish(subj, b); err != nil {
		a.g.log.Debug("gateway: audience: publish", "subject", subj, "err", err)
	}
}

// loop ticks every AudienceInterval: it sends changed audiences to clients
// and counts to the other gateways, says this gateway is alive, and drops
// the counts of gateways gone silent.
func (a *audience) loop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	interval := a.g.cfg.AudienceInterval
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var lastBeat, lastRefresh time.Time
	refresh := audienceRefresh + rand.N(audienceRefresh/4)
	var hubs []*hub
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		if a.nc != nil && now.Sub(lastBeat) >= audienceHeartbeat {
			lastBeat = now
			_ = a.nc.Publish(a.names.AudienceAlive(), []byte(a.g.cfg.Instance))
		}
		everyHub := false
		a.mu.Lock()
		for inst, t := range a.alive {
			if now.Sub(t) > a.g.cfg.AudienceTTL {
				delete(a.alive, inst)
				everyHub = true
			}
		}
		alive := make(map[string]bool, len(a.alive))
		for inst := range a.alive {
			alive[inst] = true
		}
		for h := range a.dirty {
			hubs = append(hubs, h)
		}
		clear(a.dirty)
		a.mu.Unlock()
		rep := onChange
		if now.Sub(lastRefresh) >= refresh {
			lastRefresh, rep = now, republish
		}
		if everyHub || rep == republish {
			hubs = hubs[:0]
			a.g.mu.Lock()
			for _, h := range a.g.hubs {
				hubs = append(hubs, h)
			}
			a.g.mu.Unlock()
		}
		for _, h := range hubs {
			a.update(h, now, alive, rep)
		}
		clear(hubs)
		hubs = hubs[:0]
	}
}

// countRefresh says when update publishes this gateway's count.
type countRefresh uint8

const (
	onChange  countRefresh = iota // when it changed (or another gateway asked)
	republish                     // in any case: the periodic refresh
)

// gap is the least time between two audience frames to a game with n
// clients here: AudienceInterval, growing with the audience (an audience
// frame to each of 9,000 clients twice a second cost more than the
// crowd's joins), up to maxAudienceGap.
func (a *audience) gap(n int) time.Duration {
	return min(a.g.cfg.AudienceInterval*time.Duration(1+n/audiencePerStep), maxAudienceGap)
}

const (
	audiencePerStep = 500
	maxAudienceGap  = 5 * time.Second
)

// update brings h's audience up to date: drops stale counts of other
// gateways, publishes this gateway's count if it changed (or refresh is
// set), and sends the total to h's clients if it changed.
func (a *audience) update(h *hub, now time.Time, alive map[string]bool, refresh countRefresh) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	players, spectators := h.players, h.spectators
	pub, hello, subj := false, h.pubHello, h.audSubject
	if players != h.pubPlayers || spectators != h.pubSpectators || refresh == republish || h.pubForce || hello {
		pub = true
		h.pubPlayers, h.pubSpectators = players, spectators
		h.pubForce, h.pubHello = false, false
	}
	local := [2]int{players, spectators}
	for inst, c := range h.remote {
		if !alive[inst] || now.Sub(c.seen) > 3*audienceRefresh {
			delete(h.remote, inst)
			continue
		}
		players += c.players
		spectators += c.spectators
	}
	var (
		frame []byte
		to    []*conn
	)
	later := false
	if players != h.sentPlayers || spectators != h.sentSpectators {
		if now.Sub(h.sentAt) >= a.gap(len(h.clients)) {
			h.sentPlayers, h.sentSpectators, h.sentAt = players, spectators, now
			frame = textFrame(audienceFrame(h.game, players, spectators))
			to = make([]*conn, 0, len(h.clients))
			for c := range h.clients {
				to = append(to, c)
			}
		} else {
			later = true
		}
	}
	h.mu.Unlock()
	if later {
		a.mark(h) // look again on the next tick
	}
	// Written and published without h.mu, as messages are (hub.onMsg).
	for _, c := range to {
		c.enqueue(item{kind: itemFrame, frame: frame})
	}
	if pub {
		kind := plainCount
		if hello {
			kind = helloCount
		}
		a.publish(subj, local[0], local[1], kind)
	}
}

func audienceFrame(game string, players, spectators int) []byte {
	b := []byte(`{"type":"audience","game":`)
	b = appendJSONString(b, game)
	b = append(b, `,"players":`...)
	b = strconv.AppendInt(b, int64(players), 10)
	b = append(b, `,"spectators":`...)
	b = strconv.AppendInt(b, int64(spectators), 10)
	return append(b, '}')
}
