package archiver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Archiver copies the partition streams into MongoDB. Each partition has a
// durable pull consumer shared by every archiver replica; a message is
// acknowledged only after MongoDB acknowledged its document (write concern
// majority), and the unique index on (game, msg_id) turns redeliveries into
// no-ops, so every message lands exactly once in effect. It also serves the
// history request API (see HistoryClient).
type Archiver struct {
	// Static after construction.
	nc      *nats.Conn
	js      jetstream.JetStream
	archive *Archive
	cfg     Config
	log     *slog.Logger
	m       *Metrics // may be nil
	// infoEvery is how often consumer info feeds the pending gauges.
	infoEvery time.Duration
	// Test hooks, nil in production.
	// crashAfterInsert runs after an attempt's insert; a non-nil result
	// makes the partition stop at once, as if the process died: no games
	// update, no ack, no nak.
	crashAfterInsert func(p int) error
	// loseInsertAnswer runs after an attempt's insert of n messages; true
	// makes the archiver forget the answer, as when the insert was applied
	// but its reply timed out.
	loseInsertAnswer func(p, n int) bool
	// failGames runs before a games update of n messages; a non-nil result
	// fails it.
	failGames func(p, n int) error
	// slowLookup runs before a look-up of duplicates in an attempt at n
	// messages, bounded by timeout; true makes it time out.
	slowLookup func(p, n int, timeout time.Duration) bool

	indexed   atomic.Bool
	serving   atomic.Bool
	consumers []atomic.Pointer[jetstream.Consumer] // by partition; set once created
	// held is, by partition, the ts (Unix ms) of the oldest message of the
	// batch being written or retried; 0 when none is.
	held []atomic.Int64
}

// New returns an Archiver reading the streams through nc and writing to
// client; Run starts it.
func New(nc *nats.Conn, client *mongo.Client, cfg Config) (*Archiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("archiver: %w", err)
	}
	return &Archiver{
		nc:        nc,
		js:        js,
		archive:   NewArchive(client, cfg.Database),
		cfg:       cfg,
		log:       cfg.Logger,
		m:         cfg.Metrics,
		infoEvery: 5 * time.Second,
		consumers: make([]atomic.Pointer[jetstream.Consumer], cfg.Partitions),
		held:      make([]atomic.Int64, cfg.Partitions),
	}, nil
}

// Ready reports whether the indexes exist, every partition's consumer is
// set up and the history API is served.
func (a *Archiver) Ready() bool {
	if !a.indexed.Load() || !a.serving.Load() {
		return false
	}
	for i := range a.consumers {
		if a.consumers[i].Load() == nil {
			return false
		}
	}
	return true
}

