package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/gamerelay/gamerelay/gateway/httpapi/httpapitest"
)

// TestEnd: ending appends one game_ended system message (repeats within
// the duplicate window answer the same msg_id), players receive it, later
// joins replay it, and the game stays open for appends.
func TestEnd(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{})
	base, ws := sys.URL(), sys.Pods[0].WSURL
	r := createGame(t, base, `{"id":"duel-9","players":[{"sub":"ana"}]}`)
	ana := join(t, ws, "duel-9", r.body["players"].([]any)[0].(map[string]any)["token"].(string))
	// Her presence is appended after joined, asynchronously: let it land
	// so the msg_ids below are the end messages'.
	ana.until("presence")

	e1 := expect(t, call(t, "POST", base+"/v1/games/duel-9/end", studioKey, `{"reason":"finished","winner":"ana"}`), http.StatusOK)
	id := e1.num("msg_id")
	m := ana.until("game_ended")
	if msgID(m) != id || m["client_id"] != "" || m["source"] != "studio" || m["reason"] != "finished" || m["winner"] != "ana" {
		t.Fatalf("ana got %v, want game_ended %d from studio with the reason", m, id)
	}
	// Players cannot forge the system messages.
	for _, typ := range []string{"game_ended", "game_created"} {
		ana.send(map[string]any{"type": typ})
		if m := ana.until("error"); m["code"] != "reserved_type" {
			t.Fatalf("a player's %s: %v, want reserved_type", typ, m)
		}
	}
	// A repeated end (a retry) appends nothing.
	e2 := expect(t, call(t, "POST", base+"/v1/games/duel-9/end", studioKey, ""), http.StatusOK)
	if e2.num("msg_id") != id || sys.Head("duel-9") != id {
		t.Fatalf("second end: msg_id %d, head %d; want both %d", e2.num("msg_id"), sys.Head("duel-9"), id)
	}
	// An explicit Idempotency-Key is its own end message, retried once.
	e3 := expect(t, call(t, "POST", base+"/v1/games/duel-9/end", httpapitest.Keys["matcher"], "", "Idempotency-Key", "round-2"), http.StatusOK)
	e4 := expect(t, call(t, "POST", base+"/v1/games/duel-9/end", httpapitest.Keys["matcher"], "", "Idempotency-Key", "round-2"), http.StatusOK)
	if e3.num("msg_id") != id+1 || e4.num("msg_id") != id+1 {
		t.Fatalf("keyed ends: %d, %d; want %d", e3.num("msg_id"), e4.num("msg_id"), id+1)
	}
	if m := ana.until("game_ended"); m["source"] != "matcher" || len(m) != 5 {
		t.Fatalf("second game_ended %v: want type, client_id, source, msg_id, ts", m)
	}
	// Appends after the end are not refused.
	p := expect(t, publish(t, base, "duel-9", `{"type":"score","ana":3}`), http.StatusCreated)
	if p.num("msg_id") != id+2 {
		t.Fatalf("publish after end: msg_id %d, want %d", p.num("msg_id"), id+2)
	}
	// A later join replays everything, the end included.
	spec := join(t, ws, "duel-9", r.body["spectator_token"].(string))
	if m := spec.until("game_ended"); msgID(m) != id {
		t.Fatalf("replayed end %v, want msg_id %d", m, id)
	}
	if m := spec.until("score"); msgID(m) != id+2 {
		t.Fatalf("replayed %v, want msg_id %d", m, id+2)
	}
}
