package gateway

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// Registry records the games created with tokens (by create or the backend
// API): those admit only holders of a token, even on a gateway that allows
// anonymous play. sequencer.Games implements it.
type Registry interface {
	// Created reports whether game was created with tokens.
	Created(ctx context.Context, game string) (bool, error)
	// MarkCreated records that game was created with tokens.
	MarkCreated(ctx context.Context, game string) error
}

// newVerifier builds the token verifier of cfg: TokenSecret is the key of
// tokens without kid (or with TokenSecretID), Tokens adds more. nil
// without any key: tokens are refused.
func newVerifier(cfg Config) (*token.Verifier, error) {
	tc := cfg.Tokens
	if len(cfg.TokenSecret) > 0 {
		tc.Keys = append([]token.Key{{ID: cfg.TokenSecretID, Secret: cfg.TokenSecret}}, tc.Keys...)
	}
	if len(tc.Keys) == 0 && tc.JWKSURL == "" {
		return nil, nil
	}
	if tc.Logger == nil {
		tc.Logger = cfg.Logger
	}
	return token.NewVerifier(tc)
}

// authorize checks a join's credentials: the token's claims, or, without
// one, whether anonymous play is open for this game. It answers the client
// itself when the join is refused (ok false).
func (g *Gateway) authorize(c *conn, req request) (cl token.Claims, ok bool) {
	if req.token == "" {
		switch {
		case !g.cfg.AllowAnonymous:
			c.sendError(wire.CodeAuthRequired, "a token is required to join")
			return cl, false
		case !strings.HasPrefix(req.game, g.cfg.AnonymousPrefix):
			c.sendError(wire.CodeAuthRequired, "a token is required to join this game")
			return cl, false
		}
		if g.cfg.Registry != nil {
			ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
			created, err := g.cfg.Registry.Created(ctx, req.game)
			cancel()
			switch {
			case err != nil:
				g.log.Warn("gateway: look up a game's creation", "game", req.game, "err", err)
				c.sendError(wire.CodeUnavailable, "the game cannot be checked now; try again")
				return cl, false
			case created:
				c.sendError(wire.CodeAuthRequired, "this game admits only token holders")
				return cl, false
			}
		}
		return token.Claims{Game: req.game, Role: token.RolePlayer}, true
	}
	cl, err := g.verify(req.token)
	if err != nil {
		sendTokenError(c, err)
		return cl, false
	}
	if cl.Game != req.game {
		c.sendError(wire.CodeBadToken, "the token is for another game")
		return cl, false
	}
	return cl, true
}

// verify checks a token against the gateway's keys.
func (g *Gateway) verify(tok string) (token.Claims, error) {
	if g.tokens == nil {
		return token.Claims{}, errors.New("tokens are not enabled on this gateway")
	}
	return g.tokens.Verify(tok, time.Now())
}

// sendTokenError answers a refused token; messages never hold the token.
func sendTokenError(c *conn, err error) {
	switch {
	case errors.Is(err, token.ErrExpired):
		c.sendError(wire.CodeTokenExpired, "the token has expired")
	default:
		c.sendError(wire.CodeBadToken, strings.TrimPrefix(err.Error(), "token: "))
	}
}

// refresh replaces a joined connection's token before it expires: the new
// token must be valid and for the same game, role and user.
func (g *Gateway) refresh(c *conn, req request) {
	if c.hub == nil {
		c.sendError(wire.CodeNotJoined, "join a game first")
		return
	}
	if c.exp.Load() == 0 {
		c.sendError(wire.CodeInvalidMessage, "this connection joined without a token: nothing to refresh")
		return
	}
	cl, err := g.verify(req.token)
	switch {
	case err != nil:
		sendTokenError(c, err)
		return
	case cl.Game != c.hub.game || cl.Role != c.role || cl.Sub != c.user:
		c.sendError(wire.CodeBadToken, "a refreshed token must be for the same game, role and user")
		return
	}
	c.exp.Store(cl.Exp)
	c.enqueue(item{kind: itemFrame, frame: textFrame(refreshedFrame(cl.Exp))})
}
