// Package bench is the load generator behind `gamerelay bench`: it drives a
// gamerelay gateway (or the bare reference relay in reference.go) over real
// WebSockets, measures throughput, latency, server CPU and memory, and
// verifies that every client saw every game densely, in order, identically.
// Run is not safe for concurrent use with itself.
package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
)

// Config describes one benchmark run. Zero values are the defaults noted.
type Config struct {
	URL         string        // ws://host:port/ws (required); several, comma-separated: client i connects to the (i mod n)-th
	Mode        string        // pingpong | fanout | idle | rejoin | join
	Games       int           // default 1
	Players     int           // per game, default 2
	Spectators  int           // per game, default 0
	Rate        float64       // fanout: messages/s per player, default 10
	Duration    time.Duration // default 10s
	Payload     int           // padding bytes per message, default 32
	TokenSecret string        // HS256 secret (≥ 32 bytes) to mint tokens (spectators need one); empty: anonymous
	ServerPIDs  []int         // measure these processes' CPU and memory, summed; none: don't
	Conns       int           // idle: connections, default 1000
	Sources     int           // idle, join, spectators: spread over 127.0.0.1..127.0.0.N, default max(1, connections/20000+1)
	History     int           // rejoin: messages in the replayed game, default 1000
	Others      int           // rejoin: messages of other games appended first, default 10000
	Rejoins     int           // rejoin: measured rejoins, default 20

	Clients     int           // join: clients that join, spread evenly over Games, default 1000
	Inflight    int           // join, and spectators of pingpong and fanout: joins in flight at once, default 200
	Role        string        // join: "player" (default) or "spectator" (needs TokenSecret)
	SinceHead   bool          // join: join with since = the game's current head (a resume replaying nothing) instead of 0
	JoinHistory *uint64       // join: send "history":N in every join frame; nil: don't
	JoinTimeout time.Duration // bound on one join, connect to complete, default 60s
	Settle      time.Duration // join: wait after the last join before reading the server's RSS, default 30s
	Stall       time.Duration // pingpong, fanout: after the last send, how long deliveries may pause before the run is verified as it stands, default 10s
	RunID       string        // part of every game's name, so runs on one server never share games; default: from the clock

	signer *token.Signer // from TokenSecret, set by Run
}

