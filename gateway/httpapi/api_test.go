package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/gateway/httpapi/httpapitest"
	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// TestPublishInterleavedWithPlayers: players on two gateway pods and two
// backend services publish into one game at the same time; every client
// (players and a spectator, on either pod) receives one dense order that
// holds all of them, the same bytes the log stores, and backend messages
// carry client_id "" and source = the key's owner.
func TestPublishInterleavedWithPlayers(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{Pods: 2})
	a, b := sys.Pods[0], sys.Pods[1]
	g := createGame(t, a.URL, `{"players":[{"sub":"ana"},{"sub":"bo"}]}`)
	game := g.body["game"].(string)
	players := g.body["players"].([]any)
	tok := func(i int) string { return players[i].(map[string]any)["token"].(string) }

	ana := join(t, a.WSURL, game, tok(0))
	bo := join(t, b.WSURL, game, tok(1))
	spec := join(t, b.WSURL, game, g.body["spectator_token"].(string))
	clients := []*wsClient{ana, bo, spec}

	const n = 30
	var wg sync.WaitGroup
	for _, c := range []*wsClient{ana, bo} {
		wg.Go(func() {
			for i := range n {
				c.send(map[string]any{"type": "move", "seq": i})
			}
		})
	}
	for _, pub := range []struct{ base, key string }{{a.URL, studioKey}, {b.URL, httpapitest.Keys["matcher"]}} {
		wg.Go(func() {
			for i := range n {
				r := call(t, "POST", pub.base+"/v1/games/"+game+"/messages", pub.key, fmt.Sprintf(`{"type":"tick","seq":%d}`, i))
				if r.status != http.StatusCreated {
					t.Errorf("publish: %d %s", r.status, r.raw)
				}
			}
		})
	}
	wg.Wait()

	// Every game message is stored once; wait for the players' appends.
	var stored [][]byte
	testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("the players' %d moves stored", 2*n), func() bool {
		stored = sys.Messages(game)
		return countTypes(t, stored)["move"] >= 2*n
	})
	counts := countTypes(t, stored)
	if counts["move"] != 2*n || counts["tick"] != 2*n || counts["game_created"] != 1 {
		t.Fatalf("stored types %v, want %d move, %d tick, 1 game_created", counts, 2*n, 2*n)
	}

	// The log's order keeps each sender's order; backend messages are
	// marked as such.
	last := map[string]float64{}
	for i, raw := range stored {
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		if msgID(m) != uint64(i+1) {
			t.Fatalf("stored message %d has msg_id %v", i+1, m["msg_id"])
		}
		var sender string
		switch m["type"] {
		case "tick":
			if m["client_id"] != "" || (m["source"] != "studio" && m["source"] != "matcher") {
				t.Fatalf("backend message %s: want client_id \"\" and source studio or matcher", raw)
			}
			if _, ok := m["user"]; ok {
				t.Fatalf("backend message %s has a user", raw)
			}
			sender = m["source"].(string)
		case "move":
			if m["client_id"] == "" || m["source"] != nil {
				t.Fatalf("player message %s: want a client_id and no source", raw)
			}
			sender = m["user"].(string)
		default:
			continue
		}
		seq := m["seq"].(float64)
		if prev, ok := last[sender]; ok && seq != prev+1 {
			t.Fatalf("%s's messages out of order: seq %v after %v", sender, seq, prev)
		}
		last[sender] = seq
	}

	// Every client sees exactly the stored sequence (from msg_id 1: it
	// joined with since 0), whatever pod it is on.
	head := uint64(len(stored))
	for ci, c := range clients {
		want := uint64(1)
		for want <= head {
			p, err := c.nextRaw(10 * time.Second)
			if err != nil {
				t.Fatalf("client %d waiting for msg_id %d: %v", ci, want, err)
			}
			var m map[string]any
			_ = json.Unmarshal(p, &m)
			id := msgID(m)
			if id != want {
				t.Fatalf("client %d: got msg_id %d (%s), want %d", ci, id, p, want)
			}
			if !bytes.Equal(p, stored[id-1]) {
				t.Fatalf("client %d: msg_id %d is %s, the log holds %s", ci, id, p, stored[id-1])
			}
			want++
		}
	}
}

