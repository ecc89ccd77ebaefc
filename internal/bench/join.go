package bench

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
)

// JoinReport is what the join mode measured (and, for the spectators of
// pingpong and fanout, what joining them took).
type JoinReport struct {
	Clients  int     `json:"clients"`
	Games    int     `json:"games"`
	Inflight int     `json:"inflight"`
	Role     string  `json:"role"`
	Since    string  `json:"since"`             // "0" or "head"
	History  *uint64 `json:"history,omitempty"` // "history" sent in every join

	// Joined is the number of clients that completed their join: joined
	// arrived and every message up to its head followed. Failures counts
	// the others by reason: "refused" (no WebSocket), "closed" or
	// "closed <code>" (the connection ended first), "error <code>" (an
	// error frame came first), "timeout".
	Joined   int               `json:"joined"`
	Failures map[string]uint64 `json:"failures"`
	// AllJoined runs from the first connect until the last join completed
	// or failed; Latency is each completed join's, connect to complete.
	AllJoined time.Duration `json:"all_joined_ns"`
	Latency   Latency       `json:"latency"`

	// Deliveries counts the sequenced frames (those with a msg_id) every
	// connection received from the first connect until all joined, the
	// games' creators included; Replayed the part of them the joining
	// clients got as their replay (msg_id ≤ their joined head). PerJoin =
	// Deliveries/Clients.
	Deliveries uint64  `json:"deliveries"`
	Replayed   uint64  `json:"replayed"`
	PerJoin    float64 `json:"deliveries_per_join"`
	// QuietAfter is the time from all joined until the last sequenced
	// frame reached a client (to within 0.1 s): where joins append
	// presence messages, much of what they cause is delivered after the
	// last join completed. DeliveriesAll and PerJoinAll count up to then:
	// everything the joins caused.
	QuietAfter    time.Duration `json:"quiet_after_ns"`
	DeliveriesAll uint64        `json:"deliveries_all"`
	PerJoinAll    float64       `json:"deliveries_per_join_all"`
	// CPUPerJoin is the server's CPU from the first connect until all
	// joined, CPUPerJoinAll until quiet, divided by Clients, in µs (with
	// ServerPIDs).
	CPUPerJoin    float64 `json:"server_cpu_us_per_join,omitempty"`
	CPUPerJoinAll float64 `json:"server_cpu_us_per_join_all,omitempty"`
	// Settle is how long after the last join the server's RSS was read.
	Settle time.Duration `json:"settle_ns,omitempty"`
}

// quietMax bounds the wait, after the last join, for the clients to stop
// receiving: what the joins caused still arriving.
const quietMax = 10 * time.Minute

// Failed is the number of clients whose join did not complete.
func (j *JoinReport) Failed() uint64 {
	var n uint64
	for _, v := range j.Failures {
		n += v
	}
	return n
}

// joinGame is one game the join machinery joins clients to.
type joinGame struct {
	name    string
	creator *bclient // its first player, which keeps it existing; nil if none
	log     *gameLog // nil: clients keep entries instead
}

// head is the last msg_id the game's creator received: where a client
// that joins with since-head resumes.
func (g *joinGame) head() uint64 {
	if g.creator == nil {
		return 0
	}
	return g.creator.seen.Load()
}

// joinSpec is one client to join.
type joinSpec struct {
	idx  int
	game *joinGame
	role string
}

// joinOutcome is what joinAll did.
type joinOutcome struct {
	// Written by joinAll's goroutines under mu, read after joinAll returns.
	mu       sync.Mutex
	ok       []*bclient // completed, index of their spec; nil where failed
	failed   []*bclient // connections whose join failed, closing in the background
	failures map[string]uint64
	lat      *hist
	start    time.Time     // the first connect
	elapsed  time.Duration // from start until the last join ended
	closing  sync.WaitGroup
}

// clients returns every connection joinAll made, completed or not.
func (o *joinOutcome) clients() []*bclient {
	out := make([]*bclient, 0, len(o.ok)+len(o.failed))
	for _, c := range o.ok {
		if c != nil {
			out = append(out, c)
		}
	}
	return append(out, o.failed...)
}

