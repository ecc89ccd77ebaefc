package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/gamerelay/gamerelay/gateway"
	"github.com/gamerelay/gamerelay/gateway/token"
)

// fakeGateway speaks the protocol of a gateway whose joins cost the same
// whatever the audience: joined carries "since" (the replay is since+1 …
// head), "history":N replays only the last N messages, presence messages
// carry a list of events, and audience frames without msg_id come between
// the sequenced ones. Every game starts with seed presence messages; joins
// append nothing. Its knobs break it on purpose.
type fakeGateway struct {
	seed       int
	gapAt      uint64 // leave this msg_id out of replays
	vary       bool   // every second connection gets other frames in its replay
	closeAfter uint64 // close with 1013 right after joined once head ≥ this (0: never)

	mu    sync.Mutex
	games map[string]*fakeGame
	conns int
}

type fakeGame struct {
	frames  [][]byte // msg_id i+1 at i
	members map[net.Conn]bool
}

func startFake(t *testing.T, f *fakeGateway) string {
	t.Helper()
	f.games = map[string]*fakeGame{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return "ws://" + srv.Listener.Addr().String() + "/ws"
}

func (f *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer conn.Close()
	f.mu.Lock()
	f.conns++
	n := f.conns
	f.mu.Unlock()
	id := "f-" + strconv.Itoa(n)
	var g *fakeGame
	defer func() {
		f.mu.Lock()
		if g != nil {
			delete(g.members, conn)
		}
		f.mu.Unlock()
	}()
	for {
		p, op, err := wsutil.ReadClientData(conn)
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		var m struct {
			Type    string  `json:"type"`
			Game    string  `json:"game"`
			Since   uint64  `json:"since"`
			History *uint64 `json:"history"`
		}
		if json.Unmarshal(p, &m) != nil {
			continue
		}
		f.mu.Lock()
		if g == nil {
			if m.Type == "join" && !f.joinLocked(conn, n, id, m.Game, m.Since, m.History) {
				f.mu.Unlock()
				return
			}
			g = f.games[m.Game]
			f.mu.Unlock()
			continue
		}
		body := p[:bytes.LastIndexByte(p, '}')]
		frame := []byte(string(body) + `,"client_id":"` + id + `","msg_id":` + strconv.Itoa(len(g.frames)+1) + `,"ts":0}`)
		g.frames = append(g.frames, frame)
		for c := range g.members {
			_ = wsutil.WriteServerText(c, frame)
			_ = wsutil.WriteServerText(c, audienceFrame(m.Game, len(g.members)))
		}
		f.mu.Unlock()
	}
}

// joinLocked answers a join; false: the connection is to be closed.
func (f *fakeGateway) joinLocked(conn net.Conn, n int, id, game string, since uint64, history *uint64) bool {
	g := f.games[game]
	if g == nil {
		g = &fakeGame{members: map[net.Conn]bool{}}
		for i := 1; i <= f.seed; i++ {
			g.frames = append(g.frames, []byte(`{"type":"presence","events":[{"event":"join","client":"seed-`+strconv.Itoa(i)+
				`","role":"player"}],"client_id":"","msg_id":`+strconv.Itoa(i)+`,"ts":0}`))
		}
		f.games[game] = g
	}
	head := uint64(len(g.frames))
	start := since
	if history != nil {
		start = head - min(*history, head)
	}
	_ = wsutil.WriteServerText(conn, []byte(`{"type":"joined","game":"`+game+`","client_id":"`+id+`","role":"player","head":`+
		strconv.FormatUint(head, 10)+`,"since":`+strconv.FormatUint(start, 10)+`}`))
	if f.closeAfter > 0 && head >= f.closeAfter {
		_ = wsutil.WriteServerMessage(conn, ws.OpClose, ws.NewCloseFrameBody(1013, "try later"))
		return false
	}
	for i := start + 1; i <= head; i++ {
		if i == f.gapAt {
			continue
		}
		frame := g.frames[i-1]
		if f.vary && n%2 == 0 {
			frame = bytes.Replace(frame, []byte(`"ts":0`), []byte(`"ts":1`), 1)
		}
		_ = wsutil.WriteServerText(conn, frame)
	}
	g.members[conn] = true
	_ = wsutil.WriteServerText(conn, audienceFrame(game, len(g.members)))
	return true
}

func audienceFrame(game string, players int) []byte {
	return []byte(`{"type":"audience","game":"` + game + `","players":` + strconv.Itoa(players) + `,"spectators":0}`)
}

func u64(n uint64) *uint64 { return &n }

// Deliveries per join are the sequenced frames received until all joined,
// over the clients: against the fake, each game holds 3 presence messages
// and its creator's first message, so a join replays 4 of them with since
// 0, none with since-head and N with history N. Audience frames are not
// errors.
func TestJoinDeliveriesPerJoin(t *testing.T) {
	url := startFake(t, &fakeGateway{seed: 3})
	for _, tc := range []struct {
		name    string
		cfg     Config
		perJoin uint64
	}{
		{"since 0", Config{}, 4},
		{"since head", Config{SinceHead: true}, 0},
		{"history 1", Config{JoinHistory: u64(1)}, 1},
		{"history 0", Config{JoinHistory: u64(0)}, 0},
		{"5 games", Config{Games: 5}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.URL, cfg.Mode, cfg.Clients, cfg.Inflight, cfg.Settle = url, "join", 50, 10, time.Millisecond
			r, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + r.String())
			j := r.Join
			if !r.OK() || j.Joined != 50 || j.Failed() != 0 || j.Latency.Count != 50 || r.Connections != 50 {
				t.Fatalf("report: %+v %+v", r, j)
			}
			if j.Deliveries != 50*tc.perJoin || j.Replayed != 50*tc.perJoin || j.PerJoin != float64(tc.perJoin) {
				t.Fatalf("deliveries %d (%v per join), replayed %d; want %d per join", j.Deliveries, j.PerJoin, j.Replayed, tc.perJoin)
			}
			// Nothing follows the joins here.
			if j.DeliveriesAll != j.Deliveries || j.PerJoinAll != j.PerJoin || j.QuietAfter < 0 {
				t.Fatalf("until quiet: %d deliveries (%v per join) after %v", j.DeliveriesAll, j.PerJoinAll, j.QuietAfter)
			}
			if r.Unsequenced < 50 {
				t.Fatalf("%d audience frames ignored, want one per join at least", r.Unsequenced)
			}
			if r.GamesVerified != max(1, cfg.Games) || j.AllJoined <= 0 {
				t.Fatalf("games verified %d, all joined in %v", r.GamesVerified, j.AllJoined)
			}
		})
	}
}