func countTypes(t testing.TB, msgs [][]byte) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, raw := range msgs {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("stored %q: %v", raw, err)
		}
		out[m["type"].(string)]++
	}
	return out
}

// TestIdempotentPublish: a retry with the same Idempotency-Key appends
// once and answers the same msg_id; keys are scoped by owner and game.
func TestIdempotentPublish(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{})
	base := sys.URL()
	game := createGame(t, base, `{"id":"idem-a"}`).body["game"].(string)
	// A second game in the same partition: JetStream's duplicate window is
	// per stream, so keys must name the game.
	other := ""
	for i := 0; other == ""; i++ {
		if g := fmt.Sprintf("idem-b%d", i); wire.Partition(g, sys.Seq.Partitions) == wire.Partition(game, sys.Seq.Partitions) {
			other = g
		}
	}
	createGame(t, base, `{"id":"`+other+`"}`)

	first := expect(t, publish(t, base, game, `{"type":"grant","gold":5}`, "Idempotency-Key", "order-1"), http.StatusCreated)
	id := first.num("msg_id")
	again := expect(t, publish(t, base, game, `{"type":"grant","gold":5}`, "Idempotency-Key", "order-1"), http.StatusOK)
	if again.num("msg_id") != id {
		t.Fatalf("retry answered msg_id %d, want %d", again.num("msg_id"), id)
	}
	if h := sys.Head(game); h != id {
		t.Fatalf("head %d after a retry, want %d", h, id)
	}

	// Concurrent retries share one append.
	var wg sync.WaitGroup
	ids := make([]uint64, 8)
	for i := range ids {
		wg.Go(func() {
			r := publish(t, base, game, `{"type":"grant","gold":7}`, "Idempotency-Key", "order-2")
			if r.status != http.StatusCreated && r.status != http.StatusOK {
				t.Errorf("concurrent retry: %d %s", r.status, r.raw)
			}
			ids[i] = r.num("msg_id")
		})
	}
	wg.Wait()
	for _, x := range ids {
		if x != id+1 {
			t.Fatalf("concurrent retries answered %v, want all %d", ids, id+1)
		}
	}
	if h := sys.Head(game); h != id+1 {
		t.Fatalf("head %d after concurrent retries, want %d", h, id+1)
	}

	// The same key from another owner or into another game is another message.
	r := expect(t, call(t, "POST", base+"/v1/games/"+game+"/messages", httpapitest.Keys["matcher"], `{"type":"grant"}`, "Idempotency-Key", "order-1"), http.StatusCreated)
	if r.num("msg_id") != id+2 {
		t.Fatalf("other owner's key: msg_id %d, want %d", r.num("msg_id"), id+2)
	}
	r = expect(t, publish(t, base, other, `{"type":"grant"}`, "Idempotency-Key", "order-1"), http.StatusCreated)
	if r.num("msg_id") != 2 {
		t.Fatalf("same key in another game of the partition: msg_id %d, want 2", r.num("msg_id"))
	}
	// Without a key every request appends.
	expect(t, publish(t, base, game, `{"type":"grant"}`), http.StatusCreated)
	expect(t, publish(t, base, game, `{"type":"grant"}`), http.StatusCreated)
	if h := sys.Head(game); h != id+4 {
		t.Fatalf("head %d, want %d", h, id+4)
	}
}