// Run archives until ctx ends. Then it stops fetching, finishes the write
// and ack of the batches in progress (a failing write is given up and its
// messages left for redelivery) and returns once every goroutine is done.
// Unavailable MongoDB or NATS are retried, never fatal; Run fails only for
// conditions an operator must fix (a conflicting index).
func (a *Archiver) Run(ctx context.Context) error {
	if err := a.ensureIndexes(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	hs, err := a.serveHistory(ctx)
	if err != nil {
		return err
	}
	a.serving.Store(true)
	a.log.Info("archiver: started", "partitions", a.cfg.Partitions, "database", a.cfg.Database, "durable", a.cfg.Durable)
	var wg sync.WaitGroup
	for p := range a.cfg.Partitions {
		wg.Go(func() { a.runPartition(ctx, p) })
	}
	wg.Go(func() { a.pollConsumers(ctx) })
	<-ctx.Done()
	a.serving.Store(false)
	hs.stop()
	wg.Wait()
	a.log.Info("archiver: stopped")
	return nil
}

func (a *Archiver) ensureIndexes(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.archive.EnsureIndexes(ictx)
		cancel()
		if err == nil {
			a.indexed.Store(true)
			return nil
		}
		if errors.Is(err, errIndexConflict) {
			return err
		}
		d := a.backoff(attempt)
		a.log.Warn("archiver: MongoDB not ready; retrying", "err", err, "retry_in", d)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// backoff returns the jittered exponential wait before retry attempt+1:
// 100ms, 200ms, 400ms, … up to MaxBackoff.
func (a *Archiver) backoff(attempt int) time.Duration {
	d := min(100*time.Millisecond<<min(attempt, 20), a.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// consumer creates or updates partition p's durable consumer, retrying
// until it succeeds or ctx ends (then nil).
func (a *Archiver) consumer(ctx context.Context, p int) jetstream.Consumer {
	names := a.cfg.names()
	cc := jetstream.ConsumerConfig{
		Durable:       a.cfg.Durable,
		Description:   "gamerelay archiver: copies the game log into MongoDB",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: names.LogFilter(p),
		AckWait:       a.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: max(a.cfg.BatchSize*16, 1000),
		MaxWaiting:    512,
	}
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := a.js.CreateOrUpdateConsumer(cctx, names.Stream(p), cc)
		cancel()
		if err == nil {
			if a.consumers[p].Swap(&c) == nil {
				a.log.Info("archiver: consuming", "stream", names.Stream(p), "durable", a.cfg.Durable)
			}
			return c
		}
		d := a.backoff(attempt)
		lvl := slog.LevelWarn
		if errors.Is(err, jetstream.ErrStreamNotFound) && attempt < 10 {
			lvl = slog.LevelInfo // the sequencers have not provisioned the log yet
		}
		a.log.Log(ctx, lvl, "archiver: cannot set up consumer; retrying", "stream", names.Stream(p), "err", err, "retry_in", d)
		if !sleep(ctx, d) {
			return nil
		}
	}
}

// runPartition fetches and archives partition p's messages until ctx ends.
func (a *Archiver) runPartition(ctx context.Context, p int) {
	c := a.consumer(ctx, p)
	for attempt := 0; c != nil && ctx.Err() == nil; {
		// The fetch is not tied to ctx: a batch is either fetched whole
		// (and then archived) or not at all.
		batch, err := c.Fetch(a.cfg.BatchSize, jetstream.FetchMaxWait(a.cfg.BatchWait))
		var msgs []jetstream.Msg
		if err == nil {
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			err = batch.Error()
		}
		if len(msgs) == 0 {
			if err != nil && !errors.Is(err, nats.ErrTimeout) {
				d := a.backoff(attempt)
				attempt++
				a.log.Warn("archiver: fetch failed; retrying", "partition", p, "err", err, "retry_in", d)
				if !sleep(ctx, d) {
					return
				}
				if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
					errors.Is(err, nats.ErrNoResponders) {
					c = a.consumer(ctx, p)
				}
			}
			continue
		}
		attempt = 0
		if !a.archiveBatch(ctx, p, msgs) {
			return
		}
	}
}

// archiveBatch writes msgs and acknowledges each once MongoDB has it. It
// returns false only when a test hook simulated a crash.
//
// The batch is written in attempts. An attempt that fails is followed, after
// a backoff, by one covering at most half as many messages, down to single
// messages, so a batch too big to be written within WriteTimeout still gets
// written; the next batch starts whole again. (If only its look-up of
// duplicates timed out, the next attempt keeps its size and gets twice the
// time for the look-up instead.) What an attempt learned about
// a message (inserted, archived already, conflicting) is kept, so a later
// attempt neither writes nor looks it up again. Each attempt acknowledges
// the messages it settled, and the ones it left go behind the rest of the
// batch: a message that keeps failing never holds up the others, and is
// never acknowledged unwritten.
func (a *Archiver) archiveBatch(ctx context.Context, p int, msgs []jetstream.Msg) bool {
	a.m.batch(len(msgs))
	rest := make([]*message, 0, len(msgs))
	jms := make(map[*message]jetstream.Msg, len(msgs))
	for _, jm := range msgs {
		m, err := a.parse(p, jm)
		if err != nil {
			// Not a gamerelay game message: it cannot be archived, and
			// redelivering it would not change that.
			a.m.rejected()
			a.log.Error("archiver: not archiving a foreign message in the game log", "partition", p, "subject", jm.Subject(), "err", err)
			_ = jm.TermWithReason("gamerelay archiver: " + err.Error())
			continue
		}
		rest = append(rest, m)
		jms[m] = jm
	}
	if len(rest) == 0 {
		return true
	}
	streamMsgs := func(ms []*message) []jetstream.Msg {
		out := make([]jetstream.Msg, len(ms))
		for i, m := range ms {
			out[i] = jms[m]
		}
		return out
	}
	defer a.held[p].Store(0)
	// Keep the batch ours while it is written and retried.
	h := holdBatch(streamMsgs(rest), a.cfg.AckWait/3)
	defer h.release()
	size := len(rest)
	failed, slowLookups := 0, 0 // consecutive failed attempts; look-ups that timed out
	for len(rest) > 0 {
		a.held[p].Store(max(oldestTS(rest), 1))
		part := rest[:min(size, len(rest))]
		done, err := a.attempt(ctx, p, part, a.cfg.WriteTimeout<<min(slowLookups, 4))
		if errors.Is(err, errCrashed) {
			return false
		}
		acked := make(map[*message]bool, len(done))
		for _, m := range done {
			acked[m] = true
		}
		left := make([]*message, 0, len(rest)-len(done))
		left = append(left, rest[len(part):]...)
		for _, m := range part {
			if !acked[m] {
				left = append(left, m)
			}
		}
		rest = left
		if len(done) > 0 {
			h.set(streamMsgs(rest))
			a.ackAll(p, streamMsgs(done))
			a.m.lag(p, time.Since(time.UnixMilli(newestTS(done))))
		}
		if err == nil {
			failed = 0
			continue
		}
		a.m.writeError()
		for _, m := range part {
			if !m.state.settled() {
				m.failures++
			}
		}
		if errors.Is(err, errSlowLookup) {
			// Halves would cost a pass each on FerretDB: give the same
			// messages more time instead.
			slowLookups++
		} else {
			size = max(len(part)/2, 1)
		}
		d := a.backoff(failed)
		failed++
		if ctx.Err() == nil {
			a.log.Warn("archiver: write failed; retrying", "partition", p, "messages", len(part), "written", len(done),
				"left", len(rest), "next_messages", min(size, len(rest)), "attempt", failed, "err", err, "retry_in", d)
		}
		if ctx.Err() != nil || !sleep(ctx, d) {
			h.release()
			a.log.Warn("archiver: stopping with unwritten messages; JetStream redelivers them", "partition", p, "messages", len(rest), "err", err)
			nakAll(streamMsgs(rest))
			return true
		}
	}
	return true
}

func oldestTS(ms []*message) int64 {
	ts := ms[0].ts
	for _, m := range ms {
		ts = min(ts, m.ts)
	}
	return ts
}

func newestTS(ms []*message) int64 {
	ts := ms[0].ts
	for _, m := range ms {
		ts = max(ts, m.ts)
	}
	return ts
}

var (
	errCrashed = errors.New("archiver: simulated crash")
	// errSlowLookup marks a look-up of duplicates that timed out: the next
	// one gets twice as long, since on FerretDB its cost grows with the
	// collection, not with the number of messages looked up.
	errSlowLookup = errors.New("archiver: duplicate look-up timed out")
)

// attempt makes one attempt at archiving part: it inserts the messages not
// known to be archived, looks up the duplicates among them, keeps the
// conflicting ones in ConflictsCollection and folds every settled message
// into games. It returns the messages of part that are now settled and
// summarised, ready to be acknowledged (also when a later step failed),
// and the first error. Writes get WriteTimeout each, the look-up
// lookupTimeout; a write in progress is finished even when ctx ends.
func (a *Archiver) attempt(ctx context.Context, p int, part []*message, lookupTimeout time.Duration) (done []*message, err error) {
	err = a.settle(ctx, p, part, lookupTimeout)
	if errors.Is(err, errCrashed) {
		return nil, err
	}
	for _, m := range part {
		if m.state.settled() {
			done = append(done, m)
		}
	}
	if len(done) == 0 {
		return nil, err
	}
	if gerr := a.summarise(ctx, p, done); gerr != nil {
		return nil, cmp.Or(err, gerr)
	}
	if err == nil && len(done) < len(part) {
		err = fmt.Errorf("archiver: %d messages left unsettled", len(part)-len(done))
	}
	return done, err
}

// settle brings the messages of part into the archive as far as it can,
// recording the outcome in each one's state.
func (a *Archiver) settle(ctx context.Context, p int, part []*message, lookupTimeout time.Duration) error {
	var res insertResult
	defer func() {
		a.m.inserted(res)
		if res.fallbacks > 0 {
			a.log.Error("archiver: MongoDB refused message bodies; archived them with raw only", "partition", p, "messages", res.fallbacks)
		}
		for _, m := range res.conflicts {
			a.log.Error("archiver: msg_id already archived from another stream message (numbers reused); kept in "+ConflictsCollection,
				"game", m.game, "msg_id", m.id, "partition", p, "seq", m.seq)
		}
	}()
	var before []archState
	if a.loseInsertAnswer != nil {
		before = make([]archState, len(part))
		for i, m := range part {
			before[i] = m.state
		}
	}
	wctx, cancel := a.writeContext(ctx)
	ins, err := a.archive.insert(wctx, part)
	cancel()
	if a.loseInsertAnswer != nil && a.loseInsertAnswer(p, len(part)) {
		for i, m := range part {
			m.state = before[i]
		}
		ins, err = insertResult{}, fmt.Errorf("archiver: insert: %w", context.DeadlineExceeded)
	}
	res.inserted, res.fallbacks = ins.inserted, ins.fallbacks
	if err == nil && a.crashAfterInsert != nil && a.crashAfterInsert(p) != nil {
		return errCrashed
	}
	// Refused documents do not keep the others from being settled.
	if err != nil && !errors.Is(err, errDocumentRefused) {
		return err
	}
	// A look-up only reads: it stops when ctx ends.
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	if a.slowLookup != nil && a.slowLookup(p, len(part), lookupTimeout) {
		cancel()
		lctx, cancel = context.WithDeadline(ctx, time.Now()) // already passed
	}
	found, lerr := a.archive.lookup(lctx, part)
	cancel()
	res.duplicates, res.conflicts = found.duplicates, found.conflicts
	if lerr != nil && errors.Is(lerr, context.DeadlineExceeded) && ctx.Err() == nil {
		lerr = fmt.Errorf("%w: %w", errSlowLookup, lerr)
	}
	wctx, cancel = a.writeContext(ctx)
	cerr := a.archive.storeConflicts(wctx, part)
	cancel()
	return cmp.Or(err, lerr, cerr)
}

// summarise folds the archived messages of ms into games. Conflicting
// messages (see ConflictsCollection) are left out.
func (a *Archiver) summarise(ctx context.Context, p int, ms []*message) error {
	games := make(map[string]*gameUpdate)
	n := 0
	for _, m := range ms {
		if m.state != stateArchived {
			continue
		}
		g := games[m.game]
		if g == nil {
			g = &gameUpdate{partition: p}
			games[m.game] = g
		}
		g.add(m)
		n++
	}
	if a.failGames != nil {
		if err := a.failGames(p, n); err != nil {
			return err
		}
	}
	wctx, cancel := a.writeContext(ctx)
	defer cancel()
	return a.archive.updateGames(wctx, games)
}

// writeContext bounds one write by WriteTimeout; the write is finished
// even when ctx ends.
func (a *Archiver) writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), a.cfg.WriteTimeout)
}

