package archiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// The history API (NATS request-reply on wire.Names.History, queue group
// HistoryQueue):
//
//	request  {"game":"G","since":N,"upto":M,"limit":L}
//	reply    {"frames":[<frame>,…],"next":K,"more":true|false}
//	         {"error":{"code":"history_gap","message":"…"}}
//
// frames are the archived frames with since < msg_id ≤ upto (upto 0: no
// bound) in msg_id order, dense, starting at since+1: at most limit of
// them (default and most MaxHistoryLimit) and, but for a single frame,
// at most MaxHistoryBytes of reply. next is the last msg_id returned (since
// if none); more is true if the next page should be asked for (since=next).
// If the archive lacks msg_id since+1 although the range asks for it, the
// reply is the history_gap error: a gap is never skipped silently.
const (
	HistoryQueue     = "gamerelay-archiver"
	MaxHistoryLimit  = 1000
	MaxHistoryBytes  = 512 << 10
	historyInFlight  = 32
	historyQueryTime = 10 * time.Second
)

// HistoryRequest is the JSON request of the history API.
type HistoryRequest struct {
	Game  string `json:"game"`
	Since uint64 `json:"since"`
	Upto  uint64 `json:"upto,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// HistoryReply is the JSON reply of the history API.
type HistoryReply struct {
	Frames []json.RawMessage `json:"frames,omitempty"`
	Next   uint64            `json:"next"`
	More   bool              `json:"more"`
	Error  *ReplyError       `json:"error,omitempty"`
}

// ReplyError is a refused history request.
type ReplyError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error is a history request refused for a reason the caller can act on.
// Code is a stable wire code; compare it or use errors.Is with the
// sentinels below.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return "archiver: " + e.Msg }

// Is matches errors with the same Code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Msg == "" || t.Msg == e.Msg)
}

// Sentinels; match with errors.Is.
var (
	// ErrHistoryGap: the archive lacks a message of the asked range.
	ErrHistoryGap = &Error{Code: wire.CodeHistoryGap}
	// ErrUnavailable: no archiver answered, or MongoDB is unavailable.
	ErrUnavailable = &Error{Code: wire.CodeUnavailable}
)

// historyServer tracks the request handlers of one Run.
type historyServer struct {
	sub *nats.Subscription
	sem chan struct{}
	wg  sync.WaitGroup

	mu sync.Mutex
	// Guarded by mu.
	closed bool
}

func (a *Archiver) serveHistory(ctx context.Context) (*historyServer, error) {
	hs := &historyServer{sem: make(chan struct{}, historyInFlight)}
	// In-flight requests finish even when ctx ends.
	hctx := context.WithoutCancel(ctx)
	sub, err := a.nc.QueueSubscribe(a.cfg.names().History(), HistoryQueue, func(m *nats.Msg) {
		hs.mu.Lock()
		if hs.closed {
			hs.mu.Unlock()
			return // the requester retries; another archiver answers
		}
		hs.wg.Add(1)
		hs.mu.Unlock()
		hs.sem <- struct{}{}
		go func() {
			defer hs.wg.Done()
			defer func() { <-hs.sem }()
			a.answerHistory(hctx, m)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("archiver: subscribe %s: %w", a.cfg.names().History(), err)
	}
	hs.sub = sub
	return hs, nil
}

// stop stops taking requests and waits for those in flight.
func (hs *historyServer) stop() {
	hs.mu.Lock()
	hs.closed = true
	hs.mu.Unlock()
	_ = hs.sub.Unsubscribe()
	hs.wg.Wait()
}

func (a *Archiver) answerHistory(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, historyQueryTime)
	defer cancel()
	reply, err := a.history(ctx, m.Data)
	result := "ok"
	if err != nil {
		e := &Error{Code: wire.CodeInternal, Msg: err.Error()}
		if !errors.As(err, &e) {
			a.log.Warn("archiver: history request failed", "err", err)
		}
		result = e.Code
		reply, _ = json.Marshal(HistoryReply{Error: &ReplyError{Code: e.Code, Message: e.Msg}})
	}
	if a.m != nil {
		a.m.HistoryRequests.WithLabelValues(result).Inc()
	}
	_ = m.Respond(reply)
}

var errPageFull = errors.New("page full")

// history answers one request; errors are *Error or internal.
func (a *Archiver) history(ctx context.Context, data []byte) ([]byte, error) {
	var req HistoryRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, &Error{Code: wire.CodeInvalidMessage, Msg: "bad history request: " + err.Error()}
	}
	if err := wire.ValidateGame(req.Game); err != nil {
		return nil, &Error{Code: wire.CodeInvalidGame, Msg: err.Error()}
	}
	limit := req.Limit
	if limit <= 0 || limit > MaxHistoryLimit {
		limit = MaxHistoryLimit
	}
	var buf bytes.Buffer
	buf.WriteString(`{"frames":[`)
	next, n, more := req.Since, 0, false
	if req.Upto == 0 || req.Upto > req.Since {
		err := a.archive.messages(ctx, req.Game, req.Since, req.Upto, int64(limit)+1, func(r Record) error {
			if r.MsgID != next+1 {
				if n == 0 {
					return &Error{Code: wire.CodeHistoryGap, Msg: fmt.Sprintf("game %s: the archive lacks msg_id %d (next archived: %d)", req.Game, next+1, r.MsgID)}
				}
				more = true // the next request reports the gap
				return errPageFull
			}
			if n == limit || (n > 0 && buf.Len()+len(r.Frame) > MaxHistoryBytes-64) {
				more = true
				return errPageFull
			}
			if !json.Valid(r.Frame) {
				return fmt.Errorf("game %s msg_id %d: archived frame is not valid JSON", req.Game, r.MsgID)
			}
			if n > 0 {
				buf.WriteByte(',')
			}
			buf.Write(r.Frame)
			n++
			next = r.MsgID
			return nil
		})
		var he *Error
		switch {
		case errors.Is(err, errPageFull):
		case errors.As(err, &he):
			return nil, he
		case err != nil:
			return nil, &Error{Code: wire.CodeUnavailable, Msg: err.Error()}
		case req.Upto != 0 && next < req.Upto:
			// The archive ends before upto.
			if n == 0 {
				return nil, &Error{Code: wire.CodeHistoryGap, Msg: fmt.Sprintf("game %s: the archive holds no msg_id from %d to %d", req.Game, next+1, req.Upto)}
			}
			more = true
		}
	}
	buf.WriteString(`],"next":`)
	buf.WriteString(strconv.FormatUint(next, 10))
	buf.WriteString(`,"more":`)
	buf.WriteString(strconv.FormatBool(more))
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// HistoryClient reads archived history through the archivers' history API.
// It is what gateways use for messages the stream no longer holds; it is
// safe for concurrent use.
type HistoryClient struct {
	// Static after construction.
	nc      *nats.Conn
	subject string
	attempt time.Duration
}

// NewHistoryClient returns a client for the installation with namespace
// ("" means the default).
func NewHistoryClient(nc *nats.Conn, namespace string) *HistoryClient {
	return &HistoryClient{nc: nc, subject: wire.Names{NS: namespace}.History(), attempt: 15 * time.Second}
}

// Range calls fn for every message of game with since < msg_id ≤ upto, in
// msg_id order, each exactly once, with the frame clients receive. It
// checks that the msg_ids are dense and fails with an error matching
// ErrHistoryGap if the archive lacks one. While no archiver answers (or
// MongoDB is unavailable) it retries until ctx ends, then fails with an
// error matching ErrUnavailable. fn must not retain frame after it returns.
func (c *HistoryClient) Range(ctx context.Context, game string, since, upto uint64, fn func(msgID uint64, frame []byte) error) error {
	next := since
	for next < upto {
		rep, err := c.page(ctx, HistoryRequest{Game: game, Since: next, Upto: upto})
		if err != nil {
			return err
		}
		for _, f := range rep.Frames {
			id, ok := frameMsgID(f)
			if !ok || id != next+1 {
				return &Error{Code: wire.CodeHistoryGap, Msg: fmt.Sprintf("game %s: archive answered msg_id %d after %d", game, id, next)}
			}
			if err := fn(id, f); err != nil {
				return err
			}
			next = id
		}
		if next < upto && (!rep.More || len(rep.Frames) == 0) {
			return &Error{Code: wire.CodeHistoryGap, Msg: fmt.Sprintf("game %s: the archive ends at msg_id %d, before %d", game, next, upto)}
		}
	}
	return nil
}

// page asks for one page, retrying while nobody can answer.
func (c *HistoryClient) page(ctx context.Context, req HistoryRequest) (*HistoryReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var last error
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.attempt)
		resp, err := c.nc.RequestWithContext(actx, c.subject, body)
		cancel()
		switch {
		case err == nil:
			var rep HistoryReply
			if err := json.Unmarshal(resp.Data, &rep); err != nil {
				return nil, fmt.Errorf("archiver: bad history reply: %w", err)
			}
			if rep.Error == nil {
				return &rep, nil
			}
			if rep.Error.Code != wire.CodeUnavailable {
				return nil, &Error{Code: rep.Error.Code, Msg: rep.Error.Message}
			}
			last = &Error{Code: rep.Error.Code, Msg: rep.Error.Message}
		case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout),
			errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			last = err
		default:
			if ctx.Err() != nil {
				return nil, errors.Join(&Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("history of %s: %v", req.Game, last)}, ctx.Err())
			}
			return nil, &Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("history of %s: %v", req.Game, err)}
		}
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 9)))
		select {
		case <-ctx.Done():
			return nil, errors.Join(&Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("history of %s: %v", req.Game, last)}, ctx.Err())
		case <-time.After(d):
		}
	}
}

// frameMsgID reads the top-level "msg_id" of a frame.
func frameMsgID(frame []byte) (uint64, bool) {
	var id uint64
	found := false
	err := jsonobj.Scan(frame, func(k, v []byte) error {
		if jsonobj.KeyEquals(k, "msg_id") {
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return err
			}
			id, found = n, true
		}
		return nil
	})
	return id, err == nil && found
}
