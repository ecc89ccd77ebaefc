package sequencer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Client appends through the sequencer service over NATS request-reply. It
// is what gateways and backend services use; it is safe for concurrent use.
type Client struct {
	// Static after construction.
	nc      *nats.Conn
	names   wire.Names
	parts   int
	attempt time.Duration
}

// NewClient returns a Client for the installation cfg describes (Namespace
// and Partitions must match the sequencers'). Each attempt waits up to
// cfg.RequestTimeout.
func NewClient(nc *nats.Conn, cfg Config) *Client {
	cfg = cfg.withDefaults()
	return &Client{nc: nc, names: cfg.names(), parts: cfg.Partitions, attempt: cfg.RequestTimeout}
}

// Append appends body to game and returns where it landed. It retries while
// no sequencer answers (a partition changing owner) or an attempt times out,
// until ctx ends, always with the same idempotency key, so the message is
// appended at most once. An empty idem gets a fresh key.
func (c *Client) Append(ctx context.Context, game string, body []byte, idem string) (Result, error) {
	if err := wire.ValidateGame(game); err != nil {
		return Result{}, errorf(wire.CodeInvalidGame, "%v", err)
	}
	if idem == "" {
		idem = nuid.Next()
	}
	subj := c.names.AppendSubject(wire.Partition(game, c.parts))
	for attempt := 0; ; attempt++ {
		m := &nats.Msg{Subject: subj, Data: body, Header: nats.Header{wire.HdrGame: {game}, wire.HdrIdem: {idem}}}
		actx, cancel := context.WithTimeout(ctx, c.attempt)
		resp, err := c.nc.RequestMsgWithContext(actx, m)
		cancel()
		if err == nil {
			var r AppendReply
			if err := decodeReply(resp.Data, &r); err != nil {
				return Result{}, fmt.Errorf("sequencer: bad append reply: %w", err)
			}
			if r.Error != nil {
				if r.Error.Code != wire.CodeUnavailable {
					return Result{}, &Error{Code: r.Error.Code, Msg: r.Error.Message}
				}
			} else {
				return Result{MsgID: r.MsgID, Seq: r.Seq, TS: r.TS, Duplicate: r.Duplicate}, nil
			}
		} else if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			if errors.Is(err, nats.ErrConnectionClosed) {
				return Result{}, errorf(wire.CodeUnavailable, "append: %v", err)
			}
		}
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 9)))
		select {
		case <-ctx.Done():
			return Result{}, errors.Join(errorf(wire.CodeUnavailable, "append to %s: no sequencer answered", game), ctx.Err())
		case <-time.After(d):
		}
	}
}

// LocalFirst appends through an in-process Service's Appender for the
// partitions that Service owns, skipping the NATS round trip, and through
// a Client for the others (or while the Service is stopping).
type LocalFirst struct {
	// Static after construction.
	svc    *Service
	client *Client
}

// NewLocalFirst returns an appender preferring svc over client.
func NewLocalFirst(svc *Service, client *Client) *LocalFirst {
	return &LocalFirst{svc: svc, client: client}
}

// AppendWithin is Append bounded by d: without a timer when the local
// Appender publishes inline (see Appender.AppendWithin).
func (l *LocalFirst) AppendWithin(ctx context.Context, d time.Duration, game string, body []byte, idem string) (Result, error) {
	deadline := time.Now().Add(d)
	if app := l.svc.Appender(); app != nil && l.svc.Owns(wire.Partition(game, l.client.parts)) {
		r, err := app.AppendWithin(ctx, d, game, body, idem)
		if !errors.Is(err, ErrClosed) {
			return r, err
		}
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return l.client.Append(ctx, game, body, idem)
}

// Append appends like Client.Append.
func (l *LocalFirst) Append(ctx context.Context, game string, body []byte, idem string) (Result, error) {
	if app := l.svc.Appender(); app != nil && l.svc.Owns(wire.Partition(game, l.client.parts)) {
		r, err := app.Append(ctx, game, body, idem)
		if !errors.Is(err, ErrClosed) {
			return r, err
		}
	}
	return l.client.Append(ctx, game, body, idem)
}
