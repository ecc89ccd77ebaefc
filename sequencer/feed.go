package sequencer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// FeedConfig tunes live feeds. The zero value is the documented default.
type FeedConfig struct {
	// CacheMessages and CacheBytes bound the recent messages each feed
	// keeps for replay. Defaults 1024 and 1 MiB.
	CacheMessages int
	CacheBytes    int
	// CheckAfter is how long after the last live message a feed re-reads
	// the game's head, to catch a lost final message. Default 500ms.
	CheckAfter time.Duration
	// SweepInterval is how often every feed re-reads its head regardless.
	// Default 30s.
	SweepInterval time.Duration
}

func (c FeedConfig) withDefaults() FeedConfig {
	if c.CacheMessages == 0 {
		c.CacheMessages = 1024
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = 1 << 20
	}
	if c.CheckAfter == 0 {
		c.CheckAfter = 500 * time.Millisecond
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 30 * time.Second
	}
	return c
}

// Feeds hosts the live feeds of the games this process serves: one core
// NATS subscription per game, however many local subscribers it has.
type Feeds struct {
	// Static after construction.
	nc     *nats.Conn
	reader *Reader
	names  wire.Names
	parts  int
	cfg    FeedConfig
	log    *slog.Logger
	m      *Metrics
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	advSub *nats.Subscription
	status chan nats.Status // CONNECTED events of nc

	mu sync.Mutex
	// Guarded by mu.
	feeds map[string]*Feed
}

// NewFeeds starts the feed host. Close it to release its subscriptions.
func NewFeeds(nc *nats.Conn, cfg Config, fc FeedConfig) (*Feeds, error) {
	cfg = cfg.withDefaults()
	fs := &Feeds{
		nc:     nc,
		reader: NewReader(nc, cfg),
		names:  cfg.names(),
		parts:  cfg.Partitions,
		cfg:    fc.withDefaults(),
		log:    cfg.Logger,
		m:      cfg.Metrics,
		feeds:  make(map[string]*Feed),
	}
	fs.ctx, fs.cancel = context.WithCancel(context.Background())
	// Around a stream leader change appends time out and are retried, and
	// live copies may be lost: re-read the heads of that partition's feeds.
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.*", func(m *nats.Msg) {
		stream := m.Subject[len("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."):]
		for p := 0; p < fs.parts; p++ {
			if fs.names.Stream(p) == stream {
				fs.recheck(func(f *Feed) bool { return f.p == p })
			}
		}
	})
	if err != nil {
		return nil, err
	}
	fs.advSub = sub
	// A core subscription loses what is published while its connection is
	// down: after every reconnect, re-read every feed's head.
	fs.status = nc.StatusChanged(nats.CONNECTED)
	fs.wg.Add(2)
	go fs.sweep()
	go fs.watchReconnects(fs.status)
	return fs, nil
}

// watchReconnects rechecks every feed when the connection is back.
func (fs *Feeds) watchReconnects(status <-chan nats.Status) {
	defer fs.wg.Done()
	for range status {
		fs.recheck(func(*Feed) bool { return true })
	}
}

// Reader returns the Reader the feeds use for history.
func (fs *Feeds) Reader() *Reader { return fs.reader }

// Conn returns the connection the feeds subscribe on. Gateways exchange
// their audience counts on it too.
func (fs *Feeds) Conn() *nats.Conn { return fs.nc }

// Names returns the installation's subject and stream names.
func (fs *Feeds) Names() wire.Names { return fs.names }

// Partitions returns the number of partitions games hash onto.
func (fs *Feeds) Partitions() int { return fs.parts }

func (fs *Feeds) recheck(match func(*Feed) bool) {
	fs.mu.Lock()
	var list []*Feed
	for _, f := range fs.feeds {
		if match(f) {
			list = append(list, f)
		}
	}
	fs.mu.Unlock()
	for _, f := range list {
		f.scheduleCheck(0)
	}
}

// sweep re-reads every feed's head about every SweepInterval, each at its
// own moment within the interval, so the head reads of many feeds do not
// come at once.
func (fs *Feeds) sweep() {
	defer fs.wg.Done()
	t := time.NewTimer(jitter(fs.cfg.SweepInterval))
	defer t.Stop()
	for {
		select {
		case <-fs.ctx.Done():
			return
		case <-t.C:
			t.Reset(jitter(fs.cfg.SweepInterval))
			fs.mu.Lock()
			for _, f := range fs.feeds {
				f.scheduleCheck(time.Duration(rand.Int64N(int64(fs.cfg.SweepInterval))))
			}
			fs.mu.Unlock()
		}
	}
}

