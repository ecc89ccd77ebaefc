package gateway

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// Several keys verify at once, chosen by the token's kid: a studio rolls
// its key without dropping players. A kid names exactly one key.
func TestTokenKeysChosenByKid(t *testing.T) {
	next := []byte("next-secret-0123456789abcdef-0123456789")
	s := newSystem(t, 1, Config{Tokens: token.Config{Keys: []token.Key{{ID: "2027-01", Secret: next}}}})
	const game = "rolled"
	claims := token.Claims{Game: game, Role: token.RolePlayer, Exp: time.Now().Add(time.Hour).Unix()}
	sign := func(secret []byte, kid string) string {
		sg, err := token.NewHMACSigner(secret, kid)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := sg.Mint(claims)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for name, tc := range map[string]struct {
		tok  string
		code string // "" : joins
	}{
		"old key, no kid":          {sign(testSecret, ""), ""},
		"new key by its kid":       {sign(next, "2027-01"), ""},
		"new key without its kid":  {sign(next, ""), wire.CodeBadToken},
		"old key under the new id": {sign(testSecret, "2027-01"), wire.CodeBadToken},
		"unknown kid":              {sign(next, "2099-01"), wire.CodeBadToken},
	} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, s.gws[0].url)
			c.send(joinMsg(game, tc.tok, 0))
			if tc.code == "" {
				c.expect("joined")
			} else {
				c.expect("error", tc.code)
			}
		})
	}
}

// A joined connection is closed when its token expires (error
// token_expired, close 1008), unless it sent a fresh token before; a
// refresh must keep the game, role and user.
func TestTokenExpiryAndRefresh(t *testing.T) {
	s := newSystem(t, 1, Config{PingInterval: 800 * time.Millisecond}) // keepalive ticks every 100ms
	const game = "timed"
	short := func(role, sub string) string {
		return mintClaims(t, testSecret, token.Claims{Game: game, Role: role, Sub: sub, Exp: time.Now().Add(2 * time.Second).Unix()})
	}
	fresh := func(g, role, sub string) string {
		return mintClaims(t, testSecret, token.Claims{Game: g, Role: role, Sub: sub, Exp: time.Now().Add(time.Hour).Unix()})
	}
	kept := dial(t, s.gws[0].url)
	kept.send(joinMsg(game, short(token.RolePlayer, "ana"), 0))
	kept.expect("joined")
	lapsed := dial(t, s.gws[0].url)
	lapsed.send(joinMsg(game, short(token.RolePlayer, "bo"), 0))
	lapsed.expect("joined")

	for name, tc := range map[string]string{
		"another game": fresh("other", token.RolePlayer, "ana"),
		"another role": fresh(game, token.RoleSpectator, "ana"),
		"another user": fresh(game, token.RolePlayer, "eve"),
		"forged":       mintClaims(t, []byte("forged-secret-0123456789abcdef-0123456789"), token.Claims{Game: game, Role: token.RolePlayer, Sub: "ana", Exp: time.Now().Add(time.Hour).Unix()}),
	} {
		kept.send(`{"type":"refresh","token":"` + tc + `"}`)
		if e := nextNotPresence(kept); e["type"] != "error" || e["code"] != wire.CodeBadToken {
			t.Fatalf("refresh with %s: %v, want bad_token", name, e)
		}
	}
	kept.send(`{"type":"refresh","token":"` + fresh(game, token.RolePlayer, "ana") + `"}`)
	if r := nextNotPresence(kept); r["type"] != "refreshed" || r["exp"] == nil {
		t.Fatalf("refresh: %v, want refreshed", r)
	}
	// The other connection's token runs out.
	for {
		m := lapsed.next(10 * time.Second)
		if m["type"] == "error" {
			if m["code"] != wire.CodeTokenExpired {
				t.Fatalf("got %v, want token_expired", m)
			}
			break
		}
	}
	if code := lapsed.closed(10 * time.Second); code != wire.ClosePolicy {
		t.Fatalf("expired connection closed with %d, want 1008", code)
	}
	// The refreshed one outlived it and still plays.
	kept.send(`{"type":"move"}`)
	for m := nextNotPresence(kept); m["type"] != "move"; m = nextNotPresence(kept) {
		if m["type"] == "error" {
			t.Fatalf("after the refresh: %v", m)
		}
	}
}

