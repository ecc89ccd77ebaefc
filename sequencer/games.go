package sequencer

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Games records which games were created with tokens (by a gateway's
// create or the backend API), in the <ns>_games bucket: such games admit
// only token holders, even where anonymous play is allowed. Entries are
// small (the creation time) and kept as long as the bucket; safe for
// concurrent use.
type Games struct {
	// Static after construction.
	kv jetstream.KeyValue
}

// OpenGames opens the games bucket (see Provision).
func OpenGames(ctx context.Context, nc *nats.Conn, cfg Config) (*Games, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, cfg.withDefaults().names().GamesBucket())
	if err != nil {
		return nil, errors.Join(errors.New("sequencer: open games bucket (run Provision first)"), err)
	}
	return &Games{kv: kv}, nil
}

// MarkCreated records game as created with tokens; marking it again is
// harmless.
func (g *Games) MarkCreated(ctx context.Context, game string) error {
	if err := wire.ValidateGame(game); err != nil {
		return errorf(wire.CodeInvalidGame, "%v", err)
	}
	_, err := g.kv.Create(ctx, game, []byte(strconv.FormatInt(time.Now().Unix(), 10)))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	return err
}

// Created reports whether game was created with tokens.
func (g *Games) Created(ctx context.Context, game string) (bool, error) {
	if wire.ValidateGame(game) != nil {
		return false, nil
	}
	_, err := g.kv.Get(ctx, game)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, err
}
