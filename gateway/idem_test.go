package gateway

import (
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// A message resent with its idem — on another connection, through
// another gateway — is stored once: resending after any close is
// harmless.
func TestResendWithIdemStoresOnce(t *testing.T) {
	s := newSystem(t, 2, Config{})
	const game = "resend"
	tok := mint(t, testSecret, game, token.RolePlayer, time.Hour)
	a := dial(t, s.gws[0].url)
	a.send(joinMsg(game, tok, 0))
	a.expect("joined")
	a.send(`{"type":"move","idem":"ana-1","x":1}`)
	var first map[string]any
	for first == nil {
		if m := a.next(10 * time.Second); m["type"] == "move" {
			first = m
		}
	}
	if first["idem"] != "ana-1" {
		t.Fatalf("stored message %v lacks its idem", first)
	}
	// The same player resends from another gateway, then sends on.
	b := dial(t, s.gws[1].url)
	b.send(joinMsg(game, tok, id(first)))
	b.expect("joined")
	b.send(`{"type":"move","idem":"ana-1","x":1}`)
	b.send(`{"type":"move","idem":"ana-2","x":2}`)
	for {
		m := b.next(10 * time.Second)
		if m["type"] != "move" {
			continue
		}
		if m["idem"] != "ana-2" || id(m) <= id(first) {
			t.Fatalf("after a resend of ana-1 the next move is %v, want ana-2", m)
		}
		break
	}
	// Another user's identical idem is another message: keys are scoped
	// by the token's user.
	bo := mintClaims(t, testSecret, token.Claims{Game: game, Role: token.RolePlayer, Sub: "bo", Exp: time.Now().Add(time.Hour).Unix()})
	c := dial(t, s.gws[1].url)
	c.send(joinMsg(game, bo, id(first)))
	c.expect("joined")
	c.send(`{"type":"move","idem":"ana-1","x":3}`)
	for {
		m := nextNotPresence(c)
		if m["type"] == "move" && m["idem"] == "ana-1" && m["user"] == "bo" {
			break
		}
		if m["type"] == "error" {
			t.Fatalf("unexpected %v", m)
		}
	}
}

// idem is validated, and errors about a game message name it.
func TestIdemValidatedAndEchoed(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true})
	c := dial(t, s.gws[0].url)
	c.send(`{"type":"join","game":"echo"}`)
	c.expect("joined")
	for _, bad := range []string{`""`, `7`, `"has space"`, `"é"`, `"` + longIdem() + `"`} {
		c.send(`{"type":"move","idem":` + bad + `}`)
		if e := nextNotPresence(c); e["type"] != "error" || e["code"] != wire.CodeInvalidMessage {
			t.Fatalf("idem %s: %v, want invalid_message", bad, e)
		}
	}
	c.send(`{"type":"move","idem":"k-1","msg_id":3}`)
	if e := nextNotPresence(c); e["code"] != wire.CodeReservedField || e["idem"] != "k-1" {
		t.Fatalf("reserved field: %v, want reserved_field naming k-1", e)
	}
	c.send(`{"type":"presence","idem":"k-2"}`)
	if e := nextNotPresence(c); e["code"] != wire.CodeReservedType || e["idem"] != "k-2" {
		t.Fatalf("reserved type: %v, want reserved_type naming k-2", e)
	}
}

func longIdem() string {
	b := make([]byte, 65)
	for i := range b {
		b[i] = 'a'
	}
	return string(b)
}
