package gateway

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// Spectators only receive: joining and leaving costs the log nothing, and
// they show in the audience instead.
func TestSpectatorsNeverWriteToTheLog(t *testing.T) {
	s := newSystem(t, 1, Config{AudienceInterval: 20 * time.Millisecond})
	const game = "watched"
	player := dial(t, s.gws[0].url)
	player.send(joinMsg(game, mint(t, testSecret, game, token.RolePlayer, time.Hour), 0))
	player.expect("joined")
	player.send(`{"type":"start"}`)
	var head uint64
	for head == 0 {
		if m := player.next(10 * time.Second); m["type"] == "start" {
			head = id(m)
		}
	}
	watch := mint(t, testSecret, game, token.RoleSpectator, time.Hour)
	for i := 0; i < 100; i++ {
		c := dial(t, s.gws[0].url)
		c.send(joinMsg(game, watch, head))
		c.expect("joined")
		c.send(`{"type":"bye"}`) // a spectator cannot send either
		c.expect("error", wire.CodeForbidden)
		_ = c.conn.Close()
	}
	// Ten spectators stay: the player sees them counted, and the log has
	// not moved.
	var stay []*client
	for i := 0; i < 10; i++ {
		c := dial(t, s.gws[0].url)
		c.send(joinMsg(game, watch, head))
		c.expect("joined")
		stay = append(stay, c)
	}
	player.nextAudience(10*time.Second, func(p, sp int) bool { return p == 1 && sp == 10 })
	stay[0].nextAudience(10*time.Second, func(p, sp int) bool { return p == 1 && sp == 10 })
	player.send(`{"type":"marker"}`)
	m := player.next(10 * time.Second)
	if m["type"] != "marker" || id(m) != head+1 {
		t.Fatalf("after 110 spectator joins the next message is %v, want the marker at msg_id %d", m, head+1)
	}
	for _, c := range stay {
		_ = c.conn.Close()
	}
	player.nextAudience(10*time.Second, func(p, sp int) bool { return p == 1 && sp == 0 })
}

// Players' joins are coalesced: the first goes at once, alone; those of a
// crowd arriving together share presence messages; every join is listed
// exactly once.
func TestPlayerPresenceCoalesced(t *testing.T) {
	s := newSystem(t, 2, Config{AllowAnonymous: true})
	const game, crowd = "lobby", 60
	first := dial(t, s.gws[0].url)
	first.send(`{"type":"join","game":"` + game + `"}`)
	fid := first.expect("joined")["client_id"]
	if evs := presenceEvents(t, first.expect("presence"), "join"); len(evs) != 1 || evs[0]["client"] != fid {
		t.Fatalf("first join: %v", evs)
	}
	var wg sync.WaitGroup
	ids := make(chan string, crowd)
	for i := 0; i < crowd; i++ {
		wg.Go(func() {
			c := dial(t, s.gws[i%2].url)
			c.send(`{"type":"join","game":"` + game + `","since":1}`)
			ids <- c.expect("joined")["client_id"].(string)
		})
	}
	wg.Wait()
	close(ids)
	want := map[string]bool{}
	for id := range ids {
		want[id] = true
	}
	seen, messages := map[string]bool{}, 0
	for len(seen) < crowd {
		m := first.next(20 * time.Second)
		if m["type"] != "presence" {
			t.Fatalf("unexpected %v", m)
		}
		messages++
		for _, ev := range presenceEvents(t, m, "join") {
			cid := ev["client"].(string)
			if !want[cid] || seen[cid] {
				t.Fatalf("join of %s unexpected or listed twice (message %v)", cid, m)
			}
			seen[cid] = true
		}
	}
	// Each gateway's first event goes alone; the rest share messages.
	if messages > crowd/3 {
		t.Fatalf("%d joins took %d presence messages: not coalesced", crowd, messages)
	}
	t.Logf("%d joins on 2 gateways: %d presence messages", crowd, messages)
}