// TestAuth: requests without a valid key are refused with 401
// unauthorized and change nothing; keys never reach the log.
func TestAuth(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{})
	base := sys.URL()
	game := createGame(t, base, "").body["game"].(string)
	wrong := "wrong-key-0123456789abcdef"
	auths := map[string]string{
		"missing":      "",
		"wrong key":    "Bearer " + wrong,
		"key prefix":   "Bearer " + studioKey[:len(studioKey)-1],
		"key suffixed": "Bearer " + studioKey + "x",
		"basic":        "Basic " + studioKey,
		"no scheme":    studioKey,
		"empty bearer": "Bearer ",
	}
	reqs := []struct{ method, path, body string }{
		{"POST", "/v1/games", `{}`},
		{"POST", "/v1/games/" + game + "/messages", `{"type":"x"}`},
		{"GET", "/v1/games/" + game + "/messages", ""},
		{"POST", "/v1/games/" + game + "/end", ""},
	}
	for name, auth := range auths {
		for _, rq := range reqs {
			t.Run(name+"/"+rq.method+rq.path, func(t *testing.T) {
				var hdr []string
				if auth != "" {
					hdr = []string{"Authorization", auth}
				}
				r := expect(t, call(t, rq.method, base+rq.path, "", rq.body, hdr...), http.StatusUnauthorized, wire.CodeUnauthorized)
				if r.header.Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate header")
				}
			})
		}
	}
	if h := sys.Head(game); h != 1 {
		t.Fatalf("head %d after refused requests, want 1", h)
	}
	// The scheme is case-insensitive.
	expect(t, call(t, "POST", base+"/v1/games/"+game+"/messages", "", `{"type":"x"}`, "Authorization", "bearer "+studioKey), http.StatusCreated)
	logs := sys.Logs.String()
	for _, k := range []string{studioKey, wrong, httpapitest.Keys["matcher"]} {
		if strings.Contains(logs, k) {
			t.Fatalf("the log holds an API key")
		}
	}
}

