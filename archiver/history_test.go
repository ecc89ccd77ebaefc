package archiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// TestHistoryBeyondRetention: the stream keeps 50 messages per game; after
// 200 messages, the archive serves msg_id 1..FirstID-1 and the stream the
// rest, and together they are 1..200 without a gap or duplicate, exactly
// as a gateway joins a client with since=0.
func TestHistoryBeyondRetention(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 2, MaxMsgsPerGame: 50})
	e.start(e.config(), nil)
	var frames [][]byte
	for round := 0; round < 4; round++ {
		// Never more than the stream keeps before the archiver has it.
		frames = e.appendN([]string{"old"}, 50)["old"]
		e.waitCount(int64(50 * (round + 1)))
	}
	if len(frames) != 50 {
		t.Fatalf("stream holds %d messages, want 50", len(frames))
	}

	ctx := context.Background()
	reader := sequencer.NewReader(e.conn(), e.seq)
	err := reader.Range(ctx, "old", 0, 200, nil, func(sequencer.Stored) error { return nil })
	var te *sequencer.TruncatedError
	if !errors.As(err, &te) || te.FirstID != 151 {
		t.Fatalf("stream read from 0: %v, want TruncatedError{FirstID: 151}", err)
	}

	var ids []uint64
	var got [][]byte
	hc := NewHistoryClient(e.conn(), "")
	err = hc.Range(ctx, "old", 0, te.FirstID-1, func(id uint64, frame []byte) error {
		ids = append(ids, id)
		got = append(got, append([]byte(nil), frame...))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = reader.Range(ctx, "old", te.FirstID-1, 200, nil, func(m sequencer.Stored) error {
		ids = append(ids, m.ID)
		got = append(got, m.Data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 200 {
		t.Fatalf("%d messages, want 200", len(ids))
	}
	archived := map[uint64]string{}
	err = NewArchive(e.client, "gamerelay").Messages(ctx, "old", 0, 0, func(r Record) error {
		archived[r.MsgID] = string(r.Frame)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("message %d has msg_id %d", i, id)
		}
		if fid, ok := frameMsgID(got[i]); !ok || fid != id {
			t.Fatalf("frame %d says msg_id %d", id, fid)
		}
		if archived[id] != string(got[i]) {
			t.Fatalf("msg_id %d: got %s, archive has %s", id, got[i], archived[id])
		}
	}

	// A sub-range in the middle, in several pages.
	var mid []uint64
	hc.attempt = 5 * time.Second
	if err := hc.Range(ctx, "old", 17, 133, func(id uint64, _ []byte) error { mid = append(mid, id); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(mid) != 116 || mid[0] != 18 || mid[115] != 133 {
		t.Fatalf("range 17..133 gave %d messages, %v…", len(mid), mid[:min(3, len(mid))])
	}
}

// TestHistoryPagesAndErrors checks the request API directly: limits and
// page bounds, the gap error (never a silent gap), bad requests, and the
// client's unavailability when no archiver answers.
func TestHistoryPagesAndErrors(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 1})
	e.start(e.config(), nil)
	e.appendN([]string{"h"}, 30)
	// A big message makes a reply reach the byte bound early.
	big := fmt.Sprintf(`{"type":"blob","pad":"%0*d"}`, 60_000, 0)
	for range 10 {
		if _, err := e.app.Append(context.Background(), "h", []byte(big), ""); err != nil {
			t.Fatal(err)
		}
	}
	e.waitCount(40)
	nc := e.conn()
	ask := func(req string) HistoryReply {
		t.Helper()
		resp, err := nc.Request(wire.Names{}.History(), []byte(req), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r HistoryReply
		if err := json.Unmarshal(resp.Data, &r); err != nil {
			t.Fatalf("reply %s: %v", resp.Data, err)
		}
		return r
	}
	for name, tc := range map[string]struct {
		req    string
		frames int
		next   uint64
		more   bool
		code   string
	}{
		"limit":            {`{"game":"h","since":0,"upto":40,"limit":7}`, 7, 7, true, ""},
		"to upto":          {`{"game":"h","since":20,"upto":25}`, 5, 25, false, ""},
		"unbounded":        {`{"game":"h","since":25,"limit":5}`, 5, 30, true, ""},
		"byte bound":       {`{"game":"h","since":30}`, MaxHistoryBytes / 60_000, 30 + MaxHistoryBytes/60_000, true, ""},
		"end of archive":   {`{"game":"h","since":40}`, 0, 40, false, ""},
		"empty range":      {`{"game":"h","since":12,"upto":12}`, 0, 12, false, ""},
		"beyond archive":   {`{"game":"h","since":40,"upto":45}`, 0, 0, false, wire.CodeHistoryGap},
		"partly beyond":    {`{"game":"h","since":38,"upto":45}`, 2, 40, true, ""},
		"unknown game":     {`{"game":"nope","since":0,"upto":3}`, 0, 0, false, wire.CodeHistoryGap},
		"invalid game":     {`{"game":"a.b","since":0,"upto":3}`, 0, 0, false, wire.CodeInvalidGame},
		"not json":         {`{"game":`, 0, 0, false, wire.CodeInvalidMessage},
		"negative numbers": {`{"game":"h","since":-1}`, 0, 0, false, wire.CodeInvalidMessage},
	} {
		t.Run(name, func(t *testing.T) {
			r := ask(tc.req)
			if tc.code != "" {
				if r.Error == nil || r.Error.Code != tc.code {
					t.Fatalf("reply %+v, want error %s", r, tc.code)
				}
				return
			}
			if r.Error != nil || len(r.Frames) != tc.frames || r.Next != tc.next || r.More != tc.more {
				t.Fatalf("reply: %d frames, next %d, more %v, error %v; want %d, %d, %v", len(r.Frames), r.Next, r.More, r.Error, tc.frames, tc.next, tc.more)
			}
		})
	}

	// Remove msg_id 12 from the archive: Range delivers 1..11, then fails.
	if _, err := e.db.Collection(MessagesCollection).DeleteOne(context.Background(),
		bson.D{{Key: "game", Value: "h"}, {Key: "msg_id", Value: int64(12)}}); err != nil {
		t.Fatal(err)
	}
	var last uint64
	err := NewHistoryClient(nc, "").Range(context.Background(), "h", 0, 20, func(id uint64, _ []byte) error {
		last = id
		return nil
	})
	if !errors.Is(err, ErrHistoryGap) || last != 11 {
		t.Fatalf("range over a gap: last %d, err %v; want 11 and ErrHistoryGap", last, err)
	}

	// Another namespace has no archiver: unavailable once ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = NewHistoryClient(nc, "other").Range(ctx, "h", 0, 5, func(uint64, []byte) error { return nil })
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no archiver: %v", err)
	}
}