// Anonymous play never opens a game created with tokens; AnonymousPrefix
// confines it further.
func TestAnonymousStaysOutOfCreatedGames(t *testing.T) {
	s := newSystem(t, 0, Config{})
	games, err := sequencer.OpenGames(context.Background(), embednats.Connect(t, s.natsURL), s.seqCfg)
	if err != nil {
		t.Fatal(err)
	}
	gw := s.addGateway(Config{AllowAnonymous: true, AllowCreate: true, Registry: games}, nil)
	host := dial(t, gw.url)
	host.send(`{"type":"create"}`)
	game := host.expect("created")["game"].(string)
	host.expect("joined")
	anon := dial(t, gw.url)
	anon.send(`{"type":"join","game":"` + game + `"}`)
	anon.expect("error", wire.CodeAuthRequired)
	// A game created through the backend API is recorded the same way.
	if err := games.MarkCreated(context.Background(), "studio-made"); err != nil {
		t.Fatal(err)
	}
	anon.send(`{"type":"join","game":"studio-made"}`)
	anon.expect("error", wire.CodeAuthRequired)
	anon.send(`{"type":"join","game":"open-lobby"}`)
	anon.expect("joined")

	prefixed := s.addGateway(Config{AllowAnonymous: true, AnonymousPrefix: "lobby-", Registry: games}, nil)
	c := dial(t, prefixed.url)
	c.send(`{"type":"join","game":"open-lobby"}`)
	c.expect("error", wire.CodeAuthRequired)
	c.send(`{"type":"join","game":"lobby-1"}`)
	c.expect("joined")
}

// Connections are capped per gateway and per client address; a refusal is
// a 503 before the upgrade, counted.
func TestConnectionCaps(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, MaxConnsPerAddr: 2})
	var open []*client
	for i := 0; i < 2; i++ {
		open = append(open, dial(t, s.gws[0].url))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, _, err := ws.Dial(ctx, s.gws[0].url)
	var se ws.StatusError
	if !asStatus(err, &se) || int(se) != http.StatusServiceUnavailable {
		t.Fatalf("third connection from one address: %v, want 503", err)
	}
	if got := testutilValue(s.gws[0].metrics.Refused.WithLabelValues("conns_per_addr")); got != 1 {
		t.Fatalf("refusals counted %v, want 1", got)
	}
	// A connection that ends frees its place.
	_ = open[0].conn.Close()
	testutil.WaitFor(t, 10*time.Second, "a place freed", func() bool {
		c, _, _, err := ws.Dial(ctx, s.gws[0].url)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
}

func asStatus(err error, se *ws.StatusError) bool {
	if e, ok := err.(ws.StatusError); ok {
		*se = e
		return true
	}
	return false
}

// X-Forwarded-For names the client only when a trusted proxy sent it.
func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for name, tc := range map[string]struct {
		peer string
		xff  []string
		want string
	}{
		"no proxy":                 {"203.0.113.7:5000", nil, "203.0.113.7"},
		"untrusted peer forges":    {"203.0.113.7:5000", []string{"198.51.100.1"}, "203.0.113.7"},
		"trusted proxy":            {"10.1.2.3:80", []string{"198.51.100.1"}, "198.51.100.1"},
		"client forges the left":   {"10.1.2.3:80", []string{"1.1.1.1, 198.51.100.1"}, "198.51.100.1"},
		"proxies in a chain":       {"10.1.2.3:80", []string{"198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		"several header lines":     {"10.1.2.3:80", []string{"1.1.1.1", "198.51.100.1"}, "198.51.100.1"},
		"garbage counts the proxy": {"10.1.2.3:80", []string{"not-an-ip"}, "10.1.2.3"},
		"only proxies":             {"10.1.2.3:80", []string{"10.0.0.9"}, "10.1.2.3"},
		"ipv6":                     {"[fd00::1]:80", []string{"2001:db8::5"}, "2001:db8::5"},
	} {
		t.Run(name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.peer, Header: http.Header{}}
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientAddr(r, trusted); got != tc.want {
				t.Fatalf("clientAddr = %s, want %s", got, tc.want)
			}
		})
	}
	if got := clientAddr(&http.Request{RemoteAddr: "10.1.2.3:80", Header: http.Header{"X-Forwarded-For": {"198.51.100.1"}}}, nil); !strings.HasPrefix(got, "10.1.2.3") {
		t.Fatalf("without trusted proxies the header counted: %s", got)
	}
}