// TestBadInput: every invalid request gets its documented status and code,
// and nothing is appended.
func TestBadInput(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{})
	base := sys.URL()
	game := createGame(t, base, "").body["game"].(string)
	expect(t, publish(t, base, game, `{"type":"hello"}`), http.StatusCreated)
	before := sys.Messages(game)
	msgs := "/v1/games/" + game + "/messages"
	end := "/v1/games/" + game + "/end"
	big := `{"type":"x","pad":"` + strings.Repeat("a", 64<<10) + `"}`
	cases := map[string]struct {
		method, path, body string
		chunked            bool // send without Content-Length
		hdr                []string
		status             int
		code               string
	}{
		"not JSON":             {"POST", msgs, `{"type":`, false, nil, 400, wire.CodeInvalidJSON},
		"empty body":           {"POST", msgs, ``, false, nil, 400, wire.CodeInvalidJSON},
		"trailing garbage":     {"POST", msgs, `{"type":"x"} x`, false, nil, 400, wire.CodeInvalidJSON},
		"invalid UTF-8":        {"POST", msgs, "{\"type\":\"x\",\"a\":\"\xff\"}", false, nil, 400, wire.CodeInvalidJSON},
		"array":                {"POST", msgs, `[{"type":"x"}]`, false, nil, 400, wire.CodeNotObject},
		"string":               {"POST", msgs, `"hi"`, false, nil, 400, wire.CodeNotObject},
		"missing type":         {"POST", msgs, `{"text":"hi"}`, false, nil, 400, wire.CodeMissingType},
		"type not a string":    {"POST", msgs, `{"type":7}`, false, nil, 400, wire.CodeMissingType},
		"msg_id":               {"POST", msgs, `{"type":"x","msg_id":99}`, false, nil, 400, wire.CodeReservedField},
		"client_id":            {"POST", msgs, `{"type":"x","client_id":"c"}`, false, nil, 400, wire.CodeReservedField},
		"ts":                   {"POST", msgs, `{"type":"x","ts":1}`, false, nil, 400, wire.CodeReservedField},
		"user":                 {"POST", msgs, `{"type":"x","user":"ana"}`, false, nil, 400, wire.CodeReservedField},
		"source":               {"POST", msgs, `{"type":"x","source":"studio"}`, false, nil, 400, wire.CodeReservedField},
		"User":                 {"POST", msgs, `{"type":"x","User":"admin"}`, false, nil, 400, wire.CodeReservedField},
		"Source":               {"POST", msgs, `{"type":"x","Source":"studio"}`, false, nil, 400, wire.CodeReservedField},
		"MSG_ID":               {"POST", msgs, `{"type":"x","MSG_ID":1}`, false, nil, 400, wire.CodeReservedField},
		"duplicate type":       {"POST", msgs, `{"type":"joined","type":"chat"}`, false, nil, 400, wire.CodeInvalidMessage},
		"escaped source":       {"POST", msgs, `{"type":"x","\u0073ource":"studio"}`, false, nil, 400, wire.CodeReservedField},
		"game_created":         {"POST", msgs, `{"type":"game_created"}`, false, nil, 400, wire.CodeReservedType},
		"game_ended":           {"POST", msgs, `{"type":"game_ended"}`, false, nil, 400, wire.CodeReservedType},
		"escaped game_ended":   {"POST", msgs, `{"type":"game\u005fended"}`, false, nil, 400, wire.CodeReservedType},
		"presence":             {"POST", msgs, `{"type":"presence"}`, false, nil, 400, wire.CodeReservedType},
		"joined":               {"POST", msgs, `{"type":"joined"}`, false, nil, 400, wire.CodeReservedType},
		"join":                 {"POST", msgs, `{"type":"join"}`, false, nil, 400, wire.CodeReservedType},
		"error":                {"POST", msgs, `{"type":"error"}`, false, nil, 400, wire.CodeReservedType},
		"second type reserved": {"POST", msgs, `{"type":"x","type":"presence"}`, false, nil, 400, wire.CodeInvalidMessage},
		"too large":            {"POST", msgs, big, false, nil, 413, wire.CodeTooLarge},
		"too large, chunked":   {"POST", msgs, big, true, nil, 413, wire.CodeTooLarge},
		"long Idempotency-Key": {"POST", msgs, `{"type":"x"}`, false, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, wire.CodeInvalidMessage},
		"two Idempotency-Keys": {"POST", msgs, `{"type":"x"}`, false, []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, 400, wire.CodeInvalidMessage},
		"invalid game":         {"POST", "/v1/games/a%20b/messages", `{"type":"x"}`, false, nil, 400, wire.CodeInvalidGame},
		"game id too long":     {"POST", "/v1/games/" + strings.Repeat("g", 65) + "/messages", `{"type":"x"}`, false, nil, 400, wire.CodeInvalidGame},
		"unknown game":         {"POST", "/v1/games/nosuchgame/messages", `{"type":"x"}`, false, nil, 404, wire.CodeUnknownGame},
		"end: type":            {"POST", end, `{"type":"x"}`, false, nil, 400, wire.CodeInvalidMessage},
		"end: array":           {"POST", end, `[]`, false, nil, 400, wire.CodeNotObject},
		"end: reserved field":  {"POST", end, `{"msg_id":1}`, false, nil, 400, wire.CodeReservedField},
		"end: not JSON":        {"POST", end, `{`, false, nil, 400, wire.CodeInvalidJSON},
		"end: too large":       {"POST", end, big, false, nil, 413, wire.CodeTooLarge},
		"end: unknown game":    {"POST", "/v1/games/nosuchgame/end", ``, false, nil, 404, wire.CodeUnknownGame},
		"end: invalid game":    {"POST", "/v1/games/a.b/end", ``, false, nil, 400, wire.CodeInvalidGame},
		"history: since":       {"GET", msgs + "?since=-1", ``, false, nil, 400, wire.CodeInvalidMessage},
		"history: limit 0":     {"GET", msgs + "?limit=0", ``, false, nil, 400, wire.CodeInvalidMessage},
		"history: limit word":  {"GET", msgs + "?limit=all", ``, false, nil, 400, wire.CodeInvalidMessage},
		"history: unknown":     {"GET", "/v1/games/nosuchgame/messages", ``, false, nil, 404, wire.CodeUnknownGame},
		"history: invalid":     {"GET", "/v1/games/a.b/messages", ``, false, nil, 400, wire.CodeInvalidGame},
		"create: invalid id":   {"POST", "/v1/games", `{"id":"a b"}`, false, nil, 400, wire.CodeInvalidGame},
		"create: bad ttl":      {"POST", "/v1/games", `{"ttl":"forever"}`, false, nil, 400, wire.CodeInvalidMessage},
		"create: ttl too long": {"POST", "/v1/games", `{"ttl":"9000h"}`, false, nil, 400, wire.CodeInvalidMessage},
		"create: ttl number":   {"POST", "/v1/games", `{"ttl":60}`, false, nil, 400, wire.CodeInvalidMessage},
		"create: unknown key":  {"POST", "/v1/games", `{"name":"x"}`, false, nil, 400, wire.CodeInvalidMessage},
		"create: empty sub":    {"POST", "/v1/games", `{"players":[{"sub":""}]}`, false, nil, 400, wire.CodeInvalidMessage},
		"create: not object":   {"POST", "/v1/games", `[]`, false, nil, 400, wire.CodeNotObject},
		"create: not JSON":     {"POST", "/v1/games", `{"id":`, false, nil, 400, wire.CodeInvalidJSON},
		"create: too large":    {"POST", "/v1/games", big, false, nil, 413, wire.CodeTooLarge},
		"no route":             {"GET", "/v1/nothing", ``, false, nil, 404, wire.CodeNotFound},
		"trailing slash":       {"POST", "/v1/games/", `{}`, false, nil, 404, wire.CodeNotFound},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
				if tc.chunked {
					body = io.MultiReader(body)
				}
			}
			req, _ := http.NewRequest(tc.method, base+tc.path, body)
			req.Header.Set("Authorization", "Bearer "+studioKey)
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Add(tc.hdr[i], tc.hdr[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(raw, &e); err != nil || resp.StatusCode != tc.status || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, raw, tc.status, tc.code)
			}
		})
	}
	after := sys.Messages(game)
	if len(after) != len(before) {
		t.Fatalf("refused requests appended: %d messages, want %d", len(after), len(before))
	}
	if h := sys.Head("nosuchgame"); h != 0 {
		t.Fatalf("the unknown game got %d messages", h)
	}
}