func (c Config) withDefaults() Config {
	if c.Games == 0 {
		c.Games = 1
	}
	if c.Players == 0 {
		c.Players = 2
	}
	if c.Rate == 0 {
		c.Rate = 10
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Payload == 0 {
		c.Payload = 32
	}
	if c.Conns == 0 {
		c.Conns = 1000
	}
	if c.Clients == 0 {
		c.Clients = 1000
	}
	if c.Inflight == 0 {
		c.Inflight = 200
	}
	if c.Role == "" {
		c.Role = token.RolePlayer
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = 60 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 30 * time.Second
	}
	if c.Stall == 0 {
		c.Stall = 10 * time.Second
	}
	if c.Sources == 0 {
		conns := c.Conns
		switch c.Mode {
		case "join":
			conns = c.Clients + c.Games
		case "pingpong", "fanout":
			conns = c.Games * (c.Players + c.Spectators)
		}
		c.Sources = max(1, conns/20000+1)
	}
	if c.History == 0 {
		c.History = 1000
	}
	if c.Rejoins == 0 {
		c.Rejoins = 20
	}
	if c.Mode == "rejoin" && c.Others == 0 {
		c.Others = 10000
	}
	return c
}

// Report is what a run measured.
type Report struct {
	Mode        string        `json:"mode"`
	URL         string        `json:"url"`
	Games       int           `json:"games"`
	Players     int           `json:"players_per_game"`
	Spectators  int           `json:"spectators_per_game"`
	Connections int           `json:"connections"`
	Elapsed     time.Duration `json:"elapsed_ns"`

	Sends         uint64  `json:"sends"`
	Deliveries    uint64  `json:"deliveries"`
	SendsPerSec   float64 `json:"sends_per_sec"`
	DeliveriesSec float64 `json:"deliveries_per_sec"`
	Own           Latency `json:"latency_own"`
	All           Latency `json:"latency_all"`
	// Drain is how long after the last send the last delivery came:
	// what was still queued (in the server, the sockets or the load
	// generator) when the senders stopped. DeliveriesSec counts until
	// then.
	Drain time.Duration `json:"drain_ns"`
	// Unanswered counts the messages players sent that never came back
	// to them (pingpong, fanout): lost, or still on their way when
	// deliveries had paused for Config.Stall.
	Unanswered uint64 `json:"unanswered"`

	Errors          map[string]uint64 `json:"errors"`
	OrderViolations uint64            `json:"order_violations"`
	GamesVerified   int               `json:"games_verified"`
	GamesMismatched int               `json:"games_mismatched"`

	// Unsequenced counts frames without msg_id other than joined and
	// error (e.g. audience counts): not part of a game's sequence, ignored.
	Unsequenced uint64 `json:"unsequenced"`
	// Closed counts, by close code, the clients of pingpong and fanout
	// whose connection ended before the run did.
	Closed map[string]uint64 `json:"closed,omitempty"`

	ServerCPUSeconds float64 `json:"server_cpu_seconds,omitempty"`
	// ServerCPUEach is ServerCPUSeconds by process, in the order of
	// Config.ServerPIDs (pingpong and fanout).
	ServerCPUEach        []float64 `json:"server_cpu_seconds_each,omitempty"`
	ServerCPUPerDelivery float64   `json:"server_cpu_us_per_delivery,omitempty"`
	ServerRSSBytes       int64     `json:"server_rss_bytes,omitempty"`
	ServerRSSPerConn     float64   `json:"server_rss_bytes_per_conn,omitempty"`

	Replay *ReplayReport `json:"replay,omitempty"`
	Join   *JoinReport   `json:"join,omitempty"`
}

// ReplayReport is the rejoin mode's result.
type ReplayReport struct {
	History int     `json:"history"`
	Others  int     `json:"others"`
	Runs    int     `json:"runs"`
	Latency Latency `json:"latency"`
	PerMsg  float64 `json:"us_per_message_p50"`
}

// OK reports whether the run saw no order violation, mismatch, error
// frame, early disconnect or unanswered message. Failed joins of the join
// mode are a measurement (Join.Failures), not a verification failure.
func (r *Report) OK() bool {
	return r.OrderViolations == 0 && r.GamesMismatched == 0 && len(r.Errors) == 0 && len(r.Closed) == 0 && r.Unanswered == 0
}

// Failure says what verification found, for a run that is not OK.
func (r *Report) Failure() string {
	s := fmt.Sprintf("verification failed: %d order violations, %d games mismatched, errors %v, disconnected early %v",
		r.OrderViolations, r.GamesMismatched, r.Errors, r.Closed)
	if r.Unanswered > 0 {
		s += fmt.Sprintf(", %d messages never came back to their sender", r.Unanswered)
	}
	return s
}

// Validate reports the first setting Run cannot work with, naming its flag.
func (c Config) Validate() error {
	for _, u := range strings.Split(c.URL, ",") {
		if !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
			return fmt.Errorf("bench: --url %q: want ws://host:port/ws, or several comma-separated", c.URL)
		}
	}
	switch {
	case c.Mode != "pingpong" && c.Mode != "fanout" && c.Mode != "idle" && c.Mode != "rejoin" && c.Mode != "join":
		return fmt.Errorf("bench: --mode %q: want pingpong, fanout, idle, rejoin, join or reference", c.Mode)
	case c.Games < 0 || c.Clients < 0 || c.Inflight < 0 || c.Sources < 0 || c.Sources > 254:
		return fmt.Errorf("bench: --games %d, --clients %d, --inflight %d, --sources %d: want ≥ 0 (--sources ≤ 254)", c.Games, c.Clients, c.Inflight, c.Sources)
	case c.Role != "" && c.Role != token.RolePlayer && c.Role != token.RoleSpectator:
		return fmt.Errorf("bench: --role %q: want player or spectator", c.Role)
	case c.Mode == "join" && c.Role == token.RoleSpectator && c.TokenSecret == "":
		return errors.New("bench: --role spectator needs --token-secret (spectators join with a token)")
	case c.Mode == "join" && c.Clients > 0 && c.Games > c.Clients:
		return fmt.Errorf("bench: --games %d: more games than --clients %d", c.Games, c.Clients)
	}
	return nil
}

