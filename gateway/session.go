package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
	"golang.org/x/time/rate"
)

// allowJoin takes a join from the connection's source address's budget
// (Config.JoinRate); if it is spent, the client is told so.
func (g *Gateway) allowJoin(c *conn) bool {
	if g.joins == nil || g.joins.allow(c.addr, time.Now()) {
		return true
	}
	g.m.refused("join_rate")
	c.sendError(wire.CodeRateLimited, "too many joins from your address; try again shortly")
	return false
}

// gameMessage appends a player's message and waits until its outcome is
// known: stored (it comes back through the feed), refused, or — after
// AppendTimeout of retries with the same idempotency key — unknown. The
// client's messages are appended one at a time, in the order it sent them.
func (g *Gateway) gameMessage(c *conn, body []byte, idem string) {
	switch {
	case c.hub == nil:
		c.sendErrorFor(wire.CodeNotJoined, "join a game first", idem)
		return
	case c.role != token.RolePlayer:
		c.sendErrorFor(wire.CodeForbidden, "spectators cannot send messages", idem)
		return
	case g.cfg.Rate > 0 && !c.allow():
		c.sendErrorFor(wire.CodeRateLimited, "too many messages; this one was dropped", idem)
		return
	}
	c.appending.Store(true)
	defer c.appending.Store(false)
	if b := c.joinPresence; b != nil {
		// The player's join goes into the log before its first message.
		ctx, cancel := context.WithTimeout(g.ctx, g.cfg.AppendTimeout)
		g.awaitPresence(ctx, c.hub.game, b)
		cancel()
		c.joinPresence = nil
	}
	c.seq++
	// A player that sends reads through a buffer from now on (see
	// frameReader); listeners never take one.
	c.fr.buffered = true
	key := messageKey(c, idem)
	start := time.Now()
	var err error
	if g.timed != nil {
		_, err = g.timed.AppendWithin(g.ctx, g.cfg.AppendTimeout, c.hub.game, gameBody(body, c.id, c.user), key)
	} else {
		ctx, cancel := context.WithTimeout(g.ctx, g.cfg.AppendTimeout)
		_, err = g.app.Append(ctx, c.hub.game, gameBody(body, c.id, c.user), key)
		cancel()
	}
	g.m.appended(time.Since(start), err == nil)
	if err == nil {
		return
	}
	var se *sequencer.Error
	switch {
	case errors.As(err, &se) && se.Code == wire.CodeUnavailable:
		g.log.Warn("gateway: append refused", "game", c.hub.game, "client", c.id, "err", err)
		c.sendErrorFor(wire.CodeUnavailable, "the message was not stored; send it again", idem)
	case errors.As(err, &se) && se.Code != wire.CodeOutcomeUnknown:
		c.sendErrorFor(se.Code, se.Msg, idem)
	default:
		g.log.Warn("gateway: append outcome unknown", "game", c.hub.game, "client", c.id, "err", err)
		c.sendErrorFor(wire.CodeOutcomeUnknown, "no answer in time: the message may have been stored, and then appears in the game; sending it again with the same idem is harmless", idem)
	}
}

// messageKey is the idempotency key of a client's message: its own idem,
// scoped by the token's user (or to anonymous players), so that a resend
// after any close — on any connection, any gateway — appends it at most
// once; without one, a key of this connection's.
func messageKey(c *conn, idem string) string {
	if idem == "" {
		return c.id + ":" + strconv.FormatUint(c.seq, 36)
	}
	if c.user != "" {
		// A user name may hold any character: a digest keeps the key a
		// safe header value.
		sum := sha256.Sum256([]byte(c.user))
		return "u:" + hex.EncodeToString(sum[:12]) + ":" + idem
	}
	return "a:" + idem
}

// allow takes a token from c's rate limiter, made full on first use (as it
// would be at connect time): connections that never send cost no limiter.
func (c *conn) allow() bool {
	if c.limiter == nil {
		c.limiter = rate.NewLimiter(rate.Limit(c.g.cfg.Rate), c.g.cfg.Burst)
	}
	return c.limiter.Allow()
}

