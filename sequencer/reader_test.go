package sequencer

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// A replica that trails the leader must not make a replay report the
// stream's retention as having removed what was just stored: a game that
// just started, read through a replica that has none or part of it, is
// read from the leader.
func TestReplayThroughATrailingReplica(t *testing.T) {
	log := newFakeLog(time.Minute)
	subject := wire.Names{}.LogSubject(0, "g")
	for id := uint64(1); id <= 300; id++ {
		log.mu.Lock()
		h := nats.Header{wire.HdrMsgID: {strconv.FormatUint(id, 10)}}
		if id > 1 {
			// Anchors: the start of the page before id (sequence = msg_id here).
			h[wire.HdrAnchor] = []string{strconv.FormatUint(wire.PageStart(id-1), 10)}
		}
		log.storeLocked(&nats.Msg{Subject: subject, Header: h, Data: stamp(nil, []byte(`{"type":"m"}`), id, 1)})
		log.mu.Unlock()
	}
	head, err := log.lastFromLeader(context.Background(), 0, "g")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		seen uint64 // messages the replica has
	}{
		{"replica has none", 0},
		{"replica has part", 150},
		{"replica is current", 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Reader{st: &replica{fakeLog: log, seen: tc.seen}, parts: 1}
			var got []uint64
			err := r.Range(context.Background(), "g", 0, 300, &head, func(m Stored) error {
				got = append(got, m.ID)
				return nil
			})
			if err != nil {
				t.Fatalf("replay 1..300: %v", err)
			}
			for i, id := range got {
				if id != uint64(i+1) {
					t.Fatalf("replayed %v…: not dense from 1", got[:i+1])
				}
			}
			if len(got) != 300 {
				t.Fatalf("replayed %d messages, want 300", len(got))
			}
		})
	}
	// What retention really removed is still reported, with where the
	// stream's history begins.
	short := newFakeLog(time.Minute)
	for id := uint64(51); id <= 60; id++ {
		short.mu.Lock()
		short.storeLocked(&nats.Msg{Subject: subject, Header: nats.Header{wire.HdrMsgID: {strconv.FormatUint(id, 10)}}, Data: stamp(nil, []byte(`{"type":"m"}`), id, 1)})
		short.mu.Unlock()
	}
	h2, _ := short.lastFromLeader(context.Background(), 0, "g")
	r := &Reader{st: &replica{fakeLog: short, seen: 0}, parts: 1}
	err = r.Range(context.Background(), "g", 0, 60, &h2, func(Stored) error { return nil })
	var te *TruncatedError
	if !errors.As(err, &te) || te.FirstID != 51 {
		t.Fatalf("replay of a truncated game: %v, want TruncatedError{FirstID: 51}", err)
	}
}