// A replay with a gap, or frames that differ between clients for one
// msg_id, fail verification.
func TestJoinVerifies(t *testing.T) {
	for name, f := range map[string]*fakeGateway{
		"gap":       {seed: 3, gapAt: 2},
		"divergent": {seed: 3, vary: true},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := Run(context.Background(), Config{URL: startFake(t, f), Mode: "join", Clients: 20, Inflight: 5, Settle: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() {
				t.Fatalf("verification passed:\n%s", r)
			}
			if name == "gap" && r.OrderViolations < 20 {
				t.Fatalf("%d order violations, want one per client at least", r.OrderViolations)
			}
			if name == "divergent" && r.GamesMismatched != 1 {
				t.Fatalf("%d games mismatched, want 1", r.GamesMismatched)
			}
		})
	}
}

// Joins that do not complete are counted by reason, and the run still
// reports the others.
func TestJoinFailures(t *testing.T) {
	full := startGatewayWith(t, gateway.Config{AllowAnonymous: true, MaxClientsPerGame: 20})
	r, err := Run(context.Background(), Config{URL: full, Mode: "join", Clients: 50, Inflight: 10, Settle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.String())
	// The creator and 19 others fill the game.
	if j := r.Join; j.Joined != 19 || len(j.Failures) != 1 || j.Failures["error game_full"] != 31 || !r.OK() {
		t.Fatalf("game of 20: %+v, failures %v", j, j.Failures)
	}

	closing := startFake(t, &fakeGateway{seed: 3, closeAfter: 4})
	r, err = Run(context.Background(), Config{URL: closing, Mode: "join", Clients: 10, Inflight: 3, Settle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if j := r.Join; j.Joined != 0 || j.Failures["closed 1013"] != 10 {
		t.Fatalf("closed after joined: %+v, failures %v", j, j.Failures)
	}

	// Below Run: a game no one created, a gateway without anonymous play,
	// a port no one listens on.
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return "ws://" + l.Addr().String() + "/ws"
	}()
	for _, tc := range []struct {
		name, url, secret, role, reason string
	}{
		{"unknown game", startGateway(t), testSecret, token.RoleSpectator, "error unknown_game"},
		{"spectator without token", startGatewayWith(t, gateway.Config{}), "", token.RoleSpectator, "error auth_required"},
		{"refused", closed, "", token.RolePlayer, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{URL: tc.url, Mode: "join", TokenSecret: tc.secret}.withDefaults()
			cfg.Inflight = 4
			g := &joinGame{name: "nobody-made-" + runID(), log: &gameLog{}}
			specs := make([]joinSpec, 12)
			for i := range specs {
				specs[i] = joinSpec{idx: i, game: g, role: tc.role}
			}
			o := cfg.joinAll(context.Background(), specs, countOnly)
			o.closing.Wait()
			if j := o.report(cfg, len(specs), 1, tc.role); j.Joined != 0 || len(j.Failures) != 1 || j.Failures[tc.reason] != 12 {
				t.Fatalf("failures %v, joined %d; want %s=12", j.Failures, j.Joined, tc.reason)
			}
		})
	}
}

// The join mode against today's gateway and the reference relay: every
// client joins and verifies its sequence, presence messages included;
// with since-head its first frame must be the one after its since.
func TestJoinModeAgainstGatewayAndReference(t *testing.T) {
	gw, ref := startGateway(t), startReference(t)
	results := map[string]*Report{}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"players", Config{URL: gw}},
		{"players since head", Config{URL: gw, SinceHead: true}},
		{"players, 5 games", Config{URL: gw, Games: 5}},
		{"spectators", Config{URL: gw, Role: token.RoleSpectator, TokenSecret: testSecret}},
		{"reference", Config{URL: ref}},
		{"reference, spectators", Config{URL: ref, Role: token.RoleSpectator, TokenSecret: testSecret}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Mode, cfg.Clients, cfg.Inflight, cfg.Settle, cfg.ServerPIDs = "join", 50, 10, 10*time.Millisecond, []int{os.Getpid()}
			r, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + r.String())
			j := r.Join
			if !r.OK() || j.Joined != 50 || j.Failed() != 0 || r.GamesVerified != max(1, cfg.Games) || j.Latency.Count != 50 {
				t.Fatalf("report %+v, join %+v", r, j)
			}
			// The joins take a few milliseconds, less than the 10 ms the
			// CPU time is counted in; until quiet takes over 300 ms.
			if r.ServerRSSBytes <= 0 || j.CPUPerJoin < 0 || j.CPUPerJoinAll <= 0 {
				t.Fatalf("server measures missing: RSS %d, CPU per join %v / %v", r.ServerRSSBytes, j.CPUPerJoin, j.CPUPerJoinAll)
			}
			results[tc.name] = r
		})
	}
	// Each game starts with two messages (its creator's join and first
	// message), which every joiner replays with since 0. Spectators add
	// nothing to the log. Players' joins are coalesced into presence
	// messages: fewer than one per join, so the deliveries stay well
	// below what one presence message per join would cost (n(n+2)+n per
	// game of n joiners).
	if r := results["spectators"]; r != nil && r.Join.DeliveriesAll != 50*2 {
		t.Errorf("spectators: %d deliveries until quiet, want exactly %d (the replay of 2 messages each)", r.Join.DeliveriesAll, 50*2)
	}
	for name, n := range map[string]uint64{"players": 50, "players, 5 games": 10} {
		r := results[name]
		if r == nil {
			continue
		}
		games := uint64(r.Games)
		perJoin := games * (n*(n+2) + n)
		if got := r.Join.DeliveriesAll; got < games*n*2 || got > perJoin/2 || r.Join.Deliveries > got {
			t.Errorf("%s: %d deliveries until all joined, %d until quiet; want at least %d and at most %d", name, r.Join.Deliveries, got, games*n*2, perJoin/2)
		}
	}
	// The reference announces no one and replays nothing.
	if r := results["reference"]; r != nil && r.Join.DeliveriesAll != 0 {
		t.Errorf("reference: %d deliveries for joins that append nothing", r.Join.DeliveriesAll)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"ok":                      {Config{URL: "ws://x/ws", Mode: "join"}, ""},
		"spectator with secret":   {Config{URL: "ws://x/ws", Mode: "join", Role: "spectator", TokenSecret: "s"}, ""},
		"spectator without token": {Config{URL: "ws://x/ws", Mode: "join", Role: "spectator"}, "--role spectator needs --token-secret"},
		"bad role":                {Config{URL: "ws://x/ws", Mode: "join", Role: "king"}, "--role"},
		"bad mode":                {Config{URL: "ws://x/ws", Mode: "burst"}, "--mode"},
		"bad url":                 {Config{URL: "http://x", Mode: "join"}, "--url"},
		"more games than clients": {Config{URL: "ws://x/ws", Mode: "join", Clients: 5, Games: 6}, "more games"},
		"negative":                {Config{URL: "ws://x/ws", Mode: "join", Inflight: -1}, "--inflight"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}
