package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/jsonobj"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// createRequest is the optional body of POST /v1/games.
type createRequest struct {
	ID      string          `json:"id"`
	TTL     string          `json:"ttl"`
	Players []playerRequest `json:"players"`
}

type playerRequest struct {
	Sub string `json:"sub"`
}

// createReply answers POST /v1/games.
type createReply struct {
	Game           string        `json:"game"`
	PlayerToken    string        `json:"player_token"`
	SpectatorToken string        `json:"spectator_token"`
	Players        []playerToken `json:"players"`
	Expires        string        `json:"expires"`
}

type playerToken struct {
	Sub   string `json:"sub"`
	Token string `json:"token"`
}

const (
	maxPlayers = 1000
	maxSubLen  = 256
)

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// createGame creates a game: its first message (msg_id 1) is the system
// message game_created, appended with the idempotency key
// "api-create:<game>", so concurrent tries of one create append it once.
// A create counts as done, and is answered 201 with fresh tokens, exactly
// when msg_id 1 of the game is this owner's game_created with this
// request's create key (a digest of owner and Idempotency-Key), or, for a
// request without Idempotency-Key, when the append was answered as a
// duplicate of it. Anything else already in the game is 409 game_exists.
//
// The existence check and the append are not atomic: a message another
// writer appends between them (a player of an anonymous game, or a NATS
// client) makes the create a 409 that leaves its game_created behind that
// message; so does creating a game whose stored messages all expired.
func (a *API) createGame(r *http.Request, owner string) (int, any, error) {
	if a.signer == nil {
		return 0, nil, errorf(http.StatusNotImplemented, wire.CodeCreateDisabled, "creating games needs the gateway's token secret, which this server lacks")
	}
	idem, err := idempotencyKey(r)
	if err != nil {
		return 0, nil, err
	}
	req, ttl, err := a.decodeCreate(r)
	if err != nil {
		return 0, nil, err
	}
	game, createKey := req.ID, ""
	if idem != "" {
		createKey = digest("create", owner, idem)
	}
	switch {
	case game != "":
	case idem != "":
		game = derivedID(owner, idem)
	default:
		var b [10]byte
		_, _ = rand.Read(b[:])
		game = strings.ToLower(idEncoding.EncodeToString(b[:]))
	}
	ctx := r.Context()
	_, exists, err := a.reader.Head(ctx, game)
	if err != nil {
		return 0, nil, unavailable("the game could not be checked; try again", err)
	}
	duplicate := false
	if !exists {
		res, err := a.app.Append(ctx, game, a.createdBody(owner, createKey), "api-create:"+game)
		if err != nil {
			return 0, nil, appendError(err)
		}
		if res.MsgID == 1 && !res.Duplicate {
			return a.created(ctx, game, ttl, req.Players)
		}
		duplicate = res.Duplicate
	}
	if createKey == "" && !duplicate {
		return 0, nil, errorf(http.StatusConflict, wire.CodeGameExists, "game %s already exists", game)
	}
	first, err := a.first(ctx, game)
	if err != nil {
		return 0, nil, err
	}
	if first != nil && ownCreate(first.Data, owner, createKey, duplicate) {
		return a.created(ctx, game, ttl, req.Players)
	}
	return 0, nil, errorf(http.StatusConflict, wire.CodeGameExists, "game %s already exists", game)
}