// Run executes one benchmark.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.TokenSecret != "" {
		s, err := token.NewHMACSigner([]byte(cfg.TokenSecret), "")
		if err != nil {
			return nil, fmt.Errorf("bench: --token-secret: %w", err)
		}
		cfg.signer = s
	}
	switch cfg.Mode {
	case "pingpong", "fanout":
		return runTraffic(ctx, cfg)
	case "idle":
		return runIdle(ctx, cfg)
	case "rejoin":
		return runRejoin(ctx, cfg)
	}
	return runJoin(ctx, cfg)
}

// runID makes game names unique per run, so runs against one server don't mix.
func runID() string { return strconv.FormatInt(time.Now().UnixNano()%1e9, 36) }

// runID is the part of the run's game names that sets it apart.
func (c Config) runID() string {
	if c.RunID != "" {
		return c.RunID
	}
	return runID()
}

// urlFor is the URL client idx connects to: with several, the (idx mod
// n)-th.
func (cfg Config) urlFor(idx int) string {
	if !strings.Contains(cfg.URL, ",") {
		return cfg.URL
	}
	urls := strings.Split(cfg.URL, ",")
	return urls[idx%len(urls)]
}

func (cfg Config) token(game, role string) (string, error) {
	s := cfg.signer
	if s == nil {
		if cfg.TokenSecret == "" {
			return "", nil
		}
		var err error
		if s, err = token.NewHMACSigner([]byte(cfg.TokenSecret), ""); err != nil {
			return "", fmt.Errorf("bench: --token-secret: %w", err)
		}
	}
	return s.Mint(token.Claims{Game: game, Role: role, Exp: time.Now().Add(24 * time.Hour).Unix()})
}

// openPlayers connects and joins the players of one game, one by one. If
// spectators are to follow, the first player then makes the game exist: a
// game exists once something is stored in it (before that, gamerelay
// answers spectators unknown_game), and one warm-up message (not a
// benchmark message) makes it exist anywhere.
func openPlayers(ctx context.Context, cfg Config, game string, firstIdx int) ([]*bclient, error) {
	var out []*bclient
	for i := 0; i < cfg.Players; i++ {
		c, err := dialClient(ctx, cfg.urlFor(firstIdx+i), nil, firstIdx+i, game)
		if err != nil {
			return out, err
		}
		c.keep = true
		go c.readLoop()
		out = append(out, c)
		tok, err := cfg.token(game, token.RolePlayer)
		if err != nil {
			return out, err
		}
		if err := c.join(tok); err != nil {
			return out, err
		}
		if _, err := c.waitJoined(ctx); err != nil {
			return out, err
		}
	}
	if cfg.Spectators == 0 || len(out) == 0 {
		return out, nil
	}
	if err := out[0].write([]byte(`{"type":"hello"}`)); err != nil {
		return out, err
	}
	for out[0].seen.Load() == 0 {
		select {
		case <-ctx.Done():
			return out, errors.New("bench: the game's first message never arrived")
		case <-time.After(5 * time.Millisecond):
		}
	}
	return out, nil
}