// A batch of events too big to list is stored as its counts; a list stays
// a list up to the limits, in order.
func TestPresenceMessageListsOrCounts(t *testing.T) {
	batch := func(n int, user string) ([]presenceEvent, int) {
		evs, size := make([]presenceEvent, n), 0
		for i := range evs {
			evs[i] = presenceEvent{event: "join", client: fmt.Sprintf("c-%d", i), user: user}
			if i%3 == 2 {
				evs[i].event = "leave"
			}
			size += presenceEventBytes(evs[i])
		}
		return evs, size
	}
	for _, tc := range []struct {
		n      int
		user   string
		listed bool
	}{
		{1, "", true},
		{presenceListMax, "ana", true},
		{presenceListMax + 1, "", false},
		{9000, "", false},
		{20, strings.Repeat("u", 1000), false}, // few events, but too many bytes
	} {
		evs, size := batch(tc.n, tc.user)
		m := decode(t, presenceMessage(evs, size))
		if m["type"] != "presence" || m["client_id"] != "" {
			t.Fatalf("%d events: not a presence message: %v", tc.n, m)
		}
		leaves := tc.n / 3
		if !tc.listed {
			if m["joins"] != float64(tc.n-leaves) || m["leaves"] != float64(leaves) || m["events"] != nil {
				t.Fatalf("%d events: want counts %d/%d, got %v", tc.n, tc.n-leaves, leaves, m)
			}
			continue
		}
		listed, _ := m["events"].([]any)
		if len(listed) != tc.n || m["joins"] != nil {
			t.Fatalf("%d events: want them listed, got %v", tc.n, m)
		}
		for i, e := range listed {
			ev := e.(map[string]any)
			if ev["client"] != evs[i].client || ev["event"] != evs[i].event {
				t.Fatalf("event %d is %v, want %+v", i, ev, evs[i])
			}
		}
	}
}

// A crowd joining one game at once: every join is in the log exactly once,
// listed or counted, and each player's join precedes its first message.
func TestCrowdPresenceCountsEveryJoin(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true})
	const game, crowd = "arena", 400
	watcher := dial(t, s.gws[0].url)
	watcher.send(`{"type":"join","game":"` + game + `"}`)
	watcher.expect("joined")
	presenceEvents(t, watcher.expect("presence"), "join")
	joinAndSayHello(t, s.gws[0].url, game, `"history":0`, crowd)
	joins, counted, senders := 0, 0, map[string]bool{}
	for joins < crowd || len(senders) < crowd {
		m := watcher.next(30 * time.Second)
		switch m["type"] {
		case "presence":
			if n, ok := m["joins"].(float64); ok {
				joins += int(n)
				counted++
				if n+m["leaves"].(float64) <= presenceListMax {
					t.Fatalf("a batch small enough to list was counted: %v", m)
				}
				continue
			}
			joins += len(presenceEvents(t, m, "join"))
		case "hello":
			senders[m["client_id"].(string)] = true
			if len(senders) > joins {
				t.Fatalf("%d players sent before %d joins were in the log (msg_id %d)", len(senders), joins, id(m))
			}
		}
	}
	if joins != crowd {
		t.Fatalf("presence recorded %d joins, want %d", joins, crowd)
	}
	t.Logf("%d joins: %d presence messages with counts", crowd, counted)
}

// joinAndSayHello has n players join game at once on url, the join frame
// carrying member (such as `"history":0`), each sending
// {"type":"hello","i":i} as soon as it joined; it returns when all have.
func joinAndSayHello(t *testing.T, url, game, member string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Go(func() {
			c := dial(t, url)
			c.send(`{"type":"join","game":"` + game + `",` + member + `}`)
			c.expect("joined")
			c.send(fmt.Sprintf(`{"type":"hello","i":%d}`, i))
		})
	}
	wg.Wait()
}

// A player's own join is in the log before its first message, even in a
// game so busy that its join waits in a long coalescing window.
func TestPlayerJoinPrecedesItsFirstMessage(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true})
	const game, players = "busy", 40
	watcher := dial(t, s.gws[0].url)
	watcher.send(`{"type":"join","game":"` + game + `"}`)
	watcher.expect("joined")
	joinAndSayHello(t, s.gws[0].url, game, `"since":1000000`, players)
	joined := map[string]bool{}
	hellos := 0
	for hellos < players {
		m := watcher.next(20 * time.Second)
		switch m["type"] {
		case "presence":
			for _, ev := range presenceEvents(t, m, "join") {
				joined[ev["client"].(string)] = true
			}
		case "hello":
			hellos++
			if cid := m["client_id"].(string); !joined[cid] {
				t.Fatalf("message %v (msg_id %d) came before its sender's join", m, id(m))
			}
		}
	}
}

