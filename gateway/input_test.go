package gateway

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// TestBadInput sends each kind of bad input once and checks the documented
// answer: an error frame with a stable code, and the connection stays usable
// unless the table in docs/protocol.md says the error is fatal.
func TestBadInput(t *testing.T) {
	s := newSystem(t, 1, Config{Rate: 5, Burst: 5, MaxMessageBytes: 1024})
	url := s.gws[0].url
	const game = "bad"
	player := mint(t, testSecret, game, token.RolePlayer, time.Hour)
	// Make the game exist.
	owner := dial(t, url)
	owner.send(joinMsg(game, player, 0))
	owner.expect("joined")
	// The game exists for spectators once its first message (the owner's
	// presence, appended in the background) reached the gateway.
	owner.expect("presence")

	joined := func(t *testing.T, role string) *client {
		c := dial(t, url)
		c.send(joinMsg(game, mint(t, testSecret, game, role, time.Hour), 0))
		c.expect("joined")
		return c
	}
	fresh := func(t *testing.T) *client { return dial(t, url) }

	for name, tc := range map[string]struct {
		conn  func(*testing.T) *client
		send  string
		code  string
		close ws.StatusCode // 0: the connection must stay open
	}{
		"invalid json":      {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"move",`, wire.CodeInvalidJSON, 0},
		"invalid utf-8":     {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, "{\"type\":\"move\",\"x\":\"\xff\"}", wire.CodeInvalidJSON, 0},
		"not an object":     {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `["move"]`, wire.CodeNotObject, 0},
		"missing type":      {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"col":3}`, wire.CodeMissingType, 0},
		"type not a string": {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":3}`, wire.CodeMissingType, 0},
		"reserved type":     {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"joined"}`, wire.CodeReservedType, 0},
		"forged msg_id":     {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"move","msg_id":99}`, wire.CodeReservedField, 0},
		"forged client_id":  {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"move","client_id":"x"}`, wire.CodeReservedField, 0},
		"escaped forgery":   {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"move","\u0075ser":"admin"}`, wire.CodeReservedField, 0},
		// Case-insensitive decoders (Go's encoding/json, .NET) read these
		// as the reserved fields.
		"forged User":        {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"chat","User":"admin"}`, wire.CodeReservedField, 0},
		"forged Source":      {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"chat","Source":"studio"}`, wire.CodeReservedField, 0},
		"forged MSG_ID":      {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"chat","MSG_ID":1}`, wire.CodeReservedField, 0},
		"escaped Client_Id":  {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"chat","\u0043lient_Id":"x"}`, wire.CodeReservedField, 0},
		"long s user":        {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"chat","uſer":"admin"}`, wire.CodeReservedField, 0},
		"duplicate type":     {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"joined","type":"chat"}`, wire.CodeInvalidMessage, 0},
		"escaped duplicate":  {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"chat","x":1,"\u0078":2}`, wire.CodeInvalidMessage, 0},
		"oversized":          {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, `{"type":"move","x":"` + strings.Repeat("x", 2048) + `"}`, wire.CodeTooLarge, wire.CloseTooBig},
		"not joined":         {fresh, `{"type":"move"}`, wire.CodeNotJoined, 0},
		"unknown game":       {fresh, joinMsg("nosuchgame", mint(t, testSecret, "nosuchgame", token.RoleSpectator, time.Hour), 0), wire.CodeUnknownGame, 0},
		"invalid game id":    {fresh, `{"type":"join","game":"a.b"}`, wire.CodeInvalidGame, 0},
		"no token":           {fresh, `{"type":"join","game":"bad"}`, wire.CodeAuthRequired, 0},
		"garbage token":      {fresh, joinMsg(game, "not.a.jwt", 0), wire.CodeBadToken, 0},
		"forged token":       {fresh, joinMsg(game, mint(t, []byte("another-secret-0123456789abcdef-0123456789"), game, token.RolePlayer, time.Hour), 0), wire.CodeBadToken, 0},
		"expired token":      {fresh, joinMsg(game, mint(t, testSecret, game, token.RolePlayer, -time.Minute), 0), wire.CodeTokenExpired, 0},
		"other game's token": {fresh, joinMsg(game, mint(t, testSecret, "other", token.RolePlayer, time.Hour), 0), wire.CodeBadToken, 0},
		"alg none":           {fresh, joinMsg(game, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJnYW1lIjoiYmFkIiwicm9sZSI6InBsYXllciIsImV4cCI6OTk5OTk5OTk5OX0.", 0), wire.CodeBadToken, 0},
		"spectator sends":    {func(t *testing.T) *client { return joined(t, token.RoleSpectator) }, `{"type":"move"}`, wire.CodeForbidden, 0},
		"already joined":     {func(t *testing.T) *client { return joined(t, token.RolePlayer) }, joinMsg(game, player, 0), wire.CodeAlreadyJoined, 0},
		"create disabled":    {fresh, `{"type":"create"}`, wire.CodeCreateDisabled, 0},
		"negative since":     {fresh, `{"type":"join","game":"bad","since":-1}`, wire.CodeInvalidMessage, 0},
	} {
		t.Run(name, func(t *testing.T) {
			c := tc.conn(t)
			c.send(tc.send)
			// Presence messages of this game (the joined replay, this
			// client's join, earlier subtests' leaves) may arrive at any
			// time: skip them.
			if m := nextNotPresence(c); m["type"] != "error" || m["code"] != tc.code {
				t.Fatalf("got %v, want error %s", m, tc.code)
			}
			if tc.close != 0 {
				if code := c.closed(5 * time.Second); code != tc.close {
					t.Fatalf("closed with %d, want %d", code, tc.close)
				}
				return
			}
			// Still open and working: a ping is answered.
			if err := wsutil.WriteClientMessage(lockedRW{c}, ws.OpPing, []byte("alive")); err != nil {
				t.Fatal(err)
			}
			c.send(`{"type":"create"}`) // cheap request with a known answer
			if m := nextNotPresence(c); m["type"] != "error" {
				t.Fatalf("connection not usable after the error: %v", m)
			}
		})
	}

	t.Run("rate limited", func(t *testing.T) {
		c := joined(t, token.RolePlayer)
		for i := 0; i < 20; i++ {
			c.send(`{"type":"spam"}`)
		}
		for {
			m := c.next(5 * time.Second)
			if m["type"] == "error" {
				if m["code"] != wire.CodeRateLimited {
					t.Fatalf("got %v", m)
				}
				break
			}
		}
	})
	t.Run("binary frame", func(t *testing.T) {
		c := joined(t, token.RolePlayer)
		if err := wsutil.WriteClientBinary(lockedRW{c}, []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		for {
			m := c.next(5 * time.Second)
			if m["type"] == "error" {
				if m["code"] != wire.CodeUnsupported {
					t.Fatalf("got %v", m)
				}
				break
			}
		}
		if code := c.closed(5 * time.Second); code != wire.CloseUnsupported {
			t.Fatalf("closed with %d", code)
		}
	})

	// Nothing bad reached the game: the owner saw only presence messages.
	owner.send(`{"type":"marker"}`)
	for {
		m := owner.next(10 * time.Second)
		if m["type"] == "marker" {
			break
		}
		if m["type"] != "presence" && m["type"] != "spam" {
			t.Fatalf("bad input reached the game: %v", m)
		}
	}
	// Tokens never appear in logs.
	logs := s.logs.String()
	if strings.Contains(logs, player) || strings.Contains(logs, "eyJ") {
		t.Fatal("a token appears in the logs")
	}
}

// nextNotPresence returns c's next frame that is not a presence message.
func nextNotPresence(c *client) map[string]any {
	c.t.Helper()
	for {
		if m := c.next(10 * time.Second); m["type"] != "presence" {
			return m
		}
	}
}

func TestCreateAndSpectate(t *testing.T) {
	s := newSystem(t, 2, Config{AllowCreate: true})
	host := dial(t, s.gws[0].url)
	host.send(`{"type":"create"}`)
	cr := host.expect("created")
	game, join, watch := cr["game"].(string), cr["join"].(string), cr["watch"].(string)
	if j := host.expect("joined"); j["game"] != game || j["role"] != token.RolePlayer {
		t.Fatalf("joined %v", j)
	}
	host.send(`{"type":"move","col":3}`)

	friend := dial(t, s.gws[1].url)
	friend.send(joinMsg(game, join, 0))
	if j := friend.expect("joined"); j["role"] != token.RolePlayer {
		t.Fatalf("friend %v", j)
	}
	watcher := dial(t, s.gws[1].url)
	watcher.send(joinMsg(game, watch, 0))
	if j := watcher.expect("joined"); j["role"] != token.RoleSpectator {
		t.Fatalf("watcher %v", j)
	}
	watcher.send(`{"type":"move","col":1}`)
	for {
		m := watcher.next(5 * time.Second)
		if m["type"] == "error" {
			if m["code"] != wire.CodeForbidden {
				t.Fatalf("got %v", m)
			}
			break
		}
		if m["type"] == "move" && m["col"] != float64(3) {
			t.Fatalf("spectator's move was appended: %v", m)
		}
	}
}

// With no sequencer at all, a message's outcome is unknown: the client is
// told so, not told to send it again.
func TestNoSequencerOutcomeUnknown(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, AppendTimeout: 500 * time.Millisecond})
	c := dial(t, s.gws[0].url)
	c.send(`{"type":"join","game":"down"}`)
	c.expect("joined")
	s.stopSeq()
	s.stopSeq = func() {}
	// No sequencer answers: whether the message was stored cannot be
	// known, and the client must not be told to send it again as if it
	// had not been. The error names the message by its idem.
	c.send(`{"type":"move","idem":"m-1"}`)
	for {
		m := c.next(10 * time.Second)
		if m["type"] == "error" {
			if m["code"] != wire.CodeOutcomeUnknown || m["idem"] != "m-1" {
				t.Fatalf("got %v, want outcome_unknown for m-1", m)
			}
			return
		}
	}
}

// A refused oversized message: the gateway answers before reading the
// payload, and must neither reset the connection under the client still
// sending it (its write would fail) nor lose the error and close frames.
func TestOversizedMessageClosesWithoutReset(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true, MaxMessageBytes: 1024})
	c := dial(t, s.gws[0].url)
	c.send(`{"type":"join","game":"big"}`)
	c.expect("joined")
	payload := []byte(`{"type":"move","x":"` + strings.Repeat("x", 64<<10) + `"}`)
	var frame bytes.Buffer
	if err := ws.WriteFrame(&frame, ws.MaskFrame(ws.NewTextFrame(payload))); err != nil {
		t.Fatal(err)
	}
	b := frame.Bytes()
	hdr := 14 // 2 + 8 (64-bit length) + 4 (mask)
	if _, err := (lockedRW{c}).Write(b[:hdr]); err != nil {
		t.Fatal(err)
	}
	if m := nextNotPresence(c); m["type"] != "error" || m["code"] != wire.CodeTooLarge {
		t.Fatalf("got %v, want error %s", m, wire.CodeTooLarge)
	}
	// The gateway has answered and is ending the connection; the client
	// still sends the payload it had started, in pieces.
	for rest := b[hdr:]; len(rest) > 0; {
		n := min(len(rest), 8<<10)
		if _, err := (lockedRW{c}).Write(rest[:n]); err != nil {
			t.Fatalf("client write after the refusal: %v", err)
		}
		rest = rest[n:]
		// The subject: a client still sending, slowly, while the gateway
		// ends the connection.
		time.Sleep(5 * time.Millisecond)
	}
	if code := c.closed(5 * time.Second); code != wire.CloseTooBig {
		t.Fatalf("closed with %d, want %d", code, wire.CloseTooBig)
	}
}