// Open returns the game's feed, starting it if needed. Every Open must be
// matched by one Feed.Close.
func (fs *Feeds) Open(ctx context.Context, game string) (*Feed, error) {
	if err := wire.ValidateGame(game); err != nil {
		return nil, errorf(wire.CodeInvalidGame, "%v", err)
	}
	fs.mu.Lock()
	if f := fs.feeds[game]; f != nil {
		f.refs++
		fs.mu.Unlock()
		<-f.ready
		if f.err != nil {
			f.Close()
			return nil, f.err
		}
		return f, nil
	}
	p := wire.Partition(game, fs.parts)
	f := &Feed{fs: fs, game: game, p: p, refs: 1, ready: make(chan struct{}), subs: make(map[uint64]func(Stored))}
	fs.feeds[game] = f
	fs.mu.Unlock()

	f.err = f.start(ctx)
	close(f.ready)
	if f.err != nil {
		f.Close()
		return nil, f.err
	}
	if fs.m != nil {
		fs.m.FeedsOpen.Inc()
	}
	return f, nil
}

// jitter returns d ± 20%.
func jitter(d time.Duration) time.Duration {
	return d*4/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

// Close stops every feed's background work; Feeds must not be used after.
func (fs *Feeds) Close() {
	fs.cancel()
	_ = fs.advSub.Unsubscribe()
	fs.nc.RemoveStatusListener(fs.status) // ends watchReconnects
	fs.wg.Wait()
	fs.mu.Lock()
	list := make([]*Feed, 0, len(fs.feeds))
	for _, f := range fs.feeds {
		list = append(list, f)
	}
	fs.mu.Unlock()
	for _, f := range list {
		f.stop()
	}
}

// Feed delivers one game's messages in msg_id order, each exactly once,
// whatever the live path lost or repeated. Subscribers' functions run on
// the feed's delivery goroutine and must not block.
type Feed struct {
	// Static after construction.
	fs    *Feeds
	game  string
	p     int
	ready chan struct{} // closed when start returned
	err   error         // start's error; read after ready

	// Guarded by Feeds.mu.
	refs int

	// deliverMu serialises everything that moves the position: live
	// messages, gap fills and head checks.
	deliverMu sync.Mutex
	// Guarded by deliverMu.
	sub     *nats.Subscription
	stopped bool
	fanout  []func(Stored) // deliver's snapshot of subs, reused

	mu sync.Mutex
	// Guarded by mu.
	lastSeq, lastID uint64
	cache           []Stored // recent messages, ascending, contiguous msg_ids
	cacheBytes      int
	subs            map[uint64]func(Stored)
	nextSub         uint64
	timer           *time.Timer
	awaits          map[string]chan Stored // appends waiting for their message, by Nats-Msg-Id (see await)
}

func (f *Feed) start(ctx context.Context) error {
	f.deliverMu.Lock()
	defer f.deliverMu.Unlock()
	sub, err := f.fs.nc.Subscribe(f.fs.names.LiveSubject(f.p, f.game), f.onLive)
	if err != nil {
		return err
	}
	_ = sub.SetPendingLimits(-1, 64<<20)
	head, ok, err := f.fs.reader.Head(ctx, f.game)
	if err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	if ok {
		f.mu.Lock()
		f.lastSeq, f.lastID = head.Seq, head.ID
		f.mu.Unlock()
	}
	f.sub = sub // only a started feed counts in FeedsOpen
	return nil
}

// Close releases this holder's reference; the last one stops the feed.
func (f *Feed) Close() {
	f.fs.mu.Lock()
	f.refs--
	last := f.refs == 0
	if last && f.fs.feeds[f.game] == f {
		delete(f.fs.feeds, f.game)
	}
	f.fs.mu.Unlock()
	if last {
		f.stop()
	}
}

func (f *Feed) stop() {
	f.deliverMu.Lock()
	defer f.deliverMu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	if f.sub != nil {
		_ = f.sub.Unsubscribe()
		if f.fs.m != nil {
			f.fs.m.FeedsOpen.Dec()
		}
	}
	f.mu.Lock()
	if f.timer != nil {
		f.timer.Stop()
	}
	f.subs = nil
	for key, ch := range f.awaits {
		close(ch) // the appends ask for a reply instead
		delete(f.awaits, key)
	}
	f.mu.Unlock()
}

// await returns a channel that gets the game's message stored with
// Nats-Msg-Id key when this process's feed of the game delivers it (from
// its live copy or read from the stream), or is closed if the feed stops
// first. ok is false when no started feed follows the game here. cancel
// must be called once the append is settled.
func (fs *Feeds) await(game, key string) (stored <-chan Stored, cancel func(), ok bool) {
	fs.mu.Lock()
	f := fs.feeds[game]
	fs.mu.Unlock()
	if f == nil {
		return nil, nil, false
	}
	select {
	case <-f.ready:
	default:
		return nil, nil, false // starting
	}
	if f.err != nil {
		return nil, nil, false
	}
	ch := make(chan Stored, 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		return nil, nil, false // stopped
	}
	if f.awaits == nil {
		f.awaits = make(map[string]chan Stored)
	}
	f.awaits[key] = ch
	return ch, func() {
		f.mu.Lock()
		if f.awaits[key] == ch {
			delete(f.awaits, key)
		}
		f.mu.Unlock()
	}, true
}

// Last returns the msg_id of the last delivered message.
func (f *Feed) Last() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastID
}

