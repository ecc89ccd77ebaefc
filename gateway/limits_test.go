package gateway

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
)

func TestOriginAllowList(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, Origins: []string{"https://play.example"}})
	dialOrigin := func(origin string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {origin}})}
		conn, _, _, err := d.Dial(ctx, s.gws[0].url)
		if conn != nil {
			conn.Close()
		}
		return err
	}
	if err := dialOrigin("https://play.example"); err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	if err := dialOrigin("https://evil.example"); err == nil {
		t.Fatal("foreign origin accepted")
	}
}

func TestMaxClientsPerGame(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, MaxClientsPerGame: 2})
	for i := 0; i < 2; i++ {
		c := dial(t, s.gws[0].url)
		c.send(`{"type":"join","game":"full"}`)
		c.expect("joined")
	}
	c := dial(t, s.gws[0].url)
	c.send(`{"type":"join","game":"full"}`)
	c.expect("error", wire.CodeGameFull)
}

func TestSilentClientIsClosedAfterTwoPings(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, PingInterval: 200 * time.Millisecond})
	c := dialRaw(t, s.gws[0].url) // reads nothing, so never answers a ping
	c.send(`{"type":"join","game":"quiet"}`)
	testutil.WaitFor(t, 10*time.Second, "the silent client to be closed (ping_timeout)", func() bool {
		return testCloses(s, "ping_timeout") == 1
	})
	// A client that answers pings stays: five pings answered span four
	// intervals, twice the two a silent client gets.
	live := dial(t, s.gws[0].url)
	live.send(`{"type":"join","game":"quiet"}`)
	live.expect("joined")
	testutil.WaitFor(t, 10*time.Second, "five pings answered", func() bool { return live.pings.Load() >= 5 })
	live.send(`{"type":"still-here"}`)
	for {
		if m := live.next(5 * time.Second); m["type"] == "still-here" {
			break
		}
	}
	if v := testCloses(s, "ping_timeout"); v != 1 {
		t.Fatalf("%v ping timeouts, want 1 (the silent client)", v)
	}
}

func testCloses(s *system, reason string) float64 {
	return testutilValue(s.gws[0].metrics.Closes.WithLabelValues(reason))
}
