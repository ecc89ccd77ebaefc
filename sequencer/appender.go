package sequencer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Result is where an appended message landed.
type Result struct {
	MsgID     uint64 // the game's message number
	Seq       uint64 // stream sequence
	TS        int64  // append time, Unix milliseconds
	Duplicate bool   // the idempotency key had already been appended
}

// maxQueue bounds the messages waiting behind one game's in-flight append.
const maxQueue = 10_000

// maxBatchBytes bounds the payload of one atomic batch.
const maxBatchBytes = 4 << 20

// Appender numbers and appends game messages. Per game it keeps at most one
// publish in flight and sends everything queued behind it as one atomic
// batch when it returns; games are appended in parallel. Correctness rests on
// JetStream's expected-last-subject-sequence check alone, so any number of
// Appenders, in any processes, may append to the same game.
type Appender struct {
	// Static after construction.
	cfg      Config
	names    wire.Names
	st       logStore
	heads    headStore
	log      *slog.Logger
	m        *Metrics
	live     publisher       // where live copies are published
	feeds    *Feeds          // this process's feeds, if any (Service.LocalFeeds)
	batchSem []chan struct{} // per partition: atomic batches in flight
	idPrefix string
	ctx      context.Context // cancelled by Close to abandon retries
	cancel   context.CancelFunc

	idSeq atomic.Uint64
	wg    sync.WaitGroup // flush goroutines, janitor, checkpointer

	mu sync.Mutex
	// Guarded by mu.
	games       map[string]*gameState
	closing     bool
	checkpoints map[string]uint64 // game → msg_id to record in the heads bucket
}

type gameState struct {
	// Static after construction.
	name    string
	p       int
	subject string
	live    string // the game's live subject

	// Guarded by Appender.mu.
	queue    []*pending
	busy     bool                // a flush goroutine owns the fields below
	byIdem   map[string]*pending // queued or in flight, by idempotency key
	lastUsed time.Time

	// Owned by the flush goroutine while busy; read under mu otherwise.
	known   bool   // the fields below reflect a head we read or wrote
	lastSeq uint64 // stream sequence of the game's last message (0: none)
	lastID  uint64 // msg_id of the game's last message
	pageSeq uint64 // stream sequence of msg_id PageStart(lastID); 0 if unknown
}

type pending struct {
	body  []byte
	idem  string // the caller's key, or one made up for it
	key   string // its Nats-Msg-Id: the game and idem, so keys of different games never meet
	calls []func(Result, error)

	// Owned by whoever appends it (flush goroutine or inline caller).
	since time.Time // first publish since it was last looked for in the log; zero: none
	after uint64    // the game's last stream sequence at that publish
}

// headStore keeps the heads checkpoints; jetstream.KeyValue implements it.
type headStore interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
}

// publisher publishes live copies; *nats.Conn implements it.
type publisher interface {
	PublishMsg(m *nats.Msg) error
}

// NewAppender returns an Appender publishing through nc. The streams and
// buckets must exist (Provision).
func NewAppender(ctx context.Context, nc *nats.Conn, cfg Config) (*Appender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	heads, err := js.KeyValue(ctx, cfg.names().HeadsBucket())
	if err != nil {
		return nil, errors.Join(errors.New("sequencer: open heads bucket (run Provision first)"), err)
	}
	return newAppender(cfg, newStore(nc, cfg.names(), cfg.RequestTimeout, cfg.PublishTimeout), heads, nc), nil
}

