//go:build linux

package gateway

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// serverConn returns the gateway's side of the client with this client_id.
func serverConn(t *testing.T, g *Gateway, id string) *conn {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		if c.id == id {
			return c
		}
	}
	t.Fatalf("no connection %s", id)
	return nil
}

func isParked(g *Gateway, c *conn) bool {
	g.poll.mu.Lock()
	defer g.poll.mu.Unlock()
	return c.parked
}

// joinParked joins game and waits until the server parked the connection.
func joinParked(t *testing.T, tg *testGateway, c *client, game string) *conn {
	t.Helper()
	c.send(`{"type":"join","game":"` + game + `"}`)
	sc := serverConn(t, tg.g, c.expect("joined")["client_id"].(string))
	testutil.WaitFor(t, 5*time.Second, "the connection to park", func() bool { return isParked(tg.g, sc) })
	return sc
}

// nextOfType skips frames (presence, other games' traffic) up to one of typ.
func nextOfType(t *testing.T, c *client, typ string) map[string]any {
	t.Helper()
	for {
		if m := c.next(10 * time.Second); m["type"] == typ {
			return m
		}
	}
}

func TestParkedConnectionReceivesAndWakes(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, parkAfter: 50 * time.Millisecond})
	tg := s.gws[0]
	a, b := dial(t, tg.url), dial(t, tg.url)
	sa := joinParked(t, tg, a, "park")
	sb := joinParked(t, tg, b, "park")

	// Live delivery to a parked connection needs no reader: a stays parked.
	b.send(`{"type":"move","k":1}`)
	if m := nextOfType(t, a, "move"); m["k"] != float64(1) {
		t.Fatalf("got %v", m)
	}
	if !isParked(tg.g, sa) {
		t.Fatal("receiving woke the connection")
	}
	nextOfType(t, b, "move") // b's own echo
	// Input wakes a parked connection: the message is appended and echoed.
	testutil.WaitFor(t, 5*time.Second, "the sender to park again", func() bool { return isParked(tg.g, sb) })
	a.send(`{"type":"move","k":2}`)
	for _, c := range []*client{a, b} {
		if m := nextOfType(t, c, "move"); m["k"] != float64(2) || m["client_id"] != sa.id {
			t.Fatalf("got %v", m)
		}
	}
	// Idle again: parked again, and everything still works.
	testutil.WaitFor(t, 5*time.Second, "the connection to park again", func() bool { return isParked(tg.g, sa) })
	a.send(`{"type":"move","k":3}`)
	if m := nextOfType(t, b, "move"); m["k"] != float64(3) {
		t.Fatalf("got %v", m)
	}
	if n := tg.g.poll.parkedCount(); n > 2 {
		t.Fatalf("%d connections parked, want at most 2", n)
	}
}

// readRaw reads server frames until one with op, and returns its payload.
func readRaw(t *testing.T, c *client, op ws.OpCode) []byte {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	for {
		h, err := ws.ReadHeader(c.conn)
		if err != nil || h.Length > 1<<20 {
			t.Fatalf("read: %v (length %d)", err, h.Length)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.conn, p); err != nil {
			t.Fatalf("read: %v", err)
		}
		if h.OpCode == op {
			return p
		}
	}
}

func TestParkedConnectionAnswersPings(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, parkAfter: 50 * time.Millisecond})
	tg := s.gws[0]
	c := dialRaw(t, tg.url)
	c.send(`{"type":"join","game":"pings"}`)
	readRaw(t, c, ws.OpText) // joined
	testutil.WaitFor(t, 5*time.Second, "the connection to park", func() bool { return tg.g.poll.parkedCount() == 1 })
	if err := ws.WriteFrame(lockedRW{c}, ws.MaskFrame(ws.NewPingFrame([]byte("hi")))); err != nil {
		t.Fatal(err)
	}
	if p := readRaw(t, c, ws.OpPong); string(p) != "hi" {
		t.Fatalf("pong %q", p)
	}
	testutil.WaitFor(t, 5*time.Second, "the connection to park again", func() bool { return tg.g.poll.parkedCount() == 1 })
}

func TestParkedClientAnsweringPingsStays(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, PingInterval: 150 * time.Millisecond, parkAfter: 20 * time.Millisecond})
	tg := s.gws[0]
	c := dial(t, tg.url) // answers the server's pings
	sc := joinParked(t, tg, c, "alive")
	// Six pings answered: each wakes the parked connection, which parks
	// again; a client silent for two intervals would have been closed.
	pinged := c.pings.Load()
	testutil.WaitFor(t, 10*time.Second, "six more pings answered", func() bool { return c.pings.Load() >= pinged+6 })
	testutil.WaitFor(t, 5*time.Second, "the connection to park again", func() bool { return isParked(tg.g, sc) })
	c.send(`{"type":"still-here"}`)
	nextOfType(t, c, "still-here")
	if v := testCloses(s, "ping_timeout"); v != 0 {
		t.Fatalf("%v ping timeouts", v)
	}
}