func runTraffic(ctx context.Context, cfg Config) (*Report, error) {
	id := cfg.runID()
	n := cfg.Players + cfg.Spectators
	var (
		games   = make([][]*bclient, cfg.Games)
		jgames  = make([]*joinGame, cfg.Games)
		all     []*bclient
		players []*bclient
	)
	jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for g := 0; g < cfg.Games; g++ {
		name := fmt.Sprintf("b%s-%d", id, g)
		cs, err := openPlayers(jctx, cfg, name, g*n)
		all = append(all, cs...)
		if err != nil {
			closeAll(all)
			return nil, err
		}
		games[g] = cs
		jgames[g] = &joinGame{name: name}
		players = append(players, cs...)
	}
	var joins *JoinReport
	if cfg.Spectators > 0 {
		// Spectators join through the join machinery, Inflight at a time,
		// each bounded by JoinTimeout, spread over the games. Anonymous
		// installations have no spectators: without a token secret they
		// join as players that never send, the same load.
		specs := make([]joinSpec, 0, cfg.Games*cfg.Spectators)
		for i := 0; i < cfg.Spectators; i++ {
			for g := 0; g < cfg.Games; g++ {
				specs = append(specs, joinSpec{idx: g*n + cfg.Players + i, game: jgames[g], role: token.RoleSpectator})
			}
		}
		scfg := cfg
		scfg.SinceHead, scfg.JoinHistory = false, nil
		o := scfg.joinAll(ctx, specs, keepEntries)
		o.closing.Wait()
		joins = o.report(scfg, len(specs), cfg.Games, token.RoleSpectator)
		for i, c := range o.ok {
			if c != nil {
				games[i%cfg.Games] = append(games[i%cfg.Games], c)
				all = append(all, c)
			}
		}
		if len(joins.Failures) > 0 {
			closeAll(all)
			return nil, fmt.Errorf("bench: %d of %d spectators did not join: %s", joins.Failed(), len(specs), failureList(joins.Failures))
		}
		// What the joins sent after the last one completed (presence
		// messages, where joins append them) is not part of the fan-out:
		// the run starts once every client has it.
		if !settle(all, quietMax) {
			closeAll(all)
			return nil, fmt.Errorf("bench: clients still receiving %s after the spectators joined (the joins' own messages)", quietMax)
		}
	}
	pad := []byte(strings.Repeat("x", cfg.Payload))
	var sends sync.WaitGroup
	stop := make(chan struct{})
	cpu0 := cpuEach(cfg.ServerPIDs)
	start := time.Now()
	for _, p := range players {
		sends.Add(1)
		go func(p *bclient) {
			defer sends.Done()
			if cfg.Mode == "pingpong" {
				for {
					if err := p.send(pad); err != nil {
						return
					}
					select {
					case <-p.ownMsg:
					case <-stop:
						return
					case <-p.done:
						return
					}
				}
			}
			t := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
			defer t.Stop()
			for {
				select {
				case <-t.C:
					if err := p.send(pad); err != nil {
						return
					}
				case <-stop:
					return
				}
			}
		}(p)
	}
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	close(stop)
	sends.Wait()
	sendEnd := time.Now()
	elapsed := sendEnd.Sub(start)
	// Verify once everything sent was delivered: a server (or a load
	// generator) that cannot keep up holds a backlog when the senders
	// stop, and clients compared while it drains disagree on the last
	// message. The CPU it takes to drain is part of the run.
	lastAt := drained(all, players, sendEnd, cfg.Stall, quietMax)
	cpu1 := cpuEach(cfg.ServerPIDs)
	rss := readRSS(cfg.ServerPIDs)
	closed := map[*bclient]bool{}
	ends := make(map[*bclient]uint64, len(all))
	for _, c := range all {
		ends[c] = c.seen.Load()
		select {
		case <-c.done:
			closed[c] = true
		default:
		}
	}
	closeAll(all)
	// What came while closing (the leave presences of those that closed
	// first) is not part of the run.
	for _, c := range all {
		for len(c.entries) > 0 && c.entries[len(c.entries)-1].id > ends[c] {
			c.entries = c.entries[:len(c.entries)-1]
		}
	}

	r := &Report{Mode: cfg.Mode, URL: cfg.URL, Games: cfg.Games, Players: cfg.Players, Spectators: cfg.Spectators,
		Connections: len(all), Elapsed: elapsed, Errors: map[string]uint64{}, Join: joins}
	for _, p := range players {
		n, back := p.sent.Load(), p.ownBack.Load()
		r.Sends += n
		if back < n {
			r.Unanswered += n - back
		}
	}
	own, every := newHist(), newHist()
	for _, c := range all {
		own.merge(c.own)
		every.merge(c.all)
		r.Deliveries += c.all.n
		r.OrderViolations += c.violations
		r.Unsequenced += c.unsequenced
		for k, v := range c.errs {
			r.Errors[k] += v
		}
		if closed[c] {
			if r.Closed == nil {
				r.Closed = map[string]uint64{}
			}
			r.Closed[strconv.Itoa(int(c.closeCode))]++
		}
	}
	r.Own, r.All = own.summary(), every.summary()
	r.SendsPerSec = float64(r.Sends) / elapsed.Seconds()
	r.Drain = max(0, lastAt.Sub(sendEnd))
	r.DeliveriesSec = float64(r.Deliveries) / (elapsed + r.Drain).Seconds()
	for _, g := range games {
		r.GamesVerified++
		if !sameSequence(g) {
			r.GamesMismatched++
		}
	}
	if cpu0 != nil && cpu1 != nil {
		for i := range cpu1 {
			r.ServerCPUEach = append(r.ServerCPUEach, cpu1[i]-cpu0[i])
			r.ServerCPUSeconds += cpu1[i] - cpu0[i]
		}
		if r.Deliveries > 0 {
			r.ServerCPUPerDelivery = r.ServerCPUSeconds / float64(r.Deliveries) * 1e6
		}
		r.ServerRSSBytes = rss
	}
	return r, nil
}