// TestCreate: ids, tokens, the game_created message, 409 for an existing
// id, and retries with an Idempotency-Key answering the same game.
func TestCreate(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{})
	base := sys.URL()

	// No body: a random id, tokens for 24h, the game exists.
	r := createGame(t, base, "")
	game := r.body["game"].(string)
	if err := wire.ValidateGame(game); err != nil {
		t.Fatal(err)
	}
	checkToken(t, r.body["player_token"], game, token.RolePlayer, "", 24*time.Hour)
	checkToken(t, r.body["spectator_token"], game, token.RoleSpectator, "", 24*time.Hour)
	if p := r.body["players"].([]any); len(p) != 0 {
		t.Fatalf("players %v, want none", p)
	}
	exp, err := time.Parse(time.RFC3339, r.body["expires"].(string))
	if err != nil || time.Until(exp) < 23*time.Hour || time.Until(exp) > 25*time.Hour {
		t.Fatalf("expires %v (%v), want in 24h", r.body["expires"], err)
	}
	stored := sys.Messages(game)
	if len(stored) != 1 {
		t.Fatalf("created game holds %d messages, want 1", len(stored))
	}
	var created map[string]any
	_ = json.Unmarshal(stored[0], &created)
	if created["type"] != "game_created" || created["client_id"] != "" || created["source"] != "studio" || msgID(created) != 1 {
		t.Fatalf("first message %s, want game_created from studio", stored[0])
	}
	// A spectator may join at once: the game exists.
	spec := join(t, sys.Pods[0].WSURL, game, r.body["spectator_token"].(string))
	if m := spec.expect("game_created"); m["source"] != "studio" {
		t.Fatalf("spectator got %v", m)
	}

	// Requested id, ttl, players.
	r = createGame(t, base, `{"id":"match-1","ttl":"1h","players":[{"sub":"ana"},{"sub":"bo"}]}`)
	if r.body["game"] != "match-1" {
		t.Fatalf("game %v, want match-1", r.body["game"])
	}
	for i, sub := range []string{"ana", "bo"} {
		p := r.body["players"].([]any)[i].(map[string]any)
		if p["sub"] != sub {
			t.Fatalf("player %d: %v", i, p)
		}
		checkToken(t, p["token"], "match-1", token.RolePlayer, sub, time.Hour)
	}
	ana := join(t, sys.Pods[0].WSURL, "match-1", r.body["players"].([]any)[0].(map[string]any)["token"].(string))
	ana.expect("game_created")
	ana.until("presence") // her join's presence is appended asynchronously: let it land
	ana.send(map[string]any{"type": "hello"})
	if m := ana.until("hello"); m["user"] != "ana" {
		t.Fatalf("ana's message %v lacks user ana", m)
	}

	// The same id again is taken.
	head := sys.Head("match-1")
	expect(t, call(t, "POST", base+"/v1/games", studioKey, `{"id":"match-1"}`), http.StatusConflict, wire.CodeGameExists)
	expect(t, call(t, "POST", base+"/v1/games", studioKey, `{"id":"match-1"}`, "Idempotency-Key", "k"), http.StatusConflict, wire.CodeGameExists)
	if h := sys.Head("match-1"); h != head {
		t.Fatalf("a refused create appended: head %d, want %d", h, head)
	}

	// A retried create (same Idempotency-Key, same owner) answers the same
	// game; another key or another owner gets 409.
	r1 := createGame(t, base, `{"id":"match-2","players":[{"sub":"ana"}]}`, "Idempotency-Key", "order-7")
	r2 := createGame(t, base, `{"id":"match-2","players":[{"sub":"ana"}]}`, "Idempotency-Key", "order-7")
	if r2.body["game"] != "match-2" || len(r2.body["players"].([]any)) != 1 {
		t.Fatalf("retry answered %s, first %s", r2.raw, r1.raw)
	}
	checkToken(t, r2.body["players"].([]any)[0].(map[string]any)["token"], "match-2", token.RolePlayer, "ana", 24*time.Hour)
	expect(t, call(t, "POST", base+"/v1/games", studioKey, `{"id":"match-2"}`, "Idempotency-Key", "order-8"), http.StatusConflict, wire.CodeGameExists)
	expect(t, call(t, "POST", base+"/v1/games", httpapitest.Keys["matcher"], `{"id":"match-2"}`, "Idempotency-Key", "order-7"), http.StatusConflict, wire.CodeGameExists)
	if h := sys.Head("match-2"); h != 1 {
		t.Fatalf("retries appended: head %d, want 1", h)
	}

	// Without id, the Idempotency-Key determines the game.
	k1 := createGame(t, base, "", "Idempotency-Key", "purchase-42")
	k2 := createGame(t, base, "", "Idempotency-Key", "purchase-42")
	k3 := createGame(t, base, "", "Idempotency-Key", "purchase-43")
	if k1.body["game"] != k2.body["game"] || k1.body["game"] == k3.body["game"] {
		t.Fatalf("games %v %v %v: want the first two equal, the third different", k1.body["game"], k2.body["game"], k3.body["game"])
	}
	if h := sys.Head(k1.body["game"].(string)); h != 1 {
		t.Fatalf("head %d, want 1", h)
	}

	// Concurrent creates of one id append one game_created.
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for range 6 {
		wg.Go(func() {
			r := call(t, "POST", base+"/v1/games", studioKey, `{"id":"race-1"}`)
			mu.Lock()
			statuses[r.status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if statuses[201] == 0 || statuses[201]+statuses[409] != 6 {
		t.Fatalf("concurrent creates answered %v, want 201s and 409s only, at least one 201", statuses)
	}
	if h := sys.Head("race-1"); h != 1 {
		t.Fatalf("concurrent creates: head %d, want 1", h)
	}
}

func checkToken(t testing.TB, tok any, game, role, sub string, ttl time.Duration) {
	t.Helper()
	s, _ := tok.(string)
	v, err := token.NewVerifier(token.Config{Keys: []token.Key{{Secret: httpapitest.Secret}}, MaxLifetime: ttl})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := v.Verify(s, time.Now())
	if err != nil {
		t.Fatalf("token %q: %v", s, err)
	}
	left := time.Until(time.Unix(cl.Exp, 0))
	if cl.Game != game || cl.Role != role || cl.Sub != sub || left < ttl-time.Minute || left > ttl+time.Minute {
		t.Fatalf("token claims %+v, want game %s role %s sub %q ttl %s", cl, game, role, sub, ttl)
	}
}
