package sequencer

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// TruncatedError reports that a read asked for messages the stream no
// longer holds (retention removed them); they are in the archive.
type TruncatedError struct {
	Game    string
	FirstID uint64 // oldest msg_id the stream still holds; 0 if it holds none
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("sequencer: game %s: messages before msg_id %d are no longer in the stream", e.Game, e.FirstID)
}

// Reader reads games' stored messages. Its cost grows with the number of
// messages read, not with the size of the stream: it finds the first wanted
// message by walking the per-page anchors back from a known message (one
// Direct Get per PageSize messages), then reads forward in batches.
type Reader struct {
	// Static after construction.
	st    *store
	parts int
}

// NewReader returns a Reader over the partition streams of cfg.
func NewReader(nc *nats.Conn, cfg Config) *Reader {
	cfg = cfg.withDefaults()
	return &Reader{st: newStore(nc, cfg.names(), cfg.RequestTimeout), parts: cfg.Partitions}
}

// Head returns the game's last stored message; ok is false if it has none.
func (r *Reader) Head(ctx context.Context, game string) (head Stored, ok bool, err error) {
	if err := wire.ValidateGame(game); err != nil {
		return Stored{}, false, errorf(wire.CodeInvalidGame, "%v", err)
	}
	head, err = r.st.last(ctx, wire.Partition(game, r.parts), game)
	if errors.Is(err, errNotFound) {
		return Stored{}, false, nil
	}
	return head, err == nil, err
}

// readBatch is the most messages asked for in one Direct Get.
const readBatch = 512

var errStop = errors.New("stop")

// Range calls fn for every stored message of game with since < msg_id ≤ upto,
// in msg_id order. hint, if not nil, is a stored message of the game with
// msg_id > since to start the search from (the head otherwise). If the
// stream no longer holds msg_id since+1, Range returns a *TruncatedError
// before calling fn.
func (r *Reader) Range(ctx context.Context, game string, since, upto uint64, hint *Stored, fn func(Stored) error) error {
	if since >= upto {
		return nil
	}
	if err := wire.ValidateGame(game); err != nil {
		return errorf(wire.CodeInvalidGame, "%v", err)
	}
	p := wire.Partition(game, r.parts)
	if hint == nil {
		head, ok, err := r.Head(ctx, game)
		if err != nil {
			return err
		}
		if !ok {
			return &TruncatedError{Game: game}
		}
		hint = &head
	}
	want := since + 1
	startSeq, err := r.locate(ctx, p, *hint, want)
	if err != nil {
		return err
	}
	next := want
	for next <= upto {
		// What is left, plus the page's messages before want, at most readBatch.
		batch := int(min(upto-next+1+wire.PageSize, readBatch))
		n, err := r.st.next(ctx, p, game, startSeq, batch, func(m Stored) error {
			switch {
			case m.ID < next:
				startSeq = m.Seq + 1
				return nil
			case m.ID > next:
				if next == want {
					return &TruncatedError{Game: game, FirstID: m.ID}
				}
				return fmt.Errorf("sequencer: game %s: msg_id %d follows %d in the stream", game, m.ID, next-1)
			}
			if err := fn(m); err != nil {
				return err
			}
			next++
			startSeq = m.Seq + 1
			if next > upto {
				return errStop
			}
			return nil
		})
		switch {
		case errors.Is(err, errStop):
			return nil
		case err != nil:
			return err
		case n == 0:
			if next == want {
				return &TruncatedError{Game: game}
			}
			return fmt.Errorf("sequencer: game %s: msg_id %d not readable yet: %w", game, next, ErrUnavailable)
		}
	}
	return nil
}

// locate returns a stream sequence at or before the message with msg_id want:
// the sequence of the latest page start ≤ want reachable from hint by
// anchors, or 1 (the game's first stored message) when the chain is broken.
func (r *Reader) locate(ctx context.Context, p int, hint Stored, want uint64) (uint64, error) {
	id, seq := wire.PageStart(hint.ID), hint.Anchor
	if id == hint.ID {
		seq = hint.Seq
	}
	for seq != 0 && id > want {
		m, err := r.st.bySeq(ctx, p, seq)
		if errors.Is(err, errNotFound) {
			return 1, nil
		}
		if err != nil {
			return 0, err
		}
		if m.ID != id {
			return 1, nil // not what the anchor promised: retention or a foreign subject
		}
		id, seq = id-wire.PageSize, m.Anchor
	}
	if seq == 0 {
		return 1, nil
	}
	return seq, nil
}
