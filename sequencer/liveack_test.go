package sequencer

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// An append to a game this process follows is answered by the message's
// live copy: the sequencer sends no reply. Appends to other games, and
// errors, are replied as before.
func TestLiveAcksSkipTheReply(t *testing.T) {
	e := newEnv(t, testConfig())
	e.service(nil)
	fs := e.feeds(FeedConfig{})
	const game, other = "followed", "unfollowed"
	f, err := fs.Open(context.Background(), game)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rec recorder
	_, cancel := f.Subscribe(rec.add(t))
	defer cancel()

	// The client's replies come to _CL.>, where a second connection counts
	// them.
	client := NewClient(embednats.Connect(t, e.url, nats.CustomInboxPrefix("_CL")), e.cfg, WithLiveAcks(fs))
	watch := e.conn()
	var replies atomic.Int32
	if _, err := watch.Subscribe("_CL.>", func(*nats.Msg) { replies.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := uint64(1); i <= 3; i++ {
		r, err := client.Append(ctx, game, body("live"), "")
		if err != nil || r.MsgID != i || r.Seq == 0 || r.TS == 0 {
			t.Fatalf("append %d to a followed game: %+v, %v", i, r, err)
		}
	}
	// The reply to an unfollowed game's append comes after any the three
	// appends above could have drawn: the sequencer answers in order.
	if r, err := client.Append(ctx, other, body("reply"), ""); err != nil || r.MsgID != 1 {
		t.Fatalf("append to an unfollowed game: %+v, %v", r, err)
	}
	testutil.WaitFor(t, 5*time.Second, "the unfollowed game's reply seen", func() bool { return replies.Load() >= 1 })
	if n := replies.Load(); n != 1 {
		t.Fatalf("%d replies, want 1: the followed game's appends must be answered by their live copies", n)
	}
	if ids, _ := rec.snapshot(); len(ids) != 3 {
		t.Fatalf("the feed delivered %v, want msg_ids 1..3", ids)
	}
	// An error is replied even when the live copy was asked for.
	_, err = client.Append(ctx, game, []byte(`{"type":"x","msg_id":1}`), "")
	var se *Error
	if !errors.As(err, &se) || se.Code != wire.CodeReservedField {
		t.Fatalf("got %v, want reserved_field", err)
	}
}

// fakeOwner answers nothing on the owner's subject, as a sequencer that
// stored a message asked to be acknowledged live does when its live copy
// is lost, and answers on the any-sequencer subject.
type fakeOwner struct {
	mu   sync.Mutex
	acks []string // Gr-Ack of each request, in order: owner's first
}

func (o *fakeOwner) serve(t *testing.T, nc *nats.Conn, names wire.Names, p int) {
	t.Helper()
	record := func(m *nats.Msg) {
		o.mu.Lock()
		o.acks = append(o.acks, m.Header.Get(wire.HdrAck))
		o.mu.Unlock()
	}
	if _, err := nc.Subscribe(names.AppendSubject(p), record); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(names.AppendAnySubject(p), func(m *nats.Msg) {
		record(m)
		_ = m.Respond([]byte(`{"msg_id":7,"seq":9,"ts":1}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (o *fakeOwner) seen() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.acks...)
}

// When the live copy does not come within the attempt timeout, the next
// attempt asks for a reply.
func TestLiveAckFallsBackToAReply(t *testing.T) {
	cfg := testConfig()
	cfg.AttemptTimeout = 200 * time.Millisecond
	e := newEnv(t, cfg)
	fs := e.feeds(FeedConfig{})
	const game = "silent"
	f, err := fs.Open(context.Background(), game)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var owner fakeOwner
	owner.serve(t, e.conn(), cfg.names(), wire.Partition(game, cfg.Partitions))
	client := NewClient(e.conn(), cfg, WithLiveAcks(fs))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := client.Append(ctx, game, body("x"), "k")
	if err != nil || r.MsgID != 7 {
		t.Fatalf("got %+v, %v; want the reply to the second attempt", r, err)
	}
	if acks := owner.seen(); len(acks) != 2 || acks[0] != wire.AckLive || acks[1] != "" {
		t.Fatalf("requests' %s: %q, want [live, none]", wire.HdrAck, acks)
	}
}

// When the feed stops while an append waits for its live copy, the append
// asks again, for a reply, at once.
func TestLiveAckWhenTheFeedStops(t *testing.T) {
	cfg := testConfig()
	cfg.AttemptTimeout = time.Minute // only the feed's stop ends the first attempt
	e := newEnv(t, cfg)
	fs := e.feeds(FeedConfig{})
	const game = "closing"
	f, err := fs.Open(context.Background(), game)
	if err != nil {
		t.Fatal(err)
	}
	var owner fakeOwner
	owner.serve(t, e.conn(), cfg.names(), wire.Partition(game, cfg.Partitions))
	client := NewClient(e.conn(), cfg, WithLiveAcks(fs))
	type outcome struct {
		r   Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := client.Append(ctx, game, body("x"), "k")
		done <- outcome{r, err}
	}()
	testutil.WaitFor(t, 10*time.Second, "the owner got the first request", func() bool { return len(owner.seen()) == 1 })
	f.Close() // the last holder: the feed stops
	o := <-done
	if o.err != nil || o.r.MsgID != 7 {
		t.Fatalf("got %+v, %v; want the reply to the second attempt", o.r, o.err)
	}
	if acks := owner.seen(); len(acks) != 2 || acks[0] != wire.AckLive || acks[1] != "" {
		t.Fatalf("requests' %s: %q, want [live, none]", wire.HdrAck, acks)
	}
}

// A live copy that never arrives is found in the stream by the feed, which
// answers the append from there.
func TestLiveAckFromTheStream(t *testing.T) {
	cfg := testConfig()
	cfg.AttemptTimeout = time.Minute // only the feed can answer in time
	e := newEnv(t, cfg)
	e.service(nil)
	fs := e.feeds(FeedConfig{SweepInterval: 100 * time.Millisecond})
	const game = "lost"
	f, err := fs.Open(context.Background(), game)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The feed hears no live copy from now on.
	f.deliverMu.Lock()
	_ = f.sub.Unsubscribe()
	f.deliverMu.Unlock()
	client := NewClient(e.conn(), cfg, WithLiveAcks(fs))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := client.Append(ctx, game, body("x"), "")
	if err != nil || r.MsgID != 1 || r.Seq == 0 {
		t.Fatalf("got %+v, %v; want msg_id 1 from the stream", r, err)
	}
}