// settle waits until no client received a sequenced frame for 300 ms,
// at most maxWait; it reports whether they went quiet.
func settle(cs []*bclient, maxWait time.Duration) bool {
	_, ok := quietAt(cs, maxWait)
	return ok
}

// drained waits, after the senders stopped at sendEnd, until every
// player got back every message it sent (or was disconnected) and no
// client received a sequenced frame for 300 ms. It gives up when nothing
// arrived for stall (since the last delivery or sendEnd, whichever is
// later) with messages still missing, or after maxWait. It returns when
// the last sequenced frame arrived.
func drained(all, players []*bclient, sendEnd time.Time, stall, maxWait time.Duration) time.Time {
	answered := func() bool {
		for _, p := range players {
			if p.ownBack.Load() < p.sent.Load() && !isDone(p) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(maxWait)
	for {
		last := lastReceived(all)
		quiet := time.Since(last)
		switch {
		case quiet >= 300*time.Millisecond && answered(), time.Since(maxTime(last, sendEnd)) >= stall, time.Now().After(deadline):
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// isDone reports whether c's connection has ended.
func isDone(c *bclient) bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// lastReceived is when the last sequenced frame reached any of cs (the
// zero time if none has).
func lastReceived(cs []*bclient) time.Time {
	var last int64
	for _, c := range cs {
		last = max(last, c.lastAt.Load())
	}
	if last == 0 {
		return time.Time{}
	}
	return time.Unix(0, last)
}

// quietAt waits until no client received a sequenced frame for 300 ms, at
// most maxWait, and returns when the last one arrived (to within 0.1 s)
// and whether they went quiet.
func quietAt(cs []*bclient, maxWait time.Duration) (time.Time, bool) {
	total := func() uint64 {
		var n uint64
		for _, c := range cs {
			n += c.seen.Load()
		}
		return n
	}
	deadline := time.Now().Add(maxWait)
	last, lastAt := total(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if n := total(); n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) >= 300*time.Millisecond {
			return lastAt, true
		}
	}
	return lastAt, false
}

// serverQuiet waits until the processes pids use under a tenth of a core
// together over half a second, at most maxWait; at once if there are none.
func serverQuiet(pids []int, maxWait time.Duration) {
	deadline := time.Now().Add(maxWait)
	for cpu := readCPU(pids); cpu >= 0 && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		now := readCPU(pids)
		if now < 0 || now-cpu < 0.05 {
			return
		}
		cpu = now
	}
}

func closeAll(cs []*bclient) {
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func(c *bclient) { defer wg.Done(); c.close() }(c)
	}
	wg.Wait()
}

// sameSequence checks that the clients of one game saw the same messages
// over the range every one of them covered, and that every one got
// through to the game's last message.
func sameSequence(cs []*bclient) bool {
	var lo, hi, end uint64 = 0, ^uint64(0), 0
	for _, c := range cs {
		if len(c.entries) == 0 {
			return false
		}
		lo = max(lo, c.entries[0].id)
		hi = min(hi, c.entries[len(c.entries)-1].id)
		end = max(end, c.entries[len(c.entries)-1].id)
	}
	if hi != end {
		return false
	}
	var ref []entry
	for i, c := range cs {
		var seq []entry
		for _, e := range c.entries {
			if e.id >= lo && e.id <= hi {
				seq = append(seq, e)
			}
		}
		if i == 0 {
			ref = seq
			continue
		}
		if len(seq) != len(ref) {
			return false
		}
		for k := range seq {
			if seq[k] != ref[k] {
				return false
			}
		}
	}
	return true
}

func runIdle(ctx context.Context, cfg Config) (*Report, error) {
	id := cfg.runID()
	rss0 := readRSS(cfg.ServerPIDs)
	var cs []*bclient
	defer func() { closeAll(cs) }()
	jctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for i := 0; i < cfg.Conns; i++ {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%cfg.Sources))}
		game := fmt.Sprintf("i%s-%d", id, i%cfg.Games)
		c, err := dialClient(jctx, cfg.urlFor(i), src, i, game)
		if err != nil {
			return nil, fmt.Errorf("bench: idle connection %d: %w", i, err)
		}
		go c.readLoop()
		cs = append(cs, c)
		tok, _ := cfg.token(game, token.RolePlayer)
		if err := c.join(tok); err != nil {
			return nil, err
		}
		if _, err := c.waitJoined(jctx); err != nil {
			return nil, fmt.Errorf("bench: idle connection %d: %w", i, err)
		}
	}
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	r := &Report{Mode: "idle", URL: cfg.URL, Games: cfg.Games, Connections: len(cs), Elapsed: cfg.Duration, Errors: map[string]uint64{}}
	if len(cfg.ServerPIDs) > 0 {
		r.ServerRSSBytes = readRSS(cfg.ServerPIDs)
		if rss0 > 0 && r.ServerRSSBytes > 0 {
			r.ServerRSSPerConn = float64(r.ServerRSSBytes-rss0) / float64(len(cs))
		}
	}
	for _, c := range cs {
		for k, v := range c.errs {
			r.Errors[k] += v
		}
	}
	return r, nil
}

