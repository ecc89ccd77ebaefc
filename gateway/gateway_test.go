package gateway

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// collect reads frames until it has seen every msg_id up to n, checking
// density and order as it goes, and returns the game frames by msg_id.
func collect(t *testing.T, c *client, from, n uint64) []map[string]any {
	t.Helper()
	var out []map[string]any
	want := from
	for want <= n {
		m := c.next(20 * time.Second)
		if m["type"] == "joined" || m["type"] == "error" {
			t.Fatalf("unexpected %v", m)
		}
		if id(m) != want {
			t.Fatalf("got msg_id %d, want %d (frame %v)", id(m), want, m)
		}
		out = append(out, m)
		want++
	}
	return out
}

func TestTotalOrderAcrossThreeGateways(t *testing.T) {
	s := newSystem(t, 3, Config{AllowAnonymous: true})
	const game, senders, per = "order", 6, 40
	type joined struct {
		c    *client
		from uint64
	}
	var clients []joined
	// Early clients: three per gateway.
	for i := 0; i < 9; i++ {
		c := dial(t, s.gws[i%3].url)
		c.send(`{"type":"join","game":"` + game + `"}`)
		c.expect("joined")
		clients = append(clients, joined{c, 1}) // since 0: the whole history
	}
	var wg sync.WaitGroup
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func(c *client, i int) {
			defer wg.Done()
			for k := 0; k < per; k++ {
				c.send(fmt.Sprintf(`{"type":"move","who":%d,"k":%d}`, i, k))
			}
		}(clients[i].c, i)
	}
	// Late clients join mid-stream from 0 (one through the "room" alias):
	// the replay/live seam under load.
	for i := 0; i < 3; i++ {
		c := dial(t, s.gws[i].url)
		c.send(`{"type":"join","room":"` + game + `","since":0}`)
		if j := c.expect("joined"); j["role"] != token.RolePlayer || j["game"] != game {
			t.Fatalf("joined %v", j)
		}
		clients = append(clients, joined{c, 1})
	}
	wg.Wait()
	// The log holds every move and the 12 players' joins, in presence
	// messages that may each list several: read up to where the first
	// client has seen them all. Then each client sees a dense run up to n,
	// and all clients agree on every msg_id.
	var (
		n     uint64
		first []map[string]any // what the first client read
	)
	for moves, joins := 0, 0; moves < senders*per || joins < 12; {
		m := clients[0].c.next(20 * time.Second)
		if id(m) != n+1 {
			t.Fatalf("got msg_id %d, want %d (frame %v)", id(m), n+1, m)
		}
		switch m["type"] {
		case "move":
			moves++
		case "presence":
			joins += len(presenceEvents(t, m, "join"))
		}
		n = id(m)
		first = append(first, m)
	}
	frames := map[uint64]string{}
	moves := 0
	for i, j := range clients {
		got := first
		if i > 0 {
			got = collect(t, j.c, j.from, n)
		}
		for _, m := range got {
			f := fmt.Sprint(m)
			if prev, ok := frames[id(m)]; !ok {
				frames[id(m)] = f
				if m["type"] == "move" {
					moves++
					if cid, _ := m["client_id"].(string); cid == "" || m["ts"] == nil {
						t.Fatalf("move without client_id/ts: %v", m)
					}
				}
			} else if prev != f {
				t.Fatalf("clients disagree on msg_id %d: %s vs %s", id(m), prev, f)
			}
		}
	}
	if moves != senders*per || uint64(len(frames)) != n {
		t.Fatalf("%d moves and %d frames delivered, want %d and %d", moves, len(frames), senders*per, n)
	}
}

// presenceEvents returns the events of presence message m of the given
// kind ("join" or "leave"), checking their form. m must list its events
// (a batch small enough not to be counted).
func presenceEvents(t testing.TB, m map[string]any, kind string) []map[string]any {
	t.Helper()
	if m["type"] != "presence" || m["client_id"] != "" {
		t.Fatalf("not a presence message: %v", m)
	}
	evs, ok := m["events"].([]any)
	if !ok || len(evs) == 0 {
		t.Fatalf("presence without events: %v", m)
	}
	var out []map[string]any
	for _, e := range evs {
		ev, ok := e.(map[string]any)
		if !ok || (ev["event"] != "join" && ev["event"] != "leave") || ev["client"] == "" {
			t.Fatalf("bad presence event %v in %v", e, m)
		}
		if ev["event"] == kind {
			out = append(out, ev)
		}
	}
	return out
}

func decode(t testing.TB, p []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		t.Fatalf("frame %q: %v", p, err)
	}
	return m
}

