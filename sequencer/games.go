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
	readFn func(context.Context, string) (bool, error) // read; tests replace it

	mu sync.Mutex
	// Guarded by mu.
	kv      jetstream.KeyValue
	lookups map[string]*createdLookup // Created's reads in flight, by game
}

// createdLookup is one read of a game's entry that concurrent Created
// calls for the game share: a crowd joining one game makes one read at a
// time, not one each.
type createdLookup struct {
	done    chan struct{} // closed when created and err are set
	created bool
	err     error
}

// NewGames returns the registry of the installation cfg describes.
func NewGames(nc *nats.Conn, cfg Config) (*Games, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	g := &Games{js: js, bucket: cfg.withDefaults().names().GamesBucket()}
	g.readFn = g.read
	return g, nil
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

// Created reports whether game was created with tokens. Calls for the same
// game while a read of its entry is in flight share that read's answer
// (the read started after they were called began, at the latest when the
// first of them did).
func (g *Games) Created(ctx context.Context, game string) (bool, error) {
	if wire.ValidateGame(game) != nil {
		return false, nil
	}
	g.mu.Lock()
	l := g.lookups[game]
	if l == nil {
		l = &createdLookup{done: make(chan struct{})}
		if g.lookups == nil {
			g.lookups = make(map[string]*createdLookup)
		}
		g.lookups[game] = l
		g.mu.Unlock()
		// Not bound to this caller's ctx: the others wait on it too.
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l.created, l.err = g.readFn(rctx, game)
		cancel()
		g.mu.Lock()
		delete(g.lookups, game)
		g.mu.Unlock()
		close(l.done)
	} else {
		g.mu.Unlock()
	}
	select {
	case <-l.done:
		return l.created, l.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// read looks up game's entry.
func (g *Games) read(ctx context.Context, game string) (bool, error) {
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
