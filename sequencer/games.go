package sequencer

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Games records which games were created with tokens (by a gateway's
// create or the backend API), in the <ns>_games bucket: such games admit
// only token holders, even where anonymous play is allowed. Entries are
// small (the creation time) and kept as long as the bucket. The bucket is
// opened on first use (the sequencers provision it), so a gateway may
// start before them. Safe for concurrent use.
type Games struct {
	// Static after construction.
	js     jetstream.JetStream
	bucket string

	mu sync.Mutex
	// Guarded by mu.
	kv jetstream.KeyValue
}

// NewGames returns the registry of the installation cfg describes.
func NewGames(nc *nats.Conn, cfg Config) (*Games, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &Games{js: js, bucket: cfg.withDefaults().names().GamesBucket()}, nil
}

// OpenGames is NewGames that opens the bucket at once (see Provision).
func OpenGames(ctx context.Context, nc *nats.Conn, cfg Config) (*Games, error) {
	g, err := NewGames(nc, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := g.open(ctx); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *Games) open(ctx context.Context) (jetstream.KeyValue, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.kv != nil {
		return g.kv, nil
	}
	kv, err := g.js.KeyValue(ctx, g.bucket)
	if err != nil {
		return nil, errors.Join(errors.New("sequencer: open the games bucket (the sequencers provision it)"), err)
	}
	g.kv = kv
	return kv, nil
}

// MarkCreated records game as created with tokens; marking it again is
// harmless.
func (g *Games) MarkCreated(ctx context.Context, game string) error {
	if err := wire.ValidateGame(game); err != nil {
		return errorf(wire.CodeInvalidGame, "%v", err)
	}
	kv, err := g.open(ctx)
	if err != nil {
		return err
	}
	_, err = kv.Create(ctx, game, []byte(strconv.FormatInt(time.Now().Unix(), 10)))
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
	kv, err := g.open(ctx)
	if err != nil {
		return false, err
	}
	_, err = kv.Get(ctx, game)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, err
}
