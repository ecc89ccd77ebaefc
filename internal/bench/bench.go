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
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
)

// Config describes one benchmark run. Zero values are the defaults noted.
type Config struct {
	URL         string        // ws://host:port/ws (required)
	Mode        string        // pingpong | fanout | idle | rejoin
	Games       int           // default 1
	Players     int           // per game, default 2
	Spectators  int           // per game, default 0
	Rate        float64       // fanout: messages/s per player, default 10
	Duration    time.Duration // default 10s
	Payload     int           // padding bytes per message, default 32
	TokenSecret string        // HS256 secret (≥ 32 bytes) to mint tokens (spectators need one); empty: anonymous
	ServerPID   int           // measure this process's CPU and memory, 0: don't
	Conns       int           // idle: connections, default 1000
	Sources     int           // idle: spread over 127.0.0.1..127.0.0.N, default max(1, Conns/20000+1)
	History     int           // rejoin: messages in the replayed game, default 1000
	Others      int           // rejoin: messages of other games appended first, default 10000
	Rejoins     int           // rejoin: measured rejoins, default 20

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
	if c.Sources == 0 {
		c.Sources = max(1, c.Conns/20000+1)
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

	Errors          map[string]uint64 `json:"errors"`
	OrderViolations uint64            `json:"order_violations"`
	GamesVerified   int               `json:"games_verified"`
	GamesMismatched int               `json:"games_mismatched"`

	ServerCPUSeconds     float64 `json:"server_cpu_seconds,omitempty"`
	ServerCPUPerDelivery float64 `json:"server_cpu_us_per_delivery,omitempty"`
	ServerRSSBytes       int64   `json:"server_rss_bytes,omitempty"`
	ServerRSSPerConn     float64 `json:"server_rss_bytes_per_conn,omitempty"`

	Replay *ReplayReport `json:"replay,omitempty"`
}

// ReplayReport is the rejoin mode's result.
type ReplayReport struct {
	History int     `json:"history"`
	Others  int     `json:"others"`
	Runs    int     `json:"runs"`
	Latency Latency `json:"latency"`
	PerMsg  float64 `json:"us_per_message_p50"`
}

// OK reports whether the run saw no order violation, mismatch or error.
func (r *Report) OK() bool {
	return r.OrderViolations == 0 && r.GamesMismatched == 0 && len(r.Errors) == 0
}

// Run executes one benchmark.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if !strings.HasPrefix(cfg.URL, "ws://") && !strings.HasPrefix(cfg.URL, "wss://") {
		return nil, fmt.Errorf("bench: --url %q: want ws://host:port/ws", cfg.URL)
	}
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
	return nil, fmt.Errorf("bench: --mode %q: want pingpong, fanout, idle, rejoin or reference", cfg.Mode)
}

// runID makes game names unique per run, so runs against one server don't mix.
func runID() string { return strconv.FormatInt(time.Now().UnixNano()%1e9, 36) }

func (cfg Config) token(game, role string) (string, error) {
	if cfg.signer == nil {
		return "", nil
	}
	return cfg.signer.Mint(token.Claims{Game: game, Role: role, Exp: time.Now().Add(24 * time.Hour).Unix()})
}

// openGame connects and joins players and spectators of one game.
func openGame(ctx context.Context, cfg Config, game string, firstIdx int, keep bool) ([]*bclient, error) {
	var out []*bclient
	n := cfg.Players + cfg.Spectators
	for i := 0; i < n; i++ {
		role := token.RolePlayer
		if i >= cfg.Players {
			role = token.RoleSpectator
		}
		c, err := dialClient(ctx, cfg.URL, nil, firstIdx+i, game)
		if err != nil {
			return out, err
		}
		c.keep = keep
		go c.readLoop()
		out = append(out, c)
		tok, err := cfg.token(game, role)
		if err != nil {
			return out, err
		}
		if role == token.RoleSpectator && tok == "" {
			// Anonymous installations have no spectators: a player that
			// never sends is the same load.
			role = token.RolePlayer
		}
		if i == cfg.Players && i > 0 {
			// A game exists once something is stored in it: before that,
			// gamerelay answers spectators unknown_game. One warm-up
			// message (not a benchmark message) makes it exist anywhere.
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
		}
		if err := c.join(tok, 0); err != nil {
			return out, err
		}
		if _, err := c.waitJoined(ctx); err != nil {
			return out, err
		}
	}
	return out, nil
}