// The audience counts players and spectators on every gateway; a gateway
// that stops saying it is alive stops counting.
func TestAudienceAcrossGateways(t *testing.T) {
	s := newSystem(t, 2, Config{AudienceInterval: 20 * time.Millisecond, AudienceTTL: 2 * time.Second})
	const game = "arena"
	play := mint(t, testSecret, game, token.RolePlayer, time.Hour)
	watch := mint(t, testSecret, game, token.RoleSpectator, time.Hour)
	a := dial(t, s.gws[0].url)
	a.send(joinMsg(game, play, 0))
	a.expect("joined")
	a.nextAudience(10*time.Second, func(p, sp int) bool { return p == 1 && sp == 0 })
	var onB []*client
	for _, tok := range []string{play, watch, watch} {
		c := dial(t, s.gws[1].url)
		c.send(joinMsg(game, tok, 0))
		c.expect("joined")
		onB = append(onB, c)
	}
	a.nextAudience(10*time.Second, func(p, sp int) bool { return p == 2 && sp == 2 })
	onB[2].nextAudience(10*time.Second, func(p, sp int) bool { return p == 2 && sp == 2 })
	// A spectator on B leaves: both gateways see it.
	_ = onB[2].conn.Close()
	a.nextAudience(10*time.Second, func(p, sp int) bool { return p == 2 && sp == 1 })
	// B goes silent without a goodbye (its NATS connection is cut): A
	// stops counting B's clients once B's counts expire.
	s.gws[1].feeds.Conn().Close()
	a.nextAudience(15*time.Second, func(p, sp int) bool { return p == 1 && sp == 0 })
}

// "history" bounds the replay of a join to the last N messages; "since"
// still wins when it asks for less; joined says where the replay starts.
func TestJoinWithHistory(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true})
	const game = "chat"
	p := dial(t, s.gws[0].url)
	p.send(`{"type":"join","game":"` + game + `"}`)
	p.expect("joined")
	for k := 0; k < 30; k++ {
		p.send(fmt.Sprintf(`{"type":"say","k":%d}`, k))
	}
	var head uint64
	for head == 0 {
		if m := p.next(10 * time.Second); m["k"] == float64(29) {
			head = id(m)
		}
	}
	// Anonymous joiners are players: each adds a presence message, so
	// every case reads the head from its own joined frame.
	for _, tc := range []struct {
		name  string
		join  func(head uint64) string
		since func(head uint64) uint64
	}{
		{"last ten", func(uint64) string { return `{"type":"join","game":"chat","history":10}` },
			func(h uint64) uint64 { return h - 10 }},
		{"from the head", func(uint64) string { return `{"type":"join","game":"chat","history":0}` },
			func(h uint64) uint64 { return h }},
		{"more than there is", func(uint64) string { return `{"type":"join","game":"chat","history":100000}` },
			func(uint64) uint64 { return 0 }},
		{"since asks for less", func(h uint64) string {
			return fmt.Sprintf(`{"type":"join","game":"chat","history":10,"since":%d}`, h-3)
		}, func(h uint64) uint64 { return h - 3 }},
		{"since asks for more", func(h uint64) string {
			return fmt.Sprintf(`{"type":"join","game":"chat","history":10,"since":%d}`, h-20)
		}, func(h uint64) uint64 { return h - 10 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s.gws[0].url)
			c.send(tc.join(head))
			j := c.expect("joined")
			h := uint64(j["head"].(float64))
			if h < head {
				t.Fatalf("joined %v: head below %d", j, head)
			}
			// "since" cases were written for head; the head can only have
			// moved by presence messages since.
			want := tc.since(h)
			if strings.Contains(tc.name, "since asks") {
				want = tc.since(head)
				if tc.name == "since asks for more" {
					want = h - 10
				}
			}
			if got := uint64(j["since"].(float64)); got != want {
				t.Fatalf("joined %v: since %d, want %d", j, got, want)
			}
			if want < h {
				collect(t, c, want+1, h)
			}
			c.send(`{"type":"mark"}`)
			if m := nextNotPresence(c); m["type"] != "mark" {
				t.Fatalf("after the replay: %v, want the next live message", m)
			}
			_ = c.conn.Close()
			for m := nextNotPresence(p); m["type"] != "mark"; m = nextNotPresence(p) {
			}
			head = h
		})
	}
	for _, bad := range []string{`-1`, `1.5`, `"10"`, `true`, `1000001`, `99999999999999999999`} {
		c := dial(t, s.gws[0].url)
		c.send(`{"type":"join","game":"chat","history":` + bad + `}`)
		if e := c.expect("error", wire.CodeInvalidMessage); !strings.Contains(e["message"].(string), "history") {
			t.Fatalf("history %s: %v", bad, e)
		}
		_ = c.conn.Close()
	}
}