// Subscribe registers fn for every message after the returned last msg_id,
// atomically: nothing between last and the first call to fn is missed or
// repeated. Messages up to last come from Replay.
func (f *Feed) Subscribe(fn func(Stored)) (last uint64, cancel func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.nextSub
	f.nextSub++
	if f.subs != nil {
		f.subs[id] = fn
	}
	return f.lastID, func() {
		f.mu.Lock()
		delete(f.subs, id)
		f.mu.Unlock()
	}
}

// Replay calls fn for the game's messages with since < msg_id ≤ upto in
// order, from the feed's cache where it can and from the stream otherwise.
func (f *Feed) Replay(ctx context.Context, since, upto uint64, fn func(Stored) error) error {
	if since >= upto {
		return nil
	}
	f.mu.Lock()
	var cached []Stored
	var first *Stored
	if len(f.cache) > 0 {
		c0 := f.cache[0]
		first = &c0
		lo := int64(since+1) - int64(c0.ID)
		hi := int64(upto) - int64(c0.ID) + 1
		lo = max(lo, 0)
		hi = min(hi, int64(len(f.cache)))
		if lo < hi {
			cached = append([]Stored(nil), f.cache[lo:hi]...)
		}
	}
	f.mu.Unlock()
	if first == nil || since+1 < first.ID {
		end := upto
		if first != nil {
			end = min(upto, first.ID-1)
		}
		if err := f.fs.reader.Range(ctx, f.game, since, end, first, fn); err != nil {
			return err
		}
	}
	for _, m := range cached {
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// local delivers messages appended in this process to the game's feed, if
// this process hosts it, on the caller's goroutine: stored, contiguous in
// the game, the first one's predecessor at stream sequence prevSeq. What
// it cannot deliver in order right away (the feed is busy filling, or a
// message of another appender lies between) the feed fetches from the
// stream at once. With the feeds' connection made with nats.NoEcho, these
// messages' live copies never reach this process.
func (fs *Feeds) local(game string, prevSeq uint64, ms []Stored) {
	fs.mu.Lock()
	f := fs.feeds[game]
	fs.mu.Unlock()
	if f == nil {
		// A feed opened from now on reads a head that covers ms.
		return
	}
	if !f.deliverMu.TryLock() {
		// Starting, or filling from the stream: never wait on that here.
		f.scheduleCheck(0)
		return
	}
	defer f.deliverMu.Unlock()
	if f.stopped || f.sub == nil {
		return
	}
	f.mu.Lock()
	lastSeq := f.lastSeq
	f.mu.Unlock()
	for _, m := range ms {
		switch {
		case m.Seq <= lastSeq:
			if fs.m != nil {
				fs.m.FeedDupsDropped.Inc()
			}
		case prevSeq == lastSeq:
			f.deliverLocked(m)
			lastSeq = m.Seq
		default:
			f.scheduleCheck(0)
			return
		}
		prevSeq = m.Seq
	}
	f.scheduleCheck(fs.cfg.CheckAfter)
}

// onLive handles a message's live copy.
func (f *Feed) onLive(msg *nats.Msg) {
	f.deliverMu.Lock()
	defer f.deliverMu.Unlock()
	if f.stopped {
		return
	}
	m, err := parseStored(msg.Header, msg.Data, msg.Header.Get(wire.HdrSeq))
	if err != nil {
		f.fs.log.Warn("sequencer: feed: bad live message", "game", f.game, "err", err)
		return
	}
	m.key = msg.Header.Get(wire.HdrKey)
	f.mu.Lock()
	lastSeq := f.lastSeq
	f.mu.Unlock()
	if m.Seq <= lastSeq {
		if f.fs.m != nil {
			f.fs.m.FeedDupsDropped.Inc()
		}
		return
	}
	prev, err := strconv.ParseUint(msg.Header.Get(wire.HdrPrev), 10, 64)
	if err == nil && prev == lastSeq {
		f.deliverLocked(m)
	} else {
		f.fillLocked(m.Seq)
	}
	f.scheduleCheck(f.fs.cfg.CheckAfter)
}

// fillLocked delivers every stored message after the last delivered one up
// to stream sequence upto, reading them from the stream. deliverMu is held.
func (f *Feed) fillLocked(upto uint64) {
	for {
		f.mu.Lock()
		from := f.lastSeq + 1
		f.mu.Unlock()
		if from > upto {
			return
		}
		n, err := f.fs.reader.st.next(f.fs.ctx, f.p, f.game, from, readBatch, func(m Stored) error {
			if f.fs.m != nil {
				f.fs.m.FeedGapsFilled.Inc()
			}
			f.deliverLocked(m)
			return nil
		})
		if err != nil || n == 0 {
			// The replica answering may trail the leader, or the stream is
			// unavailable: try again shortly.
			if err != nil && !errors.Is(err, context.Canceled) {
				f.fs.log.Debug("sequencer: feed: fill", "game", f.game, "err", err)
			}
			f.scheduleCheck(50 * time.Millisecond)
			return
		}
	}
}

// deliver caches m and hands it to every subscriber. deliverMu is held:
// deliveries never overlap, so subscribers get the messages in order. The
// subscribers are called without f.mu, which joins (Subscribe, Replay) and
// head checks take: a fan-out to many clients never holds them up.
func (f *Feed) deliverLocked(m Stored) {
	f.mu.Lock()
	if len(f.cache) > 0 && f.cache[len(f.cache)-1].ID+1 != m.ID {
		// Stream history jumped (retention removed what lay between): the
		// cache must stay contiguous.
		f.cache, f.cacheBytes = f.cache[:0], 0
	}
	f.cache = append(f.cache, m)
	f.cacheBytes += len(m.Data)
	drop := 0
	for len(f.cache)-drop > f.fs.cfg.CacheMessages || (f.cacheBytes > f.fs.cfg.CacheBytes && len(f.cache)-drop > 1) {
		f.cacheBytes -= len(f.cache[drop].Data)
		drop++
	}
	if drop > 0 {
		// Compact once the dropped prefix is as large as what is kept, so
		// appends stay amortised O(1) without unbounded growth.
		if drop >= len(f.cache)-drop {
			f.cache = append(f.cache[:0], f.cache[drop:]...)
		} else {
			f.cache = f.cache[drop:]
		}
	}
	f.lastSeq, f.lastID = m.Seq, m.ID
	subs := f.fanout[:0]
	for _, fn := range f.subs {
		subs = append(subs, fn)
	}
	var awaiting chan Stored
	if m.key != "" && len(f.awaits) > 0 {
		if awaiting = f.awaits[m.key]; awaiting != nil {
			delete(f.awaits, m.key)
		}
	}
	f.mu.Unlock()
	if awaiting != nil {
		awaiting <- m // buffered for this one message
	}
	for _, fn := range subs {
		fn(m)
	}
	clear(subs)
	f.fanout = subs // reused by the next delivery (deliverMu is held)
}

// scheduleCheck makes the feed re-read the game's head after d.
func (f *Feed) scheduleCheck(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		return
	}
	if f.timer == nil {
		f.timer = time.AfterFunc(d, f.checkHead)
		return
	}
	f.timer.Reset(d)
}

func (f *Feed) checkHead() {
	f.deliverMu.Lock()
	defer f.deliverMu.Unlock()
	if f.stopped {
		return
	}
	if f.fs.m != nil {
		f.fs.m.FeedHeadChecks.Inc()
	}
	ctx, cancel := context.WithTimeout(f.fs.ctx, 5*time.Second)
	defer cancel()
	head, ok, err := f.fs.reader.Head(ctx, f.game)
	if err != nil {
		if f.fs.ctx.Err() == nil {
			f.scheduleCheck(time.Second)
		}
		return
	}
	f.mu.Lock()
	behind := ok && head.Seq > f.lastSeq
	f.mu.Unlock()
	if behind {
		f.fillLocked(head.Seq)
	}
}