// newAppender returns an Appender over st, heads and live; cfg has its
// defaults.
func newAppender(cfg Config, st logStore, heads headStore, live publisher) *Appender {
	a := &Appender{
		cfg:         cfg,
		names:       cfg.names(),
		st:          st,
		heads:       heads,
		log:         cfg.Logger,
		m:           cfg.Metrics,
		live:        live,
		batchSem:    make([]chan struct{}, cfg.Partitions),
		idPrefix:    nuid.Next() + "-",
		games:       make(map[string]*gameState),
		checkpoints: make(map[string]uint64),
	}
	for i := range a.batchSem {
		a.batchSem[i] = make(chan struct{}, cfg.MaxInflightBatches)
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.wg.Add(2)
	go a.janitor()
	go a.checkpointer()
	return a
}

// Append appends body (a JSON object, see ValidateBody) to the game's log and
// waits until it is stored. idem, if not empty, makes retries safe: every
// append with the same key within the duplicate window yields the same
// Result. If ctx ends first the message may still be appended; retry with
// the same key to learn its msg_id.
//
// When nothing of the game is queued or in flight, Append publishes on the
// caller's goroutine, which saves a goroutine hand-off per message for a
// game whose messages arrive one at a time. That one attempt waits at most
// the request timeout or until ctx's deadline (a cancelled ctx is noticed
// after it); retries continue on a goroutine of the Appender while the
// caller waits for ctx as usual.
func (a *Appender) Append(ctx context.Context, game string, body []byte, idem string) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	deadline, _ := ctx.Deadline()
	return a.appendUntil(ctx, deadline, false, game, body, idem)
}

// AppendWithin is Append bounded by d rather than by a deadline in ctx
// (which still cancels the wait): an append published inline, the common
// case, then needs no timer of its own.
func (a *Appender) AppendWithin(ctx context.Context, d time.Duration, game string, body []byte, idem string) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	return a.appendUntil(ctx, time.Now().Add(d), true, game, body, idem)
}

