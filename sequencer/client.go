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
	replies *replies
	feeds   *Feeds // WithLiveAcks; nil: every append is answered by a reply
}

// ClientOption configures a Client at construction.
type ClientOption func(*Client)

// WithLiveAcks lets appends to the games fs follows (a gateway's hosted
// games) be answered by their live copies: the first attempt asks the
// sequencer not to reply once the message is stored (wire.AckLive), and
// the append is settled when fs delivers the message with the append's
// Nats-Msg-Id, live or read from the stream. That saves a NATS message and
// a wake-up per append. Errors and duplicates are still replied; a later
// attempt, or one whose feed stops, asks for a reply again.
func WithLiveAcks(fs *Feeds) ClientOption {
	return func(c *Client) { c.feeds = fs }
}

// NewClient returns a Client for the installation cfg describes (Namespace
// and Partitions must match the sequencers'). Each attempt waits up to
// cfg.AttemptTimeout.
func NewClient(nc *nats.Conn, cfg Config, opts ...ClientOption) *Client {
	cfg = cfg.withDefaults()
	c := &Client{nc: nc, names: cfg.names(), parts: cfg.Partitions, attempt: cfg.AttemptTimeout, replies: &replies{nc: nc}}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// Append appends body to game and returns where it landed, always with the
// same idempotency key, so the message is appended at most once (an empty
// idem gets a fresh key). The first attempt goes to the sequencer that owns
// the game's partition; when it gives no definite answer within the attempt
// timeout (it died, hangs, is cut off, or the partition is changing
// owner), the next attempts go to any sequencer, until ctx ends. Then the
// error is ErrOutcomeUnknown: the message may have been stored.
func (c *Client) Append(ctx context.Context, game string, body []byte, idem string) (Result, error) {
	if err := wire.ValidateGame(game); err != nil {
		return Result{}, errorf(wire.CodeInvalidGame, "%v", err)
	}
	if idem == "" {
		idem = nuid.Next()
	}
	p := wire.Partition(game, c.parts)
	var stored <-chan Stored // the message's delivery by this process's feed
	if c.feeds != nil {
		ch, cancel, ok := c.feeds.await(game, game+"/"+idem)
		if ok {
			stored = ch
			defer cancel()
		}
	}
	var last error
	for attempt := 0; ; attempt++ {
		subj := c.names.AppendSubject(p)
		if attempt > 0 {
			subj = c.names.AppendAnySubject(p)
		}
		ack := replyAck
		if attempt == 0 && stored != nil {
			ack = liveAck
		}
		r, err, definite := c.try(ctx, subj, game, body, idem, stored, ack)
		if definite {
			return r, err
		}
		if err != nil {
			last = err
		}
		if ctx.Err() != nil {
			return Result{}, outcomeUnknown(game, last)
		}
		if errors.Is(err, errAltClosed) {
			// The feed stopped: ask again, for a reply, at once.
			stored = nil
			continue
		}
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 8)))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, outcomeUnknown(game, last)
		case <-t.C:
		}
	}
}

func outcomeUnknown(game string, last error) error {
	msg := "append to " + game + ": no sequencer answered in time; the message may have been stored"
	if last != nil {
		msg += " (" + last.Error() + ")"
	}
	return &Error{Code: wire.CodeOutcomeUnknown, Msg: msg}
}

// ackKind says how an attempt learns that its message was stored.
type ackKind uint8

const (
	replyAck ackKind = iota // from the sequencer's reply
	liveAck                 // from the live copy only (wire.AckLive)
)

// try makes one attempt on subj, which also ends when stored yields the
// message. definite reports whether its answer settles the append: stored,
// or refused for a reason a retry cannot change.
func (c *Client) try(ctx context.Context, subj, game string, body []byte, idem string, stored <-chan Stored, ack ackKind) (r Result, err error, definite bool) {
	m := &nats.Msg{Subject: subj, Data: body, Header: nats.Header{wire.HdrGame: {game}, wire.HdrIdem: {idem}}}
	if ack == liveAck {
		m.Header[wire.HdrAck] = []string{wire.AckLive}
	}
	d := c.attempt
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	resp, st, err := c.replies.requestOr(ctx.Done(), m, d, stored)
	if err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return Result{}, errorf(wire.CodeOutcomeUnknown, "append: %v", err), true
		}
		return Result{}, err, false // no answer: timeout, no responders, reconnecting
	}
	if resp == nil {
		return Result{MsgID: st.ID, Seq: st.Seq, TS: st.TS}, nil, true
	}
	var rep AppendReply
	if err := decodeReply(resp.Data, &rep); err != nil {
		return Result{}, fmt.Errorf("sequencer: bad append reply: %w", err), false
	}
	if rep.Error != nil {
		e := &Error{Code: rep.Error.Code, Msg: rep.Error.Message}
		switch rep.Error.Code {
		case wire.CodeUnavailable, wire.CodeOutcomeUnknown, wire.CodeWrongPartition:
			return Result{}, e, false // another sequencer may take it
		}
		return Result{}, e, true
	}
	return Result{MsgID: rep.MsgID, Seq: rep.Seq, TS: rep.TS, Duplicate: rep.Duplicate}, nil, true
}

// LocalFirst appends through an in-process Service's Appender for the
// partitions that Service owns, skipping the NATS round trip, and through
// a Client for the others. When the owner of another partition gives no
// definite answer within the attempt timeout, it appends through its own
// Appender: any sequencer may append to any game.
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
			return r, localOutcome(err)
		}
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return l.Append(ctx, game, body, idem)
}

// Append appends like Client.Append.
func (l *LocalFirst) Append(ctx context.Context, game string, body []byte, idem string) (Result, error) {
	p := wire.Partition(game, l.client.parts)
	app := l.svc.Appender()
	if app != nil && l.svc.Owns(p) {
		r, err := app.Append(ctx, game, body, idem)
		if !errors.Is(err, ErrClosed) {
			return r, localOutcome(err)
		}
	}
	if idem == "" {
		idem = nuid.Next()
	}
	r, err, definite := l.client.try(ctx, l.client.names.AppendSubject(p), game, body, idem, nil, replyAck)
	if definite {
		return r, err
	}
	if app != nil {
		r, err := app.Append(ctx, game, body, idem)
		if !errors.Is(err, ErrClosed) {
			return r, localOutcome(err)
		}
	}
	return l.client.Append(ctx, game, body, idem)
}

// localOutcome turns a local Appender's end of waiting into the error a
// Client gives: the Appender goes on retrying, so the message may be
// stored.
func localOutcome(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &Error{Code: wire.CodeOutcomeUnknown, Msg: "no definite answer in time; the message may have been stored"}
	}
	return err
}