// report fills the parts of a JoinReport joinAll knows.
func (o *joinOutcome) report(cfg Config, n, games int, role string) *JoinReport {
	j := &JoinReport{Clients: n, Games: games, Inflight: cfg.Inflight, Role: role, Since: "0",
		History: cfg.JoinHistory, Failures: o.failures, AllJoined: o.elapsed, Latency: o.lat.summary()}
	if cfg.SinceHead {
		j.Since = "head"
	}
	for _, c := range o.ok {
		if c != nil {
			j.Joined++
		}
	}
	return j
}

// joinAll connects and joins n clients, specs[i] each, with at most
// cfg.Inflight of them between connect and join complete at once. A join
// completes when joined arrived and every message up to its head did; one
// that does not within cfg.JoinTimeout fails. Failed connections are
// closed in the background (o.closing).
func (cfg Config) joinAll(ctx context.Context, specs []joinSpec, keep record) *joinOutcome {
	o := &joinOutcome{ok: make([]*bclient, len(specs)), failures: map[string]uint64{}, lat: newHist()}
	slots := make(chan struct{}, cfg.Inflight)
	var wg sync.WaitGroup
	o.start = time.Now()
	for i, s := range specs {
		if ctx.Err() == nil {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			o.mu.Lock()
			o.failures["canceled"] += uint64(len(specs) - i)
			o.mu.Unlock()
			break
		}
		wg.Add(1)
		go func(i int, s joinSpec) {
			defer wg.Done()
			c, lat, reason := cfg.joinOne(ctx, s, keep)
			<-slots
			o.mu.Lock()
			defer o.mu.Unlock()
			if reason == "" {
				o.ok[i] = c
				o.lat.record(lat)
				return
			}
			o.failures[reason]++
			if c != nil {
				o.failed = append(o.failed, c)
				o.closing.Add(1)
				go func() { defer o.closing.Done(); c.close() }()
			}
		}(i, s)
	}
	wg.Wait()
	o.elapsed = time.Since(o.start)
	return o
}

// joinOne connects and joins one client. It returns the connection (nil
// if there is none) and either the time from connect to join complete or
// why the join failed.
func (cfg Config) joinOne(ctx context.Context, s joinSpec, keep record) (*bclient, time.Duration, string) {
	tok, err := cfg.token(s.game.name, s.role)
	if err != nil {
		return nil, 0, "token"
	}
	jctx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
	defer cancel()
	var src net.Addr
	if cfg.Sources > 1 {
		src = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+s.idx%cfg.Sources))}
	}
	t0 := time.Now()
	c, err := dialClient(jctx, cfg.urlFor(s.idx), src, s.idx, s.game.name)
	if err != nil {
		if jctx.Err() != nil {
			return nil, 0, "timeout"
		}
		return nil, 0, "refused"
	}
	c.keep, c.log, c.history = keep == keepEntries, s.game.log, cfg.JoinHistory
	if cfg.SinceHead {
		c.since = s.game.head()
	}
	go c.readLoop()
	if err := c.join(tok); err != nil {
		return c, 0, "closed"
	}
	select {
	case <-c.complete:
		return c, time.Since(t0), ""
	case code := <-c.refused:
		return c, 0, "error " + code
	case <-c.done:
	case <-jctx.Done():
	}
	// Whichever came first, a completed join or an error frame says more
	// than the close or the timeout that followed it.
	select {
	case <-c.complete:
		return c, time.Since(t0), ""
	case code := <-c.refused:
		return c, 0, "error " + code
	default:
	}
	select {
	case <-c.done:
		if c.closeCode != 0 {
			return c, 0, "closed " + strconv.Itoa(int(c.closeCode))
		}
		return c, 0, "closed"
	default:
	}
	if ctx.Err() != nil {
		return c, 0, "canceled"
	}
	return c, 0, "timeout"
}

