package archiver

import (
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
// durable pull consumer shared by every archiver replica; a batch is
// acknowledged only after MongoDB acknowledged its write (write concern
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
	// crashAfterInsert, if set (tests), runs after a batch's messages were
	// inserted; a non-nil result makes the partition stop at once, as if
	// the process died: no games update, no ack, no nak.
	crashAfterInsert func(p int) error

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

// archiveBatch writes msgs and acknowledges them once MongoDB has them. It
// returns false only when a test hook simulated a crash.
func (a *Archiver) archiveBatch(ctx context.Context, p int, msgs []jetstream.Msg) bool {
	a.m.batch(len(msgs))
	batch := make([]*message, 0, len(msgs))
	keep := msgs[:0:0]
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
		batch = append(batch, m)
		keep = append(keep, jm)
	}
	msgs = keep
	if len(batch) == 0 {
		return true
	}
	oldest, newest := batch[0].ts, batch[0].ts
	for _, m := range batch {
		oldest, newest = min(oldest, m.ts), max(newest, m.ts)
	}
	a.held[p].Store(max(oldest, 1))
	defer a.held[p].Store(0)
	// Keep the batch ours while it is written and retried.
	release := holdBatch(msgs, a.cfg.AckWait/3)
	for attempt := 0; ; attempt++ {
		// A write in progress is finished even when ctx ends.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.WriteTimeout)
		err := a.write(wctx, p, batch, attempt >= 2)
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, errCrashed) {
			release()
			return false
		}
		a.m.writeError()
		d := a.backoff(attempt)
		if ctx.Err() == nil {
			a.log.Warn("archiver: write failed; retrying", "partition", p, "messages", len(batch), "attempt", attempt+1, "err", err, "retry_in", d)
		}
		if ctx.Err() != nil || !sleep(ctx, d) {
			release()
			a.log.Warn("archiver: stopping with an unwritten batch; JetStream redelivers it", "partition", p, "messages", len(msgs), "err", err)
			nakAll(msgs)
			return true
		}
	}
	release()
	a.ackAll(p, msgs)
	a.m.lag(p, time.Since(time.UnixMilli(newest)))
	return true
}

var errCrashed = errors.New("archiver: simulated crash")

// write inserts the batch and folds it into the games collection.
// Conflicting messages (see ConflictsCollection) are left out of games.
func (a *Archiver) write(ctx context.Context, p int, batch []*message, fallback bool) error {
	res, err := a.archive.insert(ctx, batch, fallback)
	a.m.inserted(res)
	if res.fallbacks > 0 {
		a.log.Error("archiver: MongoDB refused message bodies; archived them with raw only", "partition", p, "messages", res.fallbacks)
	}
	for _, m := range res.conflicts {
		a.log.Error("archiver: msg_id already archived from another stream message (numbers reused); kept in "+ConflictsCollection,
			"game", m.game, "msg_id", m.id, "partition", p, "seq", m.seq)
	}
	if err != nil {
		return err
	}
	if a.crashAfterInsert != nil {
		if err := a.crashAfterInsert(p); err != nil {
			return errCrashed
		}
	}
	conflict := make(map[*message]bool, len(res.conflicts))
	for _, m := range res.conflicts {
		conflict[m] = true
	}
	games := make(map[string]*gameUpdate)
	for _, m := range batch {
		if conflict[m] {
			continue
		}
		g := games[m.game]
		if g == nil {
			g = &gameUpdate{partition: p}
			games[m.game] = g
		}
		g.add(m)
	}
	return a.archive.updateGames(ctx, games)
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
	m.ts = wire.StoredTS(h.Get(wire.HdrTS), m.frame)
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
// written or retried: it reports progress on them every interval until the
// returned release is called (release waits for it to stop).
func holdBatch(msgs []jetstream.Msg, every time.Duration) (release func()) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				for _, jm := range msgs {
					_ = jm.InProgress()
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(stop) })
		<-done
	}
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