// Joins from one source address are limited when JoinRate is set; each
// refusal is counted.
func TestJoinRatePerAddress(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, JoinRate: 0.01, JoinBurst: 3})
	for i := 0; i < 3; i++ {
		c := dial(t, s.gws[0].url)
		c.send(`{"type":"join","game":"door"}`)
		c.expect("joined")
	}
	c := dial(t, s.gws[0].url)
	c.send(`{"type":"join","game":"door"}`)
	c.expect("error", wire.CodeRateLimited)
	if got := testutilValue(s.gws[0].metrics.Refused.WithLabelValues("join_rate")); got < 1 {
		t.Fatalf("refused joins counted %v", got)
	}
}

// A big audience hears about changes less often: the gap between two
// audience frames grows with the clients on this gateway, up to a bound,
// and a change held back is sent once the gap has passed.
func TestAudienceFramesToBigAudiencesAreSpaced(t *testing.T) {
	const interval = 100 * time.Millisecond
	g, err := New(nil, nil, nil, Config{TokenSecret: []byte(testSecret), AudienceInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	// The loop never starts: the test calls update itself.
	done := make(chan struct{})
	close(done)
	g.aud.mu.Lock()
	g.aud.stop, g.aud.done = make(chan struct{}), done
	g.aud.mu.Unlock()
	t.Cleanup(g.aud.close)
	for _, c := range []struct {
		clients int
		want    time.Duration
	}{{0, interval}, {499, interval}, {500, 2 * interval}, {2600, 6 * interval}, {1_000_000, maxAudienceGap}} {
		if got := g.aud.gap(c.clients); got != c.want {
			t.Errorf("gap(%d) = %v, want %v", c.clients, got, c.want)
		}
	}

	for _, n := range []int{10, 1500} {
		h := &hub{game: "g", clients: make(map[*conn]struct{}), sentPlayers: -1, sentSpectators: -1, pubPlayers: -1, pubSpectators: -1}
		for i := 0; i < n; i++ {
			h.clients[&conn{closing: true}] = struct{}{} // takes no frames
		}
		gap := g.aud.gap(n)
		t0 := time.Now()
		h.spectators = n
		g.aud.update(h, t0, nil, 0)
		if h.sentSpectators != n {
			t.Fatalf("%d clients: first change not sent: sent %d", n, h.sentSpectators)
		}
		// A change within the gap waits; the hub stays marked to look again.
		h.spectators = n - 1
		g.aud.update(h, t0.Add(gap-time.Millisecond), nil, 0)
		if h.sentSpectators != n {
			t.Fatalf("%d clients: change %v after the last frame sent, want it held for %v", n, gap-time.Millisecond, gap)
		}
		g.aud.mu.Lock()
		_, marked := g.aud.dirty[h]
		g.aud.mu.Unlock()
		if !marked {
			t.Fatalf("%d clients: held change not marked for the next tick", n)
		}
		g.aud.update(h, t0.Add(gap), nil, 0)
		if h.sentSpectators != n-1 {
			t.Fatalf("%d clients: change not sent once the gap %v passed: sent %d", n, gap, h.sentSpectators)
		}
	}
}