// createGames makes each game exist: its creator, a player, joins and
// sends one message, and stays connected. Creators get indexes from
// firstIdx on.
func (cfg Config) createGames(ctx context.Context, names []string, firstIdx int, logs record) ([]*joinGame, error) {
	games := make([]*joinGame, len(names))
	specs := make([]joinSpec, len(names))
	for i, name := range names {
		games[i] = &joinGame{name: name}
		if logs == keepEntries {
			games[i].log = &gameLog{}
		}
		specs[i] = joinSpec{idx: firstIdx + i, game: games[i], role: token.RolePlayer}
	}
	setup := cfg
	setup.SinceHead, setup.JoinHistory = false, nil
	o := setup.joinAll(ctx, specs, countOnly)
	o.closing.Wait()
	for i, c := range o.ok {
		games[i].creator = c
	}
	if f := o.report(setup, len(names), len(names), token.RolePlayer).Failures; len(f) > 0 {
		closeAll(o.clients())
		return nil, fmt.Errorf("bench: creating the games: %s", failureList(f))
	}
	// A game exists once something is stored in it: before that, gamerelay
	// answers spectators unknown_game. One message makes it exist anywhere;
	// once it is back, the creator has seen the game's head.
	for _, g := range games {
		if err := g.creator.send(nil); err != nil {
			closeAll(o.clients())
			return nil, fmt.Errorf("bench: creating game %s: %w", g.name, err)
		}
	}
	for _, g := range games {
		select {
		case <-g.creator.ownMsg:
		case <-ctx.Done():
			closeAll(o.clients())
			return nil, fmt.Errorf("bench: game %s: its first message never arrived", g.name)
		case <-g.creator.done:
			closeAll(o.clients())
			return nil, fmt.Errorf("bench: game %s: its creator was disconnected (close code %d, errors %v)", g.name, g.creator.closeCode, g.creator.errs)
		}
	}
	return games, nil
}

// runJoin measures joining: Clients clients join Games games (client i
// joins game i mod Games), Inflight at a time.
func runJoin(ctx context.Context, cfg Config) (*Report, error) {
	id := cfg.runID()
	names := make([]string, cfg.Games)
	for g := range names {
		names[g] = fmt.Sprintf("j%s-%d", id, g)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	games, err := cfg.createGames(sctx, names, cfg.Clients, keepEntries)
	cancel()
	if err != nil {
		return nil, err
	}
	creators := make([]*bclient, len(games))
	base := make([]uint64, len(games))
	for i, g := range games {
		creators[i] = g.creator
		base[i] = g.creator.recv.Load()
	}
	specs := make([]joinSpec, cfg.Clients)
	for i := range specs {
		specs[i] = joinSpec{idx: i, game: games[i%len(games)], role: cfg.Role}
	}

	rss0 := readRSS(cfg.ServerPIDs)
	cpu0 := readCPU(cfg.ServerPIDs)
	o := cfg.joinAll(ctx, specs, countOnly)
	cpu1 := readCPU(cfg.ServerPIDs)
	jr := o.report(cfg, cfg.Clients, cfg.Games, cfg.Role)
	joiners := o.clients()
	delivered := func() uint64 {
		var n uint64
		for _, c := range joiners {
			n += c.recv.Load()
		}
		for i, c := range creators {
			n += c.recv.Load() - base[i]
		}
		return n
	}
	jr.Deliveries = delivered()
	jr.PerJoin = float64(jr.Deliveries) / float64(cfg.Clients)
	held := make([]*bclient, 0, jr.Joined+len(creators))
	for _, c := range o.ok {
		if c != nil {
			held = append(held, c)
		}
	}
	held = append(held, creators...)

	// The server's RSS Settle after the last join, as it is then (no GC
	// forced); meanwhile, wait until no client receives anything more.
	type quiet struct {
		at  time.Time
		ok  bool
		n   uint64
		cpu float64
	}
	qc := make(chan quiet, 1)
	go func() {
		at, ok := quietAt(held, quietMax)
		qc <- quiet{at, ok, delivered(), readCPU(cfg.ServerPIDs)}
	}()
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
	}
	jr.Settle = cfg.Settle
	rss1 := readRSS(cfg.ServerPIDs)
	q := <-qc
	if !q.ok {
		closeAll(held)
		o.closing.Wait()
		return nil, fmt.Errorf("bench: clients still receiving %s after the last join", quietMax)
	}
	jr.QuietAfter = max(0, q.at.Sub(o.start.Add(o.elapsed)))
	jr.DeliveriesAll = q.n
	jr.PerJoinAll = float64(q.n) / float64(cfg.Clients)

	r := &Report{Mode: "join", URL: cfg.URL, Games: cfg.Games, Connections: jr.Joined, Elapsed: jr.AllJoined,
		Errors: map[string]uint64{}, Join: jr}
	// Every game: no two clients disagree on a frame, and every client
	// still connected got through to the game's last message.
	byGame := map[*joinGame][]*bclient{}
	for i, c := range o.ok {
		if c != nil {
			byGame[specs[i].game] = append(byGame[specs[i].game], c)
		}
	}
	for _, g := range games {
		r.GamesVerified++
		cs := append(byGame[g], g.creator)
		if g.log.mismatches.Load() > 0 || !sameEnd(cs) {
			r.GamesMismatched++
		}
	}
	for _, c := range held {
		select {
		case <-c.done:
			if r.Closed == nil {
				r.Closed = map[string]uint64{}
			}
			r.Closed[strconv.Itoa(int(c.closeCode))]++
		default:
		}
	}
	closeAll(held)
	o.closing.Wait()
	for _, c := range held {
		for k, v := range c.errs {
			r.Errors[k] += v
		}
	}
	for _, c := range append(joiners, creators...) {
		r.OrderViolations += c.violations
		r.Unsequenced += c.unsequenced
	}
	for _, c := range joiners {
		jr.Replayed += c.replayed
	}
	if len(cfg.ServerPIDs) > 0 && cpu0 >= 0 && cpu1 >= 0 && q.cpu >= 0 {
		r.ServerCPUSeconds = cpu1 - cpu0
		jr.CPUPerJoin = r.ServerCPUSeconds / float64(cfg.Clients) * 1e6
		jr.CPUPerJoinAll = (q.cpu - cpu0) / float64(cfg.Clients) * 1e6
	}
	if rss0 > 0 && rss1 > 0 {
		r.ServerRSSBytes = rss1
		if jr.Joined > 0 {
			r.ServerRSSPerConn = float64(rss1-rss0) / float64(jr.Joined)
		}
	}
	return r, nil
}

