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
	st    readStore
	parts int
}

// readStore is what a Reader needs of the partition streams: *store reads
// JetStream; tests use fakes.
type readStore interface {
	last(ctx context.Context, p int, game string) (Stored, error)
	bySeq(ctx context.Context, p int, seq uint64) (Stored, error)
	// next calls fn for up to n of the game's messages stored at or after
	// seq (from any replica) and returns how many.
	next(ctx context.Context, p int, game string, seq uint64, n int, fn func(Stored) error) (int, error)
	nextFromLeader(ctx context.Context, p int, game string, seq uint64) (Stored, error)
}

var _ readStore = (*store)(nil)

// NewReader returns a Reader over the partition streams of cfg.
func NewReader(nc *nats.Conn, cfg Config) *Reader {
	cfg = cfg.withDefaults()
	return &Reader{st: newStore(nc, cfg.names(), cfg.RequestTimeout, cfg.PublishTimeout), parts: cfg.Partitions}
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
	err = r.scan(ctx, p, game, startSeq, want, upto, fn)
	var (
		te     *TruncatedError
		behind *behindError
	)
	if errors.As(err, &behind) {
		// The replica ran out before upto: the rest from the leader.
		return r.scanLeader(ctx, p, game, behind.seq, behind.next, upto, fn)
	}
	if !errors.As(err, &te) {
		return err
	}
	// The replica that answered may trail the leader (a game that just
	// started, a message stored a moment ago): only the leader can say
	// that retention removed msg_id want.
	first, ferr := r.st.nextFromLeader(ctx, p, game, 1)
	switch {
	case errors.Is(ferr, errNotFound):
		return te
	case ferr != nil:
		return fmt.Errorf("sequencer: game %s: confirm retention from the stream leader: %w", game, ferr)
	case first.ID > want:
		return &TruncatedError{Game: game, FirstID: first.ID}
	}
	return r.scanLeader(ctx, p, game, max(first.Seq, startSeq), want, upto, fn)
}

// behindError reports that the replica a read was answered by ended before
// msg_id next (to be read from stream sequence seq on).
type behindError struct{ next, seq uint64 }

func (e *behindError) Error() string {
	return fmt.Sprintf("sequencer: msg_id %d not readable from this replica yet", e.next)
}

// scan calls fn for the game's messages want … upto, reading forward from
// stream sequence startSeq in batches (from any replica). It returns a
// *TruncatedError if msg_id want is not where it should be.
func (r *Reader) scan(ctx context.Context, p int, game string, startSeq, want, upto uint64, fn func(Stored) error) error {
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
			return &behindError{next: next, seq: startSeq}
		}
	}
	return nil
}

// scanLeader is scan answered by the stream leader, one message at a
// time: for the few messages a trailing replica did not have yet.
func (r *Reader) scanLeader(ctx context.Context, p int, game string, seq, want, upto uint64, fn func(Stored) error) error {
	for next := want; next <= upto; {
		m, err := r.st.nextFromLeader(ctx, p, game, seq)
		switch {
		case errors.Is(err, errNotFound):
			return fmt.Errorf("sequencer: game %s: msg_id %d not stored: %w", game, next, ErrUnavailable)
		case err != nil:
			return err
		case m.ID < next:
			seq = m.Seq + 1
			continue
		case m.ID > next:
			return fmt.Errorf("sequencer: game %s: msg_id %d follows %d in the stream", game, m.ID, next-1)
		}
		if err := fn(m); err != nil {
			return err
		}
		next++
		seq = m.Seq + 1
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