// appendUntil appends, publishing inline when the game is idle (bounded by
// deadline, if not zero), and waits for the outcome until ctx ends or, with
// timer set, until deadline (which ctx does not carry).
func (a *Appender) appendUntil(ctx context.Context, deadline time.Time, timer bool, game string, body []byte, idem string) (Result, error) {
	type outcome struct {
		r   Result
		err error
	}
	ch := make(chan outcome, 1)
	done := func(r Result, err error) { ch <- outcome{r, err} }
	g, p, err := a.enqueue(game, body, idem, done, true)
	if err != nil {
		return Result{}, err
	}
	if p != nil {
		if r, err, ok := a.flushInline(deadline, g, p); ok {
			return r, err
		}
	}
	var expired <-chan time.Time
	if timer {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	select {
	case o := <-ch:
		return o.r, o.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case <-expired:
		return Result{}, context.DeadlineExceeded
	}
}

// flushInline makes the first attempt to append p, the only message of the
// idle game g, on the caller's goroutine. ok is false when the outcome is
// not known yet: a flush goroutine then retries and reports to p's calls.
func (a *Appender) flushInline(deadline time.Time, g *gameState, p *pending) (r Result, err error, ok bool) {
	batch := []*pending{p}
	res, errs, ok := a.appendBatch(deadline, g, batch, 0, true)
	if !ok {
		go a.flushFrom(g, batch)
		return Result{}, nil, false
	}
	a.settle(g, batch, res, errs, 1) // calls[0] is the caller, answered below
	a.mu.Lock()
	if len(g.queue) == 0 {
		a.idleLocked(g)
		a.mu.Unlock()
		a.wg.Done()
	} else {
		a.mu.Unlock()
		go a.flushFrom(g, nil)
	}
	return res[0], errs[0], true
}

// AppendAsync is Append without waiting: done is called exactly once, from
// another goroutine, unless AppendAsync itself returns an error. done must
// not block.
func (a *Appender) AppendAsync(game string, body []byte, idem string, done func(Result, error)) error {
	_, _, err := a.enqueue(game, body, idem, done, false)
	return err
}

// enqueue validates and queues an append whose outcome goes to done. With
// inline set and the game idle, it marks the game busy and returns the
// pending append for the caller to publish (flushInline) instead of starting
// a flush goroutine.
func (a *Appender) enqueue(game string, body []byte, idem string, done func(Result, error), inline bool) (*gameState, *pending, error) {
	if err := wire.ValidateGame(game); err != nil {
		a.countFail(wire.CodeInvalidGame)
		return nil, nil, errorf(wire.CodeInvalidGame, "%v", err)
	}
	if err := ValidateBody(body, a.cfg.MaxMessageBytes); err != nil {
		var e *Error
		if errors.As(err, &e) {
			a.countFail(e.Code)
		}
		return nil, nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return nil, nil, ErrClosed
	}
	g := a.games[game]
	if g == nil {
		p := wire.Partition(game, a.cfg.Partitions)
		g = &gameState{name: game, p: p, subject: a.names.LogSubject(p, game), live: a.names.LiveSubject(p, game)}
		a.games[game] = g
		if a.m != nil {
			a.m.GamesActive.Inc()
		}
	}
	if idem != "" {
		if p := g.byIdem[idem]; p != nil {
			p.calls = append(p.calls, done)
			return g, nil, nil
		}
	}
	if len(g.queue) >= maxQueue {
		a.countFail(wire.CodeUnavailable)
		return nil, nil, errorf(wire.CodeUnavailable, "game %s has %d appends waiting; retry later", game, len(g.queue))
	}
	p := &pending{body: body, idem: idem, calls: []func(Result, error){done}}
	if idem == "" {
		p.idem = a.idPrefix + strconv.FormatUint(a.idSeq.Add(1), 36)
		p.key = p.idem
	} else {
		p.key = game + "/" + idem
		if g.byIdem == nil {
			g.byIdem = make(map[string]*pending)
		}
		g.byIdem[idem] = p
	}
	if !g.busy && inline {
		g.busy = true
		a.wg.Add(1) // the caller publishes p (flushInline), counted like a flush
		return g, p, nil
	}
	g.queue = append(g.queue, p)
	if !g.busy {
		g.busy = true
		a.wg.Add(1)
		go a.flush(g)
	}
	return g, nil, nil
}

func (a *Appender) countFail(code string) {
	if a.m != nil {
		a.m.AppendFailed.WithLabelValues(code).Inc()
	}
}

// flush appends the game's queue, one publish at a time, until it is empty.
func (a *Appender) flush(g *gameState) { a.flushFrom(g, nil) }

// flushFrom finishes batch (an inline append whose first attempt failed),
// if any, then appends the game's queue until it is empty. The caller has
// counted it in a.wg and marked g busy.
func (a *Appender) flushFrom(g *gameState, batch []*pending) {
	defer a.wg.Done()
	if batch != nil {
		res, errs, _ := a.appendBatch(time.Time{}, g, batch, 1, false)
		a.settle(g, batch, res, errs, 0)
	}
	for {
		a.mu.Lock()
		n, size := 0, 0
		for n < len(g.queue) && n < a.cfg.MaxBatch && (n == 0 || size+len(g.queue[n].body) <= maxBatchBytes) {
			size += len(g.queue[n].body)
			n++
		}
		if n < a.cfg.BatchMin {
			n = min(n, 1)
		}
		if n == 0 {
			a.idleLocked(g)
			a.mu.Unlock()
			return
		}
		batch := g.queue[:n:n]
		g.queue = g.queue[n:]
		a.mu.Unlock()

		res, errs, _ := a.appendBatch(time.Time{}, g, batch, 0, false)
		a.settle(g, batch, res, errs, 0)
	}
}

// idleLocked records that no flush owns g any more.
func (a *Appender) idleLocked(g *gameState) {
	g.busy = false
	g.queue = nil
	g.lastUsed = time.Now()
}

// settle forgets batch's idempotency keys and reports each outcome to the
// calls waiting for it, except the first skip calls of the first message.
func (a *Appender) settle(g *gameState, batch []*pending, res []Result, errs []error, skip int) {
	a.mu.Lock()
	for _, p := range batch {
		if g.byIdem[p.idem] == p {
			delete(g.byIdem, p.idem)
		}
	}
	a.mu.Unlock()
	for i, p := range batch {
		if errs[i] != nil {
			var e *Error
			if errors.As(errs[i], &e) {
				a.countFail(e.Code)
			} else {
				a.countFail(wire.CodeInternal)
			}
		}
		calls := p.calls
		if i == 0 {
			calls = calls[skip:]
		}
		for _, call := range calls {
			call(res[i], errs[i])
		}
	}
}

// appendBatch appends batch in order, retrying until each message is stored,
// refused for good, or the Appender closes. Attempts are numbered from
// first (a batch whose first attempt failed elsewhere starts at 1, after a
// back-off). With once set it makes one attempt and reports ok false if that
// did not settle the batch. A publish waits at most until deadline (if not
// zero) or the request timeout.
//
// A retry reuses the messages' Nats-Msg-Ids, so JetStream stores each at
// most once — but it remembers them only for its duplicate window. Before a
// message whose first attempt lies more than three quarters of that window
// back is sent again, the game's messages stored since are read from the
// stream leader: if it is among them, that is its outcome; if not, it was
// never stored, and it is sent afresh.
func (a *Appender) appendBatch(deadline time.Time, g *gameState, batch []*pending, first int, once bool) (res []Result, errs []error, ok bool) {
	res = make([]Result, len(batch))
	errs = make([]error, len(batch))
	for attempt := first; ; attempt++ {
		if once && attempt > first {
			return nil, nil, false
		}
		if attempt > 0 && !a.sleep(attempt) {
			for i := range errs {
				errs[i] = errAbandoned
			}
			return res, errs, true
		}
		if !g.known {
			if err := a.refresh(g, attempt > 1); err != nil {
				a.retried("head")
				a.log.Debug("sequencer: read head", "game", g.name, "err", err)
				continue
			}
		}
		if a.pastHorizon(batch) {
			found, err := a.verify(g, batch, res)
			if err != nil {
				a.retried("verify")
				a.log.Debug("sequencer: look for a message past the duplicate window", "game", g.name, "err", err)
				continue
			}
			if n := count(found); n > 0 {
				// Stored by an earlier attempt; append what was not.
				rest := make([]*pending, 0, len(batch)-n)
				at := make([]int, 0, len(batch)-n)
				for i, p := range batch {
					if !found[i] {
						rest, at = append(rest, p), append(at, i)
					}
				}
				if len(rest) > 0 {
					r, e, _ := a.appendBatch(time.Time{}, g, rest, 0, false)
					for j, i := range at {
						res[i], errs[i] = r[j], e[j]
					}
				}
				return res, errs, true
			}
			if !g.known {
				continue // verify read the log: re-read the head before publishing
			}
		}
		msgs, ack, ts, err := a.publish(deadline, g, batch)
		if err == nil {
			if ack.Duplicate {
				// Only a single publish is answered this way: an earlier
				// attempt stored it, so the head moved without us.
				g.known = false
				st, err := a.duplicate(g, ack.Seq)
				if err != nil {
					a.retried("duplicate_lookup")
					continue
				}
				res[0] = Result{MsgID: st.ID, Seq: st.Seq, TS: st.TS, Duplicate: true}
				a.announceFound(g, st)
				return res, errs, true
			}
			prevSeq, stored := a.advance(g, batch, ack.Seq, ts, res)
			a.announce(g, msgs, prevSeq, stored)
			return res, errs, true
		}
		code := errCode(err)
		switch code {
		case int(jetstream.JSErrCodeStreamWrongLastSequence), int(jetstream.JSErrCodeStreamWrongLastSequenceConstant), errCodeLastSeqNotReady:
			g.known = false
			if a.m != nil {
				a.m.Conflicts.WithLabelValues(strconv.Itoa(code)).Inc()
			}
			continue
		case errCodeBatchDuplicate:
			// Part of the batch was stored by an earlier attempt (lost ack)
			// or by another sequencer: settle each message on its own.
			a.retried("batch_duplicate")
			for i := range batch {
				r, e, _ := a.appendBatch(time.Time{}, g, batch[i:i+1], 0, false)
				res[i], errs[i] = r[0], e[0]
			}
			return res, errs, true
		case errCodeBatchIncomplete, errCodeBatchTooMany, errCodeClusterUnavailable:
			g.known = false
			a.retried("batch")
			continue
		}
		var ae *apiError
		if errors.As(err, &ae) && ae.Code >= 400 && ae.Code < 500 {
			// Refused for good, e.g. larger than the stream allows.
			if len(batch) > 1 {
				for i := range batch {
					r, e, _ := a.appendBatch(time.Time{}, g, batch[i:i+1], 0, false)
					res[i], errs[i] = r[0], e[0]
				}
				return res, errs, true
			}
			a.log.Warn("sequencer: append refused", "game", g.name, "err", err)
			errs[0] = errorf(wire.CodeInvalidMessage, "refused by the log: %s", ae.Desc)
			return res, errs, true
		}
		// Timeout, no responders, leader change, lost connection: the
		// outcome is unknown, so re-read the head; the idempotency keys make
		// the retry safe.
		g.known = false
		a.retried("transport")
		a.log.Debug("sequencer: publish", "game", g.name, "err", err, "attempt", attempt)
	}
}

func count(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// horizon is how long after a message's first publish a retry may rely on
// JetStream's duplicate window to recognise it.
func (a *Appender) horizon() time.Duration { return a.cfg.DuplicateWindow * 3 / 4 }

// pastHorizon reports whether a message of batch was first published more
// than the horizon ago.
func (a *Appender) pastHorizon(batch []*pending) bool {
	for _, p := range batch {
		if !p.since.IsZero() && time.Since(p.since) > a.horizon() {
			return true
		}
	}
	return false
}

// verify looks for batch's messages, by Nats-Msg-Id, among the game's
// messages stored after the head their first publishes started from,
// reading from the stream leader. It fills res for the messages found and
// makes the others count as never sent. g's head is re-read afterwards.
func (a *Appender) verify(g *gameState, batch []*pending, res []Result) (found []bool, err error) {
	want := make(map[string]int, len(batch))
	after := uint64(0)
	for i, p := range batch {
		if p.since.IsZero() {
			continue
		}
		if len(want) == 0 || p.after < after {
			after = p.after
		}
		want[p.key] = i
	}
	found = make([]bool, len(batch))
	var stored []Stored
	for seq := after + 1; len(want) > 0; {
		st, err := a.st.nextFromLeader(a.ctx, g.p, g.name, seq)
		if errors.Is(err, errNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		if i, ok := want[st.key]; ok {
			res[i] = Result{MsgID: st.ID, Seq: st.Seq, TS: st.TS, Duplicate: true}
			found[i] = true
			delete(want, st.key)
			stored = append(stored, st)
		}
		seq = st.Seq + 1
	}
	if a.m != nil {
		a.m.Verified.WithLabelValues(strconv.FormatBool(len(stored) > 0)).Inc()
	}
	for i, p := range batch {
		if !found[i] {
			p.since = time.Time{}
		}
	}
	g.known = false
	for _, st := range stored {
		a.announceFound(g, st)
	}
	return found, nil
}

func (a *Appender) retried(reason string) {
	if a.m != nil {
		a.m.Retries.WithLabelValues(reason).Inc()
	}
}

// sleep backs off before retry attempt n (≥1) with full jitter; false if the
// Appender closed meanwhile.
func (a *Appender) sleep(n int) bool {
	// At most a quarter second: after a stream's leader election the next
	// attempt must not be far behind.
	d := time.Duration(250<<min(n, 10)) * time.Microsecond // 0.5ms … 256ms
	d = time.Duration(rand.Int64N(int64(d))) + 100*time.Microsecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.ctx.Done():
		return false
	}
}

// refresh reads the game's head from the stream; fromLeader avoids a replica
// that may trail the leader.
func (a *Appender) refresh(g *gameState, fromLeader bool) error {
	var (
		head Stored
		err  error
	)
	if fromLeader {
		head, err = a.st.lastFromLeader(a.ctx, g.p, g.name)
	} else {
		head, err = a.st.last(a.ctx, g.p, g.name)
	}
	switch {
	case errors.Is(err, errNotFound):
		// No stored message: a new game, or one whose every message
		// retention removed. The checkpoint keeps numbering going.
		var id uint64
		e, kerr := a.heads.Get(a.ctx, g.name)
		switch {
		case kerr == nil:
			id, _ = strconv.ParseUint(string(e.Value()), 10, 64)
		case !errors.Is(kerr, jetstream.ErrKeyNotFound):
			return kerr
		}
		g.lastSeq, g.lastID, g.pageSeq = 0, id, 0
	case err != nil:
		return err
	default:
		g.lastSeq, g.lastID = head.Seq, head.ID
		if wire.PageStart(head.ID) == head.ID {
			g.pageSeq = head.Seq
		} else {
			g.pageSeq = head.Anchor // PageStart(ID-1) == PageStart(ID)
		}
	}
	g.known = true
	return nil
}

// publish stamps and sends batch: one checked publish, or an atomic batch
// whose first message carries the check.
func (a *Appender) publish(deadline time.Time, g *gameState, batch []*pending) ([]*nats.Msg, *pubAck, int64, error) {
	now := time.Now()
	ts := now.UnixMilli()
	first := g.lastID + 1
	msgs := make([]*nats.Msg, len(batch))
	for i, p := range batch {
		if p.since.IsZero() {
			p.since, p.after = now, g.lastSeq
		}
		id := first + uint64(i)
		// One array holds every header value: one allocation, not four.
		// The append time is in the stamped body only (wire.StampedTS).
		vals := make([]string, 4)
		set := func(h nats.Header, k, v string) {
			vals[len(h)] = v
			h[k] = vals[len(h) : len(h)+1 : len(h)+1]
		}
		h := make(nats.Header, 8)
		set(h, wire.HdrMsgID, strconv.FormatUint(id, 10))
		set(h, nats.MsgIdHdr, p.key)
		if back := anchorBack(id, first); back > 0 {
			set(h, wire.HdrAnchor, "-"+strconv.FormatUint(back, 10))
		} else if id > 1 && g.pageSeq != 0 {
			set(h, wire.HdrAnchor, strconv.FormatUint(g.pageSeq, 10))
		}
		if i == 0 {
			set(h, nats.ExpectedLastSubjSeqHdr, strconv.FormatUint(g.lastSeq, 10))
		}
		msgs[i] = &nats.Msg{Subject: g.subject, Header: h, Data: stamp(make([]byte, 0, len(p.body)+40), p.body, id, ts)}
	}
	start := time.Now()
	var (
		ack *pubAck
		err error
	)
	if len(msgs) == 1 {
		ack, err = a.st.publish(deadline, msgs[0])
	} else {
		select {
		case a.batchSem[g.p] <- struct{}{}:
		case <-a.ctx.Done():
			return nil, nil, ts, ErrClosed
		}
		ack, err = a.st.publishBatch(deadline, nuid.Next(), msgs)
		<-a.batchSem[g.p]
		if err == nil && ack.Count != uint64(len(msgs)) {
			err = errors.New("sequencer: batch ack count mismatch")
		}
	}
	if a.m != nil {
		a.m.AppendLatency.Observe(time.Since(start).Seconds())
		if err == nil {
			a.m.BatchSize.Observe(float64(len(msgs)))
		}
	}
	return msgs, ack, ts, err
}

// anchorBack says how many messages back message id's anchor (the start of
// the page before it) lies when it is in id's batch, which starts at
// msg_id first; 0 when it lies before the batch (the game's first message
// has none).
func anchorBack(id, first uint64) uint64 {
	if id == 1 {
		return 0
	}
	if anchor := wire.PageStart(id - 1); anchor >= first {
		return id - anchor
	}
	return 0
}

// advance records a stored batch whose last message has sequence lastSeq and
// returns the batch as stored, the first message's predecessor in the game
// at sequence prevSeq.
func (a *Appender) advance(g *gameState, batch []*pending, lastSeq uint64, ts int64, res []Result) (prevSeq uint64, stored []Stored) {
	k := uint64(len(batch))
	first, firstSeq := g.lastID+1, lastSeq-(k-1)
	prevSeq, pageSeq := g.lastSeq, g.pageSeq
	stored = make([]Stored, len(batch))
	crossed := false
	for i := range batch {
		id, seq := first+uint64(i), firstSeq+uint64(i)
		res[i] = Result{MsgID: id, Seq: seq, TS: ts}
		stored[i] = Stored{Seq: seq, ID: id, TS: ts}
		// The anchor publish wrote, as an absolute sequence.
		if back := anchorBack(id, first); back > 0 {
			stored[i].Anchor = seq - back
		} else if id > 1 {
			stored[i].Anchor = pageSeq
		}
		if wire.PageStart(id) == id {
			g.pageSeq = seq
			crossed = true
		}
	}
	g.lastID += k
	g.lastSeq = lastSeq
	if a.m != nil {
		a.m.Appended.Add(float64(k))
	}
	if crossed {
		a.mu.Lock()
		a.checkpoints[g.name] = g.lastID
		a.mu.Unlock()
	}
	return prevSeq, stored
}

// announce makes a stored batch live: it hands the messages to this
// process's feeds (Service.LocalFeeds), which deliver them on this
// goroutine, and publishes each on the game's live subject for the feeds
// of other processes, with the headers a feed reads (the stream sequence,
// the game's previous sequence, msg_id and anchor). msgs
// carry the stored data and the msg_id header and are reused for the
// copies. Live copies are at most once: a feed that misses one fills the
// gap from the stream.
func (a *Appender) announce(g *gameState, msgs []*nats.Msg, prevSeq uint64, stored []Stored) {
	for i := range stored {
		stored[i].Data = msgs[i].Data
	}
	if a.feeds != nil {
		a.feeds.local(g.name, prevSeq, stored)
	}
	for i, m := range msgs {
		h := m.Header
		delete(h, nats.MsgIdHdr)
		delete(h, nats.ExpectedLastSubjSeqHdr)
		vals := make([]string, 3) // one allocation for the new values
		vals[0] = strconv.FormatUint(stored[i].Seq, 10)
		vals[1] = strconv.FormatUint(prevSeq, 10)
		h["Nats-Sequence"], h["Nats-Last-Sequence"] = vals[0:1:1], vals[1:2:2]
		if stored[i].Anchor != 0 {
			vals[2] = strconv.FormatUint(stored[i].Anchor, 10)
			h[wire.HdrAnchor] = vals[2:3:3]
		}
		prevSeq = stored[i].Seq
		m.Subject, m.Reply = g.live, "" // a reply subject would draw "no responders"
		if err := a.live.PublishMsg(m); err != nil {
			// Feeds find the message by their head checks.
			a.log.Debug("sequencer: publish live copy", "game", g.name, "err", err)
		}
	}
}

// announceFound makes live a message an earlier attempt stored: that
// attempt's ack, and so its live copy, may have been lost. Its predecessor
// is not known here: naming the message itself matches no feed's
// position, so feeds read from the stream what they lack.
func (a *Appender) announceFound(g *gameState, st Stored) {
	m := &nats.Msg{Header: nats.Header{wire.HdrMsgID: {strconv.FormatUint(st.ID, 10)}}, Data: st.Data}
	a.announce(g, []*nats.Msg{m}, st.Seq, []Stored{st})
}

// duplicate reads the message JetStream recognised a publish as a
// duplicate of, stored at seq.
func (a *Appender) duplicate(g *gameState, seq uint64) (Stored, error) {
	st, err := a.st.bySeq(a.ctx, g.p, seq)
	if err == nil && a.m != nil {
		a.m.Duplicates.Inc()
	}
	return st, err
}

// janitor drops the state of idle games, recording their heads.
func (a *Appender) janitor() {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.IdleEvict / 2)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case now := <-t.C:
			a.mu.Lock()
			for name, g := range a.games {
				if !g.busy && len(g.queue) == 0 && now.Sub(g.lastUsed) >= a.cfg.IdleEvict {
					if g.known && g.lastID > 0 {
						a.checkpoints[name] = g.lastID
					}
					delete(a.games, name)
					if a.m != nil {
						a.m.GamesActive.Dec()
					}
				}
			}
			a.mu.Unlock()
		}
	}
}