// sameEnd reports whether every client got through to the last msg_id
// any of them received (a client whose replay started beyond it counts
// as there).
func sameEnd(cs []*bclient) bool {
	var end uint64
	for _, c := range cs {
		end = max(end, c.seen.Load())
	}
	for _, c := range cs {
		if max(c.seen.Load(), c.startSeen()) < end {
			return false
		}
	}
	return true
}

// startSeen is where c's sequence starts, once its reader has ended or
// its join completed; 0 before.
func (c *bclient) startSeen() uint64 {
	select {
	case <-c.complete:
		return c.start
	default:
		return 0
	}
}

// failureList renders failures as "reason=count …", sorted.
func failureList(f map[string]uint64) string {
	if len(f) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, f[k])
	}
	return strings.Join(parts, " ")
}

// gameLog records, for one game shared by its clients, a hash of the
// frame each msg_id had: the first client to receive a msg_id records it,
// every other compares. Safe for concurrent use without locks; msg_ids
// beyond gameLogIDs are not checked.
type gameLog struct {
	chunks     [gameLogChunks]atomic.Pointer[[gameLogChunk]atomic.Uint64]
	mismatches atomic.Uint64
}

const (
	gameLogChunk  = 1024
	gameLogChunks = 1024
	gameLogIDs    = gameLogChunk * gameLogChunks
)

func (l *gameLog) check(id, hash uint64) {
	if id == 0 || id > gameLogIDs {
		return
	}
	if hash == 0 {
		hash = 1 // 0 marks an empty slot
	}
	i := id - 1
	p := &l.chunks[i/gameLogChunk]
	ch := p.Load()
	if ch == nil {
		p.CompareAndSwap(nil, new([gameLogChunk]atomic.Uint64))
		ch = p.Load()
	}
	slot := &ch[i%gameLogChunk]
	if !slot.CompareAndSwap(0, hash) && slot.Load() != hash {
		l.mismatches.Add(1)
	}
}