// parse reads a fetched stream message.
func (a *Archiver) parse(p int, jm jetstream.Msg) (*message, error) {
	subj := jm.Subject()
	game := subj[strings.LastIndexByte(subj, '.')+1:]
	if err := wire.ValidateGame(game); err != nil || !strings.HasPrefix(subj, a.cfg.names().LogSubject(p, "")) {
		return nil, fmt.Errorf("subject %q is not a game subject of partition %d", subj, p)
	}
	md, err := jm.Metadata()
	if err != nil {
		return nil, err
	}
	h := jm.Headers()
	id, err := strconv.ParseUint(h.Get(wire.HdrMsgID), 10, 64)
	if err != nil || id == 0 {
		return nil, fmt.Errorf("stream sequence %d has no valid %s header", md.Sequence.Stream, wire.HdrMsgID)
	}
	m := &message{game: game, id: id, seq: md.Sequence.Stream, partition: p, frame: jm.Data()}
	m.ts, _ = wire.StampedTS(m.frame)
	m.readFields()
	if m.ts == 0 {
		m.ts = md.Timestamp.UnixMilli() // stored time; never taken for messages the sequencer wrote
	}
	return m, nil
}

// ackAll acknowledges msgs and waits (a bounded time) for JetStream to
// confirm every ack. An ack that is lost only causes a redelivery, which
// the unique index absorbs.
func (a *Archiver) ackAll(p int, msgs []jetstream.Msg) {
	inbox := a.nc.NewInbox()
	confirmed := make(chan *nats.Msg, len(msgs))
	sub, err := a.nc.ChanSubscribe(inbox, confirmed)
	if err != nil {
		for _, jm := range msgs {
			_ = jm.Ack()
		}
		return
	}
	defer sub.Unsubscribe()
	for _, jm := range msgs {
		if err := a.nc.PublishMsg(&nats.Msg{Subject: jm.Reply(), Reply: inbox, Data: []byte("+ACK")}); err != nil {
			a.log.Warn("archiver: ack not sent; the batch will be redelivered", "partition", p, "err", err)
			return
		}
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for n := 0; n < len(msgs); n++ {
		select {
		case <-confirmed:
		case <-t.C:
			a.log.Warn("archiver: acks unconfirmed; some messages may be redelivered (harmless)", "partition", p, "unconfirmed", len(msgs)-n)
			return
		}
	}
}

// holdBatch keeps JetStream from redelivering msgs while they are being
// written or retried: it reports progress on them (or on those given to
// set since) every interval until release is called.
func holdBatch(msgs []jetstream.Msg, every time.Duration) *holder {
	h := &holder{msgs: msgs, stop: make(chan struct{}), done: make(chan struct{})}
	go h.run(every)
	return h
}

// holder is the goroutine of holdBatch.
type holder struct {
	// Static after construction.
	stop, done chan struct{}

	once sync.Once // closes stop

	mu   sync.Mutex
	msgs []jetstream.Msg // guarded by mu
}

func (h *holder) run(every time.Duration) {
	defer close(h.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			h.mu.Lock()
			msgs := h.msgs
			h.mu.Unlock()
			for _, jm := range msgs {
				_ = jm.InProgress()
			}
		}
	}
}

