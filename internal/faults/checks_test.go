//go:build faults

package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The suite's verdicts are only as good as its checks: these make each
// one fail on purpose, without a topology.

func TestPlayerFlagsRepeatsAndGaps(t *testing.T) {
	l := newLoad(1, 1, 2, 1, nil)
	p := l.players[0]
	think := time.NewTimer(time.Hour)
	defer think.Stop()
	msg := func(id uint64, idem string) frame {
		return parseFrame(fmt.Appendf(nil, `{"type":"move","idem":%q,"client_id":"c","msg_id":%d,"ts":1}`, idem, id))
	}
	for _, f := range []frame{msg(1, "p01-1"), msg(2, "p01-2")} {
		if !p.deliver(f, think) {
			t.Fatalf("msg_id %d refused", f.msgID)
		}
	}
	if !p.deliver(msg(2, "p01-2"), think) {
		t.Fatal("a repeat must be dropped, not end the connection")
	}
	if p.deliver(msg(4, "p01-4"), think) {
		t.Fatal("a gap must end the connection")
	}
	if p.last != 2 || len(p.hashes) != 2 {
		t.Fatalf("last %d, %d delivered; want 2, 2", p.last, len(p.hashes))
	}
	v := l.stats[0].violations
	if len(v) != 2 || !strings.Contains(v[0], "repeated") || !strings.Contains(v[1], "gap") {
		t.Fatalf("violations %q; want a repeat and a gap", v)
	}
}

func TestPlayerOwnMessageComesBack(t *testing.T) {
	l := newLoad(1, 1, 2, 1, nil)
	p := l.players[0]
	think := time.NewTimer(time.Hour)
	defer think.Stop()
	m := p.newMessage()
	if p.inflight != m || m.idem != "p00-1" {
		t.Fatalf("in flight %+v", p.inflight)
	}
	p.deliver(parseFrame([]byte(`{"type":"move","idem":"p00-1","client_id":"c","msg_id":1,"ts":1}`)), think)
	if p.inflight != nil || m.outcome != back || l.stats[0].back != 1 {
		t.Fatalf("in flight %v, outcome %v, back %d; want nil, back, 1", p.inflight, m.outcome, l.stats[0].back)
	}
	// A non-resender gives up after unavailable; a resender resends.
	m = p.newMessage()
	if resend := p.onError(frame{kind: frameError, code: codeUnavailable}); !resend || !p.resender || p.inflight != m {
		t.Fatalf("resender %v: resend %v after unavailable, in flight %v", p.resender, resend, p.inflight)
	}
	q := l.players[1]
	mq := q.newMessage()
	if resend := q.onError(frame{kind: frameError, code: codeUnavailable}); resend || mq.outcome != gaveUp || q.inflight != nil {
		t.Fatalf("non-resender: resend %v, outcome %v, in flight %v", resend, mq.outcome, q.inflight)
	}
	if l.stats[0].unavailable != 2 || l.stats[0].gaveUp != 1 {
		t.Fatalf("unavailable %d, given up %d; want 2, 1", l.stats[0].unavailable, l.stats[0].gaveUp)
	}
}

func TestLedgerFlagsNumbering(t *testing.T) {
	led := newLedger()
	body := func(id int, idem string) []byte {
		return fmt.Appendf(nil, `{"type":"move","idem":%q,"client_id":"c","msg_id":%d,"ts":1}`, idem, id)
	}
	led.add("gr.log.0.g00", 1, "1", body(1, "p00-1"))
	led.add("gr.log.0.g00", 2, "2", body(2, "p00-2"))
	led.add("gr.log.0.g00", 3, "2", body(2, "p00-3"))                                                              // number reused
	led.add("gr.log.0.g00", 4, "4", body(4, "p00-4"))                                                              // gap
	led.add("gr.log.0.g00", 5, "5", body(6, "p00-5"))                                                              // header and body disagree
	led.add("gr.log.0.g00", 6, "6", []byte(`{"type":"move","client_id":"c","msg_id":6,"ts":1}`))                   // no idem
	led.add("gr.log.0.g00", 7, "7", []byte(`{"type":"presence","event":"join","client_id":"","msg_id":7,"ts":1}`)) // fine
	ps := led.takeProblems()
	if len(ps) != 4 {
		t.Fatalf("%d problems, want 4:\n%s", len(ps), strings.Join(ps, "\n"))
	}
	if len(led.takeProblems()) != 0 {
		t.Fatal("problems reported twice")
	}
}

func TestLostAndDuplicated(t *testing.T) {
	l := newLoad(3, 1, 2, 1, nil)
	p := l.players[0]
	l.cur.Store(1)
	stored, lost, twice, given := p.newMessage(), p.newMessage(), p.newMessage(), p.newMessage()
	given.outcome = gaveUp
	l.cur.Store(2)
	p.newMessage() // another scenario's, not stored: not counted in scenario 1
	led := newLedger()
	for i, idem := range []string{stored.idem, twice.idem, twice.idem} {
		led.add("gr.log.0.g00", uint64(i+1), fmt.Sprint(i+1), fmt.Appendf(nil, `{"type":"move","idem":%q,"client_id":"c","msg_id":%d,"ts":1}`, idem, i+1))
	}
	var res result
	lostWhy, dupWhat := lostAndDuplicated(l.players, led, 1, &res)
	if res.lost != 2 || res.lostGivenUp != 1 || res.dup != 1 {
		t.Fatalf("lost %d (given up %d), dup %d; want 2 (1), 1: %q %q", res.lost, res.lostGivenUp, res.dup, lostWhy, dupWhat)
	}
	if !strings.Contains(lostWhy[0], lost.idem) || !strings.Contains(dupWhat[0], twice.idem) {
		t.Fatalf("lost %q, duplicated %q", lostWhy, dupWhat)
	}
}

func TestParseFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want frame
	}{
		{`{"type":"joined","game":"g","client_id":"c","role":"player","head":7}`, frame{kind: frameJoined, head: 7}},
		{`{"type":"error","code":"unavailable","message":"m","idem":"p01-3"}`, frame{kind: frameError, code: "unavailable", idem: "p01-3", info: "m"}},
		{`{"type":"presence","event":"join","client_id":"","msg_id":3,"ts":1}`, frame{kind: frameMsg, msgID: 3}},
		{`{"type":"audience","n":2}`, frame{kind: frameOther, info: "audience"}},
	} {
		got := parseFrame([]byte(tc.in))
		got.hash = 0
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