// join authorises req and attaches c to the game: joined, replay, live.
// created, if not nil, is sent before joined.
func (g *Gateway) join(c *conn, req request, created []byte) {
	cl, ok := g.authorize(c, req)
	if !ok {
		return
	}
	role, user := cl.Role, cl.Sub
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.AppendTimeout)
	defer cancel()
	h, err := g.acquireHub(ctx, req.game)
	if err != nil {
		g.log.Warn("gateway: open game", "game", req.game, "err", err)
		c.sendError(wire.CodeUnavailable, "the game cannot be opened now; try again")
		return
	}
	h.mu.Lock()
	switch {
	case h.last == 0 && role == token.RoleSpectator:
		h.mu.Unlock()
		g.releaseHub(h)
		c.sendError(wire.CodeUnknownGame, "game "+req.game+" does not exist")
		return
	case len(h.clients) >= g.cfg.MaxClientsPerGame:
		h.mu.Unlock()
		g.releaseHub(h)
		c.sendError(wire.CodeGameFull, "the game has the most clients allowed")
		return
	}
	if created != nil {
		// A created game exists once its first message is stored: the
		// creator's join goes into the log before anyone learns the
		// game's id.
		h.mu.Unlock()
		b := g.playerEvent(req.game, presenceEvent{event: "join", client: c.id, user: user})
		actx, acancel := context.WithTimeout(g.ctx, g.cfg.AppendTimeout)
		g.awaitPresence(actx, req.game, b)
		acancel()
		select {
		case <-b.done:
		default:
			g.releaseHub(h)
			g.log.Warn("gateway: create: the game's first message was not stored in time", "game", req.game)
			c.sendError(wire.CodeUnavailable, "the game could not be created; try again")
			return
		}
		h.mu.Lock()
	}
	since := req.since
	if req.history >= 0 && h.last > uint64(req.history) {
		since = max(since, h.last-uint64(req.history))
	}
	c.hub, c.role, c.user = h, role, user
	c.exp.Store(cl.Exp) // 0 for anonymous players: never expires
	h.clients[c] = struct{}{}
	if role == token.RolePlayer {
		h.players++
	} else {
		h.spectators++
	}
	c.mu.Lock()
	if created != nil {
		c.enqueueLocked(item{kind: itemFrame, frame: textFrame(created)})
	}
	c.enqueueLocked(item{kind: itemJoin, join: &joinJob{
		since:  since,
		head:   h.last,
		joined: joinedFrame(req.game, c.id, role, h.last, since),
		feed:   h.feed,
		game:   req.game,
	}})
	c.mu.Unlock()
	h.mu.Unlock()
	g.aud.mark(h)
	if role == token.RolePlayer && created == nil {
		c.joinPresence = g.playerEvent(req.game, presenceEvent{event: "join", client: c.id, user: user})
	}
}

// create makes a new game, records it as created with tokens, hands out
// its tokens and joins c as a player.
func (g *Gateway) create(c *conn) {
	var b [10]byte
	_, _ = rand.Read(b[:])
	game := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	now := time.Now()
	claims := token.Claims{Game: game, Role: token.RolePlayer, Exp: now.Add(g.cfg.TokenTTL).Unix(), Iat: now.Unix()}
	join, err1 := g.signer.Mint(claims)
	claims.Role = token.RoleSpectator
	watch, err2 := g.signer.Mint(claims)
	if err := errors.Join(err1, err2); err != nil {
		g.log.Error("gateway: mint tokens", "err", err)
		c.sendError(wire.CodeInternal, "could not create a game")
		return
	}
	if r := g.cfg.Registry; r != nil {
		ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
		err := r.MarkCreated(ctx, game)
		cancel()
		if err != nil {
			g.log.Warn("gateway: create: record the game", "game", game, "err", err)
			c.sendError(wire.CodeUnavailable, "the game could not be created; try again")
			return
		}
	}
	g.join(c, request{kind: kindJoin, game: game, token: join}, createdFrame(game, join, watch))
}