func TestParkedSilentClientIsClosed(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, PingInterval: 200 * time.Millisecond, parkAfter: 20 * time.Millisecond})
	tg := s.gws[0]
	c := dialRaw(t, tg.url) // never answers pings
	c.send(`{"type":"join","game":"silent"}`)
	testutil.WaitFor(t, 5*time.Second, "the connection to park", func() bool { return tg.g.poll.parkedCount() == 1 })
	testutil.WaitFor(t, 10*time.Second, "ping_timeout", func() bool { return testCloses(s, "ping_timeout") == 1 })
	if code := readCloseCode(t, c); code != wire.ClosePolicy {
		t.Fatalf("closed with %d, want %d", code, wire.ClosePolicy)
	}
	testutil.WaitFor(t, 10*time.Second, "the connection to end", func() bool {
		tg.g.mu.Lock()
		defer tg.g.mu.Unlock()
		return len(tg.g.conns) == 0
	})
	if n := tg.g.poll.parkedCount(); n != 0 {
		t.Fatalf("%d parked after close", n)
	}
}

// readCloseCode reads up to the server's close frame and returns its code.
func readCloseCode(t *testing.T, c *client) ws.StatusCode {
	t.Helper()
	p := readRaw(t, c, ws.OpClose)
	code, _ := ws.ParseCloseFrameData(p)
	return code
}

func TestShutdownClosesParkedConnections(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, parkAfter: 20 * time.Millisecond})
	tg := s.gws[0]
	var cs []*client
	for i := 0; i < 5; i++ {
		c := dial(t, tg.url)
		joinParked(t, tg, c, "bye")
		cs = append(cs, c)
	}
	testutil.WaitFor(t, 5*time.Second, "every connection to park", func() bool { return tg.g.poll.parkedCount() == 5 })
	tg.stop(t)
	for _, c := range cs {
		if code := c.closed(10 * time.Second); code != wire.CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
	}
	checkNoGatewayGoroutines(t)
}

// A message in progress (a fragment, or half a frame) is never parked, and
// a client pausing in the middle of a frame for longer than parkAfter loses
// nothing.
func TestNoParkingMidMessage(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, parkAfter: 20 * time.Millisecond})
	tg := s.gws[0]
	c := dial(t, tg.url)
	sc := joinParked(t, tg, c, "frag")

	var first, ping, rest bytes.Buffer
	_ = ws.WriteFrame(&first, ws.MaskFrame(ws.NewFrame(ws.OpText, false, []byte(`{"type":"fr`))))
	_ = ws.WriteFrame(&ping, ws.MaskFrame(ws.NewPingFrame([]byte("mid"))))
	_ = ws.WriteFrame(&rest, ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, []byte(`ag","k":1}`))))
	write := func(p []byte) {
		t.Helper()
		if _, err := (lockedRW{c}).Write(p); err != nil {
			t.Fatal(err)
		}
	}
	write(first.Bytes())
	// A ping between the fragments (RFC 6455 allows control frames
	// there): its pong shows the reader holds the first fragment.
	pongs := c.pongs.Load()
	write(ping.Bytes())
	testutil.WaitFor(t, 5*time.Second, "the pong to the ping between the fragments", func() bool { return c.pongs.Load() > pongs })
	// The subject: the client pauses mid-message for ten times parkAfter.
	time.Sleep(200 * time.Millisecond)
	if isParked(tg.g, sc) {
		t.Fatal("parked in the middle of a fragmented message")
	}
	write(rest.Bytes())
	if m := nextOfType(t, c, "frag"); m["k"] != float64(1) {
		t.Fatalf("got %v", m)
	}

	// One frame in two writes, the pause after the first header byte and
	// then within the payload.
	testutil.WaitFor(t, 5*time.Second, "the connection to park again", func() bool { return isParked(tg.g, sc) })
	var one bytes.Buffer
	_ = ws.WriteFrame(&one, ws.MaskFrame(ws.NewTextFrame([]byte(`{"type":"split","k":2}`))))
	b := one.Bytes()
	write(b[:1])
	// The byte woke the parked connection: its reader is back.
	testutil.WaitFor(t, 5*time.Second, "the first byte to wake the connection", func() bool { return !isParked(tg.g, sc) })
	// The subject: the client pauses, after the first header byte and then
	// within the payload, for over seven times parkAfter each.
	time.Sleep(150 * time.Millisecond)
	write(b[1:9])
	time.Sleep(150 * time.Millisecond)
	if isParked(tg.g, sc) {
		t.Fatal("parked in the middle of a frame")
	}
	write(b[9:])
	if m := nextOfType(t, c, "split"); m["k"] != float64(2) {
		t.Fatalf("got %v", m)
	}
}