// set replaces the messages held.
func (h *holder) set(msgs []jetstream.Msg) {
	h.mu.Lock()
	h.msgs = msgs
	h.mu.Unlock()
}

// release stops holding and waits for the goroutine to end.
func (h *holder) release() {
	h.once.Do(func() { close(h.stop) })
	<-h.done
}

func nakAll(msgs []jetstream.Msg) {
	for _, jm := range msgs {
		_ = jm.Nak()
	}
}

// pollConsumers feeds the pending gauges from consumer info.
func (a *Archiver) pollConsumers(ctx context.Context) {
	if a.m == nil {
		return
	}
	t := time.NewTicker(a.infoEvery)
	defer t.Stop()
	for {
		for p := range a.consumers {
			c := a.consumers[p].Load()
			if c == nil {
				continue
			}
			ictx, cancel := context.WithTimeout(ctx, a.infoEvery)
			info, err := (*c).Info(ictx)
			cancel()
			if err != nil {
				continue
			}
			a.m.pending(p, info.NumPending, info.NumAckPending)
			if ts := a.held[p].Load(); ts != 0 {
				// A batch waits for MongoDB: the lag grows until it is written.
				a.m.lag(p, time.Since(time.UnixMilli(ts)))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Metrics) batch(n int) {
	if m != nil {
		m.BatchSize.Observe(float64(n))
	}
}

func (m *Metrics) rejected() {
	if m != nil {
		m.Rejected.Inc()
	}
}

func (m *Metrics) writeError() {
	if m != nil {
		m.WriteErrors.Inc()
	}
}

func (m *Metrics) inserted(r insertResult) {
	if m != nil {
		m.Archived.Add(float64(r.inserted))
		m.Duplicates.Add(float64(r.duplicates))
		m.BodyFallbacks.Add(float64(r.fallbacks))
		m.Conflicts.Add(float64(len(r.conflicts)))
	}
}

func (m *Metrics) lag(p int, d time.Duration) {
	if m != nil {
		m.Lag.WithLabelValues(strconv.Itoa(p)).Set(max(d.Seconds(), 0))
	}
}

func (m *Metrics) pending(p int, pending uint64, ackPending int) {
	if m != nil {
		lbl := strconv.Itoa(p)
		m.ConsumerPending.WithLabelValues(lbl).Set(float64(pending))
		m.AckPending.WithLabelValues(lbl).Set(float64(ackPending))
		if pending == 0 && ackPending == 0 {
			m.Lag.WithLabelValues(lbl).Set(0) // caught up
		}
	}
}