func TestReconnectToAnotherGatewayWithSince(t *testing.T) {
	s := newSystem(t, 2, Config{AllowAnonymous: true})
	sender := dial(t, s.gws[0].url)
	sender.send(`{"type":"join","game":"resume"}`)
	sender.expect("joined")
	a := dial(t, s.gws[0].url)
	a.send(`{"type":"join","game":"resume"}`)
	a.expect("joined")
	for k := 0; k < 20; k++ {
		sender.send(fmt.Sprintf(`{"type":"n","k":%d}`, k))
	}
	got := collect(t, a, 1, 10)
	last := id(got[len(got)-1])
	_ = a.conn.Close()
	for k := 20; k < 40; k++ {
		sender.send(fmt.Sprintf(`{"type":"n","k":%d}`, k))
	}
	// Wait until everything is stored, as seen by the sender.
	var end uint64
	for end == 0 {
		if m := sender.next(10 * time.Second); m["k"] == float64(39) {
			end = id(m)
		}
	}
	b := dial(t, s.gws[1].url)
	b.send(joinMsg("resume", "", last))
	if j := b.expect("joined"); uint64(j["head"].(float64)) < end {
		t.Fatalf("head %v < %d", j["head"], end)
	}
	rest := collect(t, b, last+1, end)
	if rest[0]["type"] != "n" && rest[0]["type"] != "presence" {
		t.Fatalf("first resumed frame %v", rest[0])
	}
}

func TestSlowConsumerIsClosedAndResumes(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, SendQueueBytes: 64 << 10, WriteTimeout: 30 * time.Second})
	gw := s.gws[0]
	const game = "slow"
	slow := dialRaw(t, gw.url)
	_ = slow.conn.(*net.TCPConn).SetReadBuffer(256 << 10) // ≥ loopback MSS: smaller stalls TCP itself
	slow.send(`{"type":"join","game":"` + game + `"}`)
	fast := dial(t, gw.url)
	fast.send(`{"type":"join","game":"` + game + `"}`)
	fast.expect("joined")
	sender := dial(t, gw.url)
	sender.send(`{"type":"join","game":"` + game + `"}`)
	sender.expect("joined")
	pad := strings.Repeat("x", 16<<10)
	const n = 600
	// The sender paces itself on its own echoes; the fast client gets
	// every message while the slow one reads nothing.
	seen := 0
	for k := 0; k < n; k++ {
		sender.send(fmt.Sprintf(`{"type":"blob","k":%d,"pad":%q}`, k, pad))
		for {
			if m := sender.next(30 * time.Second); m["type"] == "blob" {
				break
			}
		}
		for seen <= k {
			if m := fast.next(30 * time.Second); m["type"] == "blob" {
				seen++
			}
		}
	}
	if v := promtest.ToFloat64(gw.metrics.Closes.WithLabelValues("slow_consumer")); v != 1 {
		t.Fatalf("slow_consumer closes = %v, want 1", v)
	}
	// Now the slow client reads what was written before the close, then 1013.
	var last uint64
	var code ws.StatusCode
	for {
		p, c, err := slow.read()
		if err != nil {
			if err != errClosed {
				t.Logf("slow client read: %v (last %d)", err, last)
			}
			code = c
			break
		}
		if m := decode(t, p); id(m) > 0 {
			if last != 0 && id(m) != last+1 {
				t.Fatalf("slow client gap: %d after %d", id(m), last)
			}
			last = id(m)
		}
	}
	if code != wire.CloseTryLater {
		t.Fatalf("slow client closed with %d, want %d", code, wire.CloseTryLater)
	}
	// Resuming with since gets everything it missed.
	again := dial(t, gw.url)
	again.send(joinMsg(game, "", last))
	head := uint64(again.expect("joined")["head"].(float64))
	collect(t, again, last+1, head)
}

func TestDrainClosesWith1001AndClientsResumeElsewhere(t *testing.T) {
	s := newSystem(t, 2, Config{AllowAnonymous: true})
	c := dial(t, s.gws[0].url)
	c.send(`{"type":"join","game":"drain"}`)
	c.expect("joined")
	c.send(`{"type":"x"}`)
	var last uint64
	for last == 0 {
		if m := c.next(10 * time.Second); m["type"] == "x" {
			last = id(m)
		}
	}
	s.gws[0].stop(t)
	if code := c.closed(10 * time.Second); code != wire.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	// The drained gateway's leave presence is in the log; resume elsewhere.
	c2 := dial(t, s.gws[1].url)
	c2.send(joinMsg("drain", "", last))
	head := uint64(c2.expect("joined")["head"].(float64))
	got := collect(t, c2, last+1, head)
	for _, m := range got {
		if m["type"] != "presence" {
			t.Fatalf("unexpected %v after drain", m)
		}
	}
	checkNoGatewayGoroutinesOf(t, s.gws[0])
}

// checkNoGatewayGoroutinesOf checks a stopped gateway holds no connections.
func checkNoGatewayGoroutinesOf(t *testing.T, tg *testGateway) {
	t.Helper()
	tg.g.mu.Lock()
	defer tg.g.mu.Unlock()
	if len(tg.g.conns) != 0 || len(tg.g.hubs) != 0 {
		t.Fatalf("stopped gateway still has %d connections and %d games", len(tg.g.conns), len(tg.g.hubs))
	}
}

func TestClassicRoomsClient(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true})
	c := dial(t, s.gws[0].url)
	c.send(`{"type":"join","room":"lobby"}`)
	cid := c.expect("joined")["client_id"]
	if evs := presenceEvents(t, c.expect("presence"), "join"); len(evs) != 1 || evs[0]["client"] != cid {
		t.Fatalf("presence %v", evs)
	}
	c.send(`{"type":"chat","text":"hi"}`)
	m := c.expect("chat")
	if m["text"] != "hi" || m["client_id"] != cid || id(m) != 2 || m["ts"] == nil {
		t.Fatalf("echo %v", m)
	}
}