// runRejoin fills the stream with other games' messages, appends History
// messages to one game, then measures cold joins with since=0 replaying
// the whole game.
func runRejoin(ctx context.Context, cfg Config) (*Report, error) {
	id := cfg.runID()
	if err := fill(ctx, cfg, "o"+id, cfg.Others, 64); err != nil {
		return nil, err
	}
	game := "h" + id
	if err := fill(ctx, cfg, game, cfg.History, 1); err != nil {
		return nil, err
	}
	// Replay is measured on a quiet server, not against the aftermath of
	// the fill (its stores flushing, its garbage collected).
	serverQuiet(cfg.ServerPIDs, 30*time.Second)
	h := newHist()
	r := &Report{Mode: "rejoin", URL: cfg.URL, Games: 1, Errors: map[string]uint64{}}
	for i := 0; i < cfg.Rejoins; i++ {
		c, err := dialClient(ctx, cfg.urlFor(i), nil, 0, game)
		if err != nil {
			return nil, err
		}
		c.keep = true
		tok, _ := cfg.token(game, token.RolePlayer)
		c.hit = make(chan struct{})
		c.watch = uint64(cfg.History)
		hit := c.hit
		go c.readLoop()
		start := time.Now()
		if err := c.join(tok); err != nil {
			return nil, err
		}
		select {
		case <-hit:
		case <-c.done:
			return nil, fmt.Errorf("bench: rejoin closed early (errors %v)", c.errs)
		case <-time.After(60 * time.Second):
			return nil, errors.New("bench: rejoin replay did not finish in 60s")
		}
		h.record(time.Since(start))
		c.close()
		r.OrderViolations += c.violations
		if len(c.entries) < cfg.History || c.entries[0].id != 1 {
			r.OrderViolations++
		}
		// The gateway drops an unhosted game's feed and cache: the next
		// join is cold again.
		time.Sleep(50 * time.Millisecond)
	}
	r.Replay = &ReplayReport{History: cfg.History, Others: cfg.Others, Runs: cfg.Rejoins, Latency: h.summary()}
	r.Replay.PerMsg = float64(r.Replay.Latency.P50.Microseconds()) / float64(cfg.History)
	return r, nil
}

