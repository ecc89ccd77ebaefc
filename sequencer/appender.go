package sequencer

import (
	"context"
	"errors"
	"log/slog"
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

// maxQueue and maxQueueBytes bound the messages waiting behind one game's
// in-flight append, by count and by payload.
const (
	maxQueue      = 10_000
	maxQueueBytes = 16 << 20
)

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
	feeds    *Feeds          // this process's feeds, if any (WithLocalFeeds)
	batchSem []chan struct{} // per partition: atomic batches in flight
	idPrefix string
	ctx      context.Context // cancelled by Close to abandon retries
	cancel   context.CancelFunc

	idSeq atomic.Uint64
	wg    sync.WaitGroup // flush goroutines, janitor, checkpointer

	mu sync.Mutex
	// Guarded by mu.
	games       map[string]*gameState
	busy        int           // games a flush owns
	drained     chan struct{} // closed when busy drops to 0 while Close waits; nil: nobody waits
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
	queued   int                 // payload bytes in queue
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
func NewAppender(ctx context.Context, nc *nats.Conn, cfg Config, opts ...Option) (*Appender, error) {
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
	a := newAppender(cfg, newStore(nc, cfg.names(), cfg.RequestTimeout, cfg.PublishTimeout), heads, nc)
	if o := collect(opts); o.feeds != nil {
		a.live, a.feeds = o.feeds.nc, o.feeds
	}
	return a, nil
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
	return a.appendUntil(ctx, deadline, game, body, idem)
}

// AppendWithin is Append bounded by d rather than by a deadline in ctx
// (which still cancels the wait): an append published inline, the common
// case, then needs no timer of its own.
func (a *Appender) AppendWithin(ctx context.Context, d time.Duration, game string, body []byte, idem string) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	return a.appendUntil(ctx, time.Now().Add(d), game, body, idem)
}

// appendUntil appends, publishing inline when the game is idle (bounded by
// deadline, if not zero), and waits for the outcome until ctx ends or
// deadline passes. The timer for deadline is made only if the inline
// attempt did not settle the append.
func (a *Appender) appendUntil(ctx context.Context, deadline time.Time, game string, body []byte, idem string) (Result, error) {
	type outcome struct {
		r   Result
		err error
	}
	ch := make(chan outcome, 1)
	done := func(r Result, err error) { ch <- outcome{r, err} }
	g, p, err := a.enqueue(game, body, idem, done, publishInline)
	if err != nil {
		return Result{}, err
	}
	if p != nil {
		if r, err, ok := a.flushInline(deadline, g, p); ok {
			return r, err
		}
	}
	var expired <-chan time.Time
	if !deadline.IsZero() {
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
	pub := a.newPublication(g, []*pending{p}, deadline)
	if !pub.run(0, justOnce) {
		go a.flushFrom(g, pub.batch)
		return Result{}, nil, false
	}
	res, errs := pub.res, pub.errs
	a.settle(g, pub.batch, res, errs, 1) // calls[0] is the caller, answered below
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
	_, _, err := a.enqueue(game, body, idem, done, startFlush)
	return err
}

// flushMode says who publishes an append to an idle game.
type flushMode uint8

const (
	startFlush    flushMode = iota // a flush goroutine of the Appender
	publishInline                  // the caller (flushInline), on its own goroutine
)

// enqueue validates and queues an append whose outcome goes to done. With
// publishInline and the game idle, it marks the game busy and returns the
// pending append for the caller to publish (flushInline) instead of
// starting a flush goroutine.
func (a *Appender) enqueue(game string, body []byte, idem string, done func(Result, error), mode flushMode) (*gameState, *pending, error) {
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
	if len(g.queue) >= maxQueue || g.queued+len(body) > maxQueueBytes {
		a.countFail(wire.CodeUnavailable)
		return nil, nil, errorf(wire.CodeUnavailable, "game %s has %d appends (%d bytes) waiting; retry later", game, len(g.queue), g.queued)
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
	if !g.busy && mode == publishInline {
		a.busyLocked(g)
		a.wg.Add(1) // the caller publishes p (flushInline), counted like a flush
		return g, p, nil
	}
	g.queue = append(g.queue, p)
	g.queued += len(body)
	if !g.busy {
		a.busyLocked(g)
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
		pub := a.newPublication(g, batch, time.Time{})
		pub.run(1, untilSettled)
		a.settle(g, batch, pub.res, pub.errs, 0)
	}
	for {
		a.mu.Lock()
		n, size := 0, 0
		for n < len(g.queue) && n < a.cfg.MaxBatch && (n == 0 || size+len(g.queue[n].body) <= maxBatchBytes) {
			size += len(g.queue[n].body)
			n++
		}
		if n < a.cfg.BatchMin && n > 1 {
			n, size = 1, len(g.queue[0].body)
		}
		if n == 0 {
			a.idleLocked(g)
			a.mu.Unlock()
			return
		}
		batch := g.queue[:n:n]
		g.queue = g.queue[n:]
		g.queued -= size
		a.mu.Unlock()

		pub := a.newPublication(g, batch, time.Time{})
		pub.run(0, untilSettled)
		a.settle(g, batch, pub.res, pub.errs, 0)
	}
}

// busyLocked records that a flush owns g from now on.
func (a *Appender) busyLocked(g *gameState) {
	g.busy = true
	a.busy++
}

// idleLocked records that no flush owns g any more.
func (a *Appender) idleLocked(g *gameState) {
	g.busy = false
	a.busy--
	if a.busy == 0 && a.drained != nil {
		close(a.drained) // Close waits for this
		a.drained = nil
	}
	g.queue, g.queued = nil, 0
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

// Close stops taking appends, lets queued ones finish until ctx ends, then
// abandons what is left (their callers get ErrClosed) and returns when every
// goroutine has exited.
func (a *Appender) Close(ctx context.Context) error {
	a.mu.Lock()
	a.closing = true
	var drained chan struct{}
	if a.busy > 0 {
		drained = make(chan struct{})
		a.drained = drained
	}
	a.mu.Unlock()
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
		}
	}
	a.mu.Lock()
	a.drained = nil
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