// checkpointer writes recorded heads to the heads bucket once a second.
func (a *Appender) checkpointer() {
	defer a.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			a.writeCheckpoints(context.Background())
			return
		case <-t.C:
			a.writeCheckpoints(a.ctx)
		}
	}
}

func (a *Appender) writeCheckpoints(ctx context.Context) {
	a.mu.Lock()
	cps := a.checkpoints
	a.checkpoints = make(map[string]uint64)
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	for game, id := range cps {
		if _, err := a.heads.Put(ctx, game, []byte(strconv.FormatUint(id, 10))); err != nil {
			a.log.Warn("sequencer: write head checkpoint", "game", game, "err", err)
		}
	}
}

// Close stops taking appends, lets queued ones finish until ctx ends, then
// abandons what is left (their callers get ErrClosed) and returns when every
// goroutine has exited.
func (a *Appender) Close(ctx context.Context) error {
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			a.mu.Lock()
			busy := false
			for _, g := range a.games {
				busy = busy || g.busy
			}
			a.mu.Unlock()
			if !busy {
				return
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	<-drained
	a.mu.Lock()
	for name, g := range a.games {
		if !g.busy && g.known && g.lastID > 0 {
			a.checkpoints[name] = g.lastID
		}
	}
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
	a.st.close()
	return ctx.Err()
}