// decodeCreate reads and checks the optional body of a create.
func (a *API) decodeCreate(r *http.Request) (createRequest, time.Duration, error) {
	var req createRequest
	ttl := a.cfg.TokenTTL
	body, err := a.readBody(r)
	if err != nil {
		return req, 0, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return req, ttl, nil
	}
	if err := checkObject(body, nil); err != nil {
		return req, 0, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, 0, errorf(http.StatusBadRequest, wire.CodeInvalidMessage, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if req.ID != "" {
		if err := wire.ValidateGame(req.ID); err != nil {
			return req, 0, errorf(http.StatusBadRequest, wire.CodeInvalidGame, `"id": %v`, err)
		}
	}
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl < time.Second || ttl > a.cfg.MaxTokenLifetime {
			return req, 0, errorf(http.StatusBadRequest, wire.CodeInvalidMessage, `"ttl": want a duration from 1s to %s (the gateway's longest token lifetime) such as "2h"`, a.cfg.MaxTokenLifetime)
		}
	}
	if len(req.Players) > maxPlayers {
		return req, 0, errorf(http.StatusBadRequest, wire.CodeInvalidMessage, `"players": at most %d`, maxPlayers)
	}
	for i, p := range req.Players {
		if p.Sub == "" || len(p.Sub) > maxSubLen {
			return req, 0, errorf(http.StatusBadRequest, wire.CodeInvalidMessage, `"players"[%d].sub: want 1-%d bytes`, i, maxSubLen)
		}
	}
	return req, ttl, nil
}

// createdBody is the game_created system message.
func (a *API) createdBody(owner, createKey string) []byte {
	var fields []byte
	if createKey != "" {
		fields = append(append([]byte(`"create_key":"`), createKey...), '"')
	}
	return systemBody(typeGameCreated, fields, owner)
}

// ownCreate reports whether the stored first message of a game is the
// game_created of this create.
func ownCreate(frame []byte, owner, createKey string, duplicate bool) bool {
	var typ, source, key string
	err := jsonobj.Scan(frame, func(k, v []byte) error {
		switch {
		case jsonobj.KeyEquals(k, "type"):
			typ, _ = jsonobj.StringValue(v)
		case jsonobj.KeyEquals(k, "source"):
			source, _ = jsonobj.StringValue(v)
		case jsonobj.KeyEquals(k, "create_key"):
			key, _ = jsonobj.StringValue(v)
		}
		return nil
	})
	return err == nil && typ == typeGameCreated && source == owner && key == createKey && (createKey != "" || duplicate)
}

var errFound = errors.New("found")

// first returns the game's stored msg_id 1, or nil if the stream no longer
// holds it.
func (a *API) first(ctx context.Context, game string) (*sequencer.Stored, error) {
	var first *sequencer.Stored
	err := a.reader.Range(ctx, game, 0, 1, nil, func(m sequencer.Stored) error {
		first = &m
		return errFound
	})
	var te *sequencer.TruncatedError
	switch {
	case errors.As(err, &te):
		return nil, nil
	case err != nil && !errors.Is(err, errFound):
		return nil, unavailable("the game could not be checked; try again", err)
	}
	return first, nil
}

// created mints the tokens of a created game.
func (a *API) created(ctx context.Context, game string, ttl time.Duration, players []playerRequest) (int, any, error) {
	if a.cfg.Registry != nil {
		// The game admits only token holders, even where anonymous play
		// is allowed: recorded before any token is handed out.
		if err := a.cfg.Registry.MarkCreated(ctx, game); err != nil {
			return 0, nil, unavailable("the game could not be recorded; try again", err)
		}
	}
	now := time.Now()
	iat := now.Unix()
	exp := now.Add(ttl).Unix()
	mint := func(role, sub string) (string, error) {
		return a.signer.Mint(token.Claims{Game: game, Role: role, Sub: sub, Exp: exp, Iat: iat})
	}
	rep := createReply{Game: game, Players: make([]playerToken, 0, len(players)), Expires: time.Unix(exp, 0).UTC().Format(time.RFC3339)}
	var err error
	if rep.PlayerToken, err = mint(token.RolePlayer, ""); err != nil {
		return 0, nil, err
	}
	if rep.SpectatorToken, err = mint(token.RoleSpectator, ""); err != nil {
		return 0, nil, err
	}
	for _, p := range players {
		tok, err := mint(token.RolePlayer, p.Sub)
		if err != nil {
			return 0, nil, err
		}
		rep.Players = append(rep.Players, playerToken{Sub: p.Sub, Token: tok})
	}
	return http.StatusCreated, rep, nil
}

// digest is a hex SHA-256 prefix of its parts, unambiguously joined.
func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// derivedID is the game id of a create without "id" but with an
// Idempotency-Key: the same for every retry of it.
func derivedID(owner, idem string) string {
	sum := sha256.Sum256([]byte("game\x00" + owner + "\x00" + idem))
	return strings.ToLower(idEncoding.EncodeToString(sum[:10]))
}