// fill appends n messages over the given number of games (named
// prefix-0…), keeping a window of 16 messages in flight per connection.
func fill(ctx context.Context, cfg Config, prefix string, n, games int) error {
	if n <= 0 {
		return nil
	}
	var cs []*bclient
	defer func() { closeAll(cs) }()
	for g := 0; g < games; g++ {
		name := prefix
		if games > 1 {
			name = fmt.Sprintf("%s-%d", prefix, g)
		}
		c, err := dialClient(ctx, cfg.urlFor(g), nil, g, name)
		if err != nil {
			return err
		}
		go c.readLoop()
		cs = append(cs, c)
		tok, _ := cfg.token(name, token.RolePlayer)
		if err := c.join(tok); err != nil {
			return err
		}
		if _, err := c.waitJoined(ctx); err != nil {
			return err
		}
	}
	pad := []byte(strings.Repeat("x", cfg.Payload))
	var wg sync.WaitGroup
	errc := make(chan error, len(cs))
	for g, c := range cs {
		per := n / games
		if g < n%games {
			per++
		}
		wg.Add(1)
		go func(c *bclient, per int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := c.send(pad); err != nil {
					errc <- err
					return
				}
				if i%16 == 15 {
					select {
					case <-c.ownMsg:
					case <-c.done:
						errc <- errors.New("bench: fill connection closed")
						return
					case <-time.After(30 * time.Second):
						errc <- errors.New("bench: fill stalled")
						return
					}
				}
			}
		}(c, per)
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	settle(cs, 30*time.Second)
	return nil
}