func runTraffic(ctx context.Context, cfg Config) (*Report, error) {
	id := runID()
	var (
		games   [][]*bclient
		all     []*bclient
		players []*bclient
	)
	jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for g := 0; g < cfg.Games; g++ {
		cs, err := openGame(jctx, cfg, fmt.Sprintf("b%s-%d", id, g), g*(cfg.Players+cfg.Spectators), true)
		all = append(all, cs...)
		if err != nil {
			closeAll(all)
			return nil, err
		}
		games = append(games, cs)
		players = append(players, cs[:cfg.Players]...)
	}
	pad := []byte(strings.Repeat("x", cfg.Payload))
	var sends sync.WaitGroup
	var sent uint64
	var sentMu sync.Mutex
	stop := make(chan struct{})
	cpu0 := readCPU(cfg.ServerPID)
	start := time.Now()
	for _, p := range players {
		sends.Add(1)
		go func(p *bclient) {
			defer sends.Done()
			n := uint64(0)
			defer func() { sentMu.Lock(); sent += n; sentMu.Unlock() }()
			if cfg.Mode == "pingpong" {
				for {
					if err := p.send(pad); err != nil {
						return
					}
					n++
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
					n++
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
	elapsed := time.Since(start)
	cpu1 := readCPU(cfg.ServerPID)
	// Let in-flight messages arrive, then verify.
	settle(all, 5*time.Second)
	rss := readRSS(cfg.ServerPID)
	closeAll(all)

	r := &Report{Mode: cfg.Mode, URL: cfg.URL, Games: cfg.Games, Players: cfg.Players, Spectators: cfg.Spectators,
		Connections: len(all), Elapsed: elapsed, Sends: sent, Errors: map[string]uint64{}}
	own, every := newHist(), newHist()
	for _, c := range all {
		own.merge(c.own)
		every.merge(c.all)
		r.Deliveries += c.all.n
		r.OrderViolations += c.violations
		for k, v := range c.errs {
			r.Errors[k] += v
		}
	}
	r.Own, r.All = own.summary(), every.summary()
	r.SendsPerSec = float64(sent) / elapsed.Seconds()
	r.DeliveriesSec = float64(r.Deliveries) / elapsed.Seconds()
	for _, g := range games {
		r.GamesVerified++
		if !sameSequence(g) {
			r.GamesMismatched++
		}
	}
	if cfg.ServerPID > 0 && cpu0 >= 0 && cpu1 >= 0 {
		r.ServerCPUSeconds = cpu1 - cpu0
		if r.Deliveries > 0 {
			r.ServerCPUPerDelivery = r.ServerCPUSeconds / float64(r.Deliveries) * 1e6
		}
		r.ServerRSSBytes = rss
	}
	return r, nil
}

// settle waits until no client received anything for 300 ms (or max).
func settle(cs []*bclient, maxWait time.Duration) {
	deadline := time.Now().Add(maxWait)
	var last uint64
	quiet := 0
	for time.Now().Before(deadline) && quiet < 3 {
		time.Sleep(100 * time.Millisecond)
		var n uint64
		for _, c := range cs {
			n += c.seen.Load()
		}
		if n == last {
			quiet++
		} else {
			quiet, last = 0, n
		}
	}
}

// serverQuiet waits until process pid uses under a tenth of a core over
// half a second, at most maxWait; at once if pid is 0.
func serverQuiet(pid int, maxWait time.Duration) {
	deadline := time.Now().Add(maxWait)
	for cpu := readCPU(pid); cpu >= 0 && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		now := readCPU(pid)
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
// over the range every one of them covered.
func sameSequence(cs []*bclient) bool {
	var lo, hi uint64 = 0, ^uint64(0)
	for _, c := range cs {
		if len(c.entries) == 0 {
			return false
		}
		lo = max(lo, c.entries[0].id)
		hi = min(hi, c.entries[len(c.entries)-1].id)
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
	id := runID()
	rss0 := readRSS(cfg.ServerPID)
	var cs []*bclient
	defer func() { closeAll(cs) }()
	jctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for i := 0; i < cfg.Conns; i++ {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%cfg.Sources))}
		game := fmt.Sprintf("i%s-%d", id, i%cfg.Games)
		c, err := dialClient(jctx, cfg.URL, src, i, game)
		if err != nil {
			return nil, fmt.Errorf("bench: idle connection %d: %w", i, err)
		}
		go c.readLoop()
		cs = append(cs, c)
		tok, _ := cfg.token(game, token.RolePlayer)
		if err := c.join(tok, 0); err != nil {
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
	if cfg.ServerPID > 0 {
		r.ServerRSSBytes = readRSS(cfg.ServerPID)
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
	id := runID()
	if err := fill(ctx, cfg, "o"+id, cfg.Others, 64); err != nil {
		return nil, err
	}
	game := "h" + id
	if err := fill(ctx, cfg, game, cfg.History, 1); err != nil {
		return nil, err
	}
	// Replay is measured on a quiet server, not against the aftermath of
	// the fill (its stores flushing, its garbage collected).
	serverQuiet(cfg.ServerPID, 30*time.Second)
	h := newHist()
	r := &Report{Mode: "rejoin", URL: cfg.URL, Games: 1, Errors: map[string]uint64{}}
	for i := 0; i < cfg.Rejoins; i++ {
		c, err := dialClient(ctx, cfg.URL, nil, 0, game)
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
		if err := c.join(tok, 0); err != nil {
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
		c, err := dialClient(ctx, cfg.URL, nil, g, name)
		if err != nil {
			return err
		}
		go c.readLoop()
		cs = append(cs, c)
		tok, _ := cfg.token(name, token.RolePlayer)
		if err := c.join(tok, 0); err != nil {
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

// readCPU returns utime+stime of pid in seconds, or -1.
func readCPU(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name (which is in parentheses).
	s := string(b)
	s = s[strings.LastIndexByte(s, ')')+2:]
	f := strings.Fields(s)
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// clockTicks is USER_HZ, 100 on Linux for every common architecture.
const clockTicks = 100

// readRSS returns the resident set of pid in bytes, or -1.
func readRSS(pid int) int64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return -1
}

// Fprint writes the report as a table.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode %s  url %s  games %d  players/game %d  spectators/game %d  connections %d  elapsed %s\n",
		r.Mode, r.URL, r.Games, r.Players, r.Spectators, r.Connections, r.Elapsed.Round(time.Millisecond))
	if r.Sends > 0 || r.Deliveries > 0 {
		fmt.Fprintf(&b, "sends %d (%.0f/s)  deliveries %d (%.0f/s)\n", r.Sends, r.SendsPerSec, r.Deliveries, r.DeliveriesSec)
		fmt.Fprintf(&b, "latency send→own delivery   p50 %s  p90 %s  p99 %s  max %s\n", r.Own.P50, r.Own.P90, r.Own.P99, r.Own.Max)
		fmt.Fprintf(&b, "latency send→every delivery p50 %s  p90 %s  p99 %s  max %s\n", r.All.P50, r.All.P90, r.All.P99, r.All.Max)
	}
	if r.Replay != nil {
		fmt.Fprintf(&b, "replay of %d messages (with %d other messages first): p50 %s  p99 %s  max %s  (%.2f µs/message)\n",
			r.Replay.History, r.Replay.Others, r.Replay.Latency.P50, r.Replay.Latency.P99, r.Replay.Latency.Max, r.Replay.PerMsg)
	}
	if r.ServerCPUSeconds > 0 {
		fmt.Fprintf(&b, "server CPU %.2fs  (%.2f µs per delivery)\n", r.ServerCPUSeconds, r.ServerCPUPerDelivery)
	}
	if r.ServerRSSBytes > 0 {
		fmt.Fprintf(&b, "server RSS %.1f MiB", float64(r.ServerRSSBytes)/(1<<20))
		if r.ServerRSSPerConn > 0 {
			fmt.Fprintf(&b, "  (%.1f KiB per connection)", r.ServerRSSPerConn/1024)
		}
		b.WriteString("\n")
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
	fmt.Fprintf(&b, "verified: games %d  mismatched %d  order violations %d  errors [%s]\n",
		r.GamesVerified, r.GamesMismatched, r.OrderViolations, strings.Join(errs, " "))
	return b.String()
}