// String renders the report as text.
func (r *Report) String() string {
	var b strings.Builder
	if j := r.Join; r.Mode == "join" && j != nil {
		games := "games"
		if j.Games == 1 {
			games = "game"
		}
		fmt.Fprintf(&b, "mode join  url %s  %d %ss into %d %s  %d in flight  since %s", r.URL, j.Clients, j.Role, j.Games, games, j.Inflight, j.Since)
		if j.History != nil {
			fmt.Fprintf(&b, "  history %d", *j.History)
		}
		b.WriteString("\n")
	} else {
		fmt.Fprintf(&b, "mode %s  url %s  games %d  players/game %d  spectators/game %d  connections %d  elapsed %s\n",
			r.Mode, r.URL, r.Games, r.Players, r.Spectators, r.Connections, r.Elapsed.Round(time.Millisecond))
	}
	if j := r.Join; j != nil {
		what := "joined"
		if r.Mode != "join" {
			what = fmt.Sprintf("%d spectators joined before the run", j.Clients)
		}
		fmt.Fprintf(&b, "%s: all in %s  join latency p50 %s  p99 %s  max %s  failures %d [%s]\n", what,
			j.AllJoined.Round(time.Millisecond), j.Latency.P50, j.Latency.P99, j.Latency.Max, j.Failed(), failureList(j.Failures))
		if r.Mode == "join" {
			fmt.Fprintf(&b, "deliveries until all joined %d (%.1f per join, %d of them replays); until quiet, %s later, %d (%.1f per join)\n",
				j.Deliveries, j.PerJoin, j.Replayed, j.QuietAfter.Round(100*time.Millisecond), j.DeliveriesAll, j.PerJoinAll)
			if j.CPUPerJoin > 0 {
				fmt.Fprintf(&b, "server CPU until all joined %.2fs (%.0f µs per join); until quiet %.0f µs per join\n", r.ServerCPUSeconds, j.CPUPerJoin, j.CPUPerJoinAll)
			}
		}
	}
	if r.Sends > 0 || r.Deliveries > 0 {
		fmt.Fprintf(&b, "sends %d (%.0f/s)  deliveries %d (%.0f/s, the last %s after the last send)\n", r.Sends, r.SendsPerSec, r.Deliveries, r.DeliveriesSec, r.Drain.Round(time.Millisecond))
		fmt.Fprintf(&b, "latency send→own delivery   p50 %s  p90 %s  p99 %s  max %s\n", r.Own.P50, r.Own.P90, r.Own.P99, r.Own.Max)
		fmt.Fprintf(&b, "latency send→every delivery p50 %s  p90 %s  p99 %s  max %s\n", r.All.P50, r.All.P90, r.All.P99, r.All.Max)
	}
	if r.Replay != nil {
		fmt.Fprintf(&b, "replay of %d messages (with %d other messages first): p50 %s  p99 %s  max %s  (%.2f µs/message)\n",
			r.Replay.History, r.Replay.Others, r.Replay.Latency.P50, r.Replay.Latency.P99, r.Replay.Latency.Max, r.Replay.PerMsg)
	}
	if r.ServerCPUSeconds > 0 && r.Mode != "join" {
		fmt.Fprintf(&b, "server CPU %.2fs  (%.2f µs per delivery)\n", r.ServerCPUSeconds, r.ServerCPUPerDelivery)
	}
	if r.ServerRSSBytes > 0 {
		fmt.Fprintf(&b, "server RSS %.1f MiB", float64(r.ServerRSSBytes)/(1<<20))
		if r.Mode == "join" && r.Join != nil {
			fmt.Fprintf(&b, "  (%.1f KiB growth per joined connection, %s after the last join)", r.ServerRSSPerConn/1024, r.Join.Settle)
		} else if r.ServerRSSPerConn > 0 {
			fmt.Fprintf(&b, "  (%.1f KiB per connection)", r.ServerRSSPerConn/1024)
		}
		b.WriteString("\n")
	}
	if r.Unsequenced > 0 {
		fmt.Fprintf(&b, "frames without msg_id ignored (e.g. audience): %d\n", r.Unsequenced)
	}
	keys := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	errs := make([]string, 0, len(keys))
	for _, k := range keys {
		errs = append(errs, fmt.Sprintf("%s=%d", k, r.Errors[k]))
	}
	fmt.Fprintf(&b, "verified: games %d  mismatched %d  order violations %d  errors [%s]",
		r.GamesVerified, r.GamesMismatched, r.OrderViolations, strings.Join(errs, " "))
	if len(r.Closed) > 0 {
		fmt.Fprintf(&b, "  disconnected early [%s]", failureList(r.Closed))
	}
	if r.Unanswered > 0 {
		fmt.Fprintf(&b, "  never came back to their sender %d", r.Unanswered)
	}
	b.WriteString("\n")
	return b.String()
}
