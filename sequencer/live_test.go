package sequencer

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// storedLog collects every message a feed subscriber receives.
type storedLog struct {
	mu   sync.Mutex
	msgs []Stored
}

func (l *storedLog) add(m Stored) {
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
}

func (l *storedLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

// TestLocalFeedsAndLiveCopies: a Service made WithLocalFeeds delivers what it
// appends to this process's feeds in process (their NoEcho connection
// never sees the live copies) and to other processes' feeds by live
// copies; gaps left by other appenders, or by a feed busy at the time,
// are filled from the stream. Head checks are off, so only these paths can
// deliver.
func TestLocalFeedsAndLiveCopies(t *testing.T) {
	e := newEnv(t, testConfig())
	ctx := context.Background()
	liveOnly := FeedConfig{CheckAfter: time.Hour, SweepInterval: time.Hour}
	liveNC := embednats.Connect(t, e.url, nats.NoEcho())
	local, err := NewFeeds(liveNC, e.cfg, liveOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(local.Close)
	remote := e.feeds(liveOnly) // another process's feeds

	svc := e.service(local)
	lf := NewLocalFirst(svc, NewClient(e.conn(), e.cfg))

	const game = "local"
	var logs [2]storedLog
	feeds := [2]*Feed{}
	for i, fs := range []*Feeds{local, remote} {
		f, err := fs.Open(ctx, game)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		feeds[i] = f
		f.Subscribe(logs[i].add)
	}
	waitAll := func(n int, what string) {
		t.Helper()
		testutil.WaitFor(t, 10*time.Second, what, func() bool { return logs[0].len() >= n && logs[1].len() >= n })
	}
	appendN := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if r, err := lf.Append(ctx, game, body(fmt.Sprint(i)), ""); err != nil || r.MsgID != uint64(i) {
				t.Fatalf("append %d: %+v %v", i, r, err)
			}
		}
	}

	appendN(1, 10)
	waitAll(10, "1..10 on both feeds")

	// Another appender's message, whose live copy this process's feed
	// loses: the next local message finds the gap and the feed fills it.
	f := feeds[0]
	f.deliverMu.Lock()
	_ = f.sub.Unsubscribe()
	f.deliverMu.Unlock()
	other := e.appender()
	if r, err := other.Append(ctx, game, body("11"), ""); err != nil || r.MsgID != 11 {
		t.Fatalf("other append: %+v %v", r, err)
	}
	appendN(12, 12)
	waitAll(12, "gap 11 filled")
	f.deliverMu.Lock()
	f.sub, err = liveNC.Subscribe(wire.Names{}.LiveSubject(f.p, game), f.onLive)
	f.deliverMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}

	// The feed is busy when a local message arrives: it fetches the
	// message as soon as it is free.
	f.deliverMu.Lock()
	appendN(13, 13)
	f.deliverMu.Unlock()
	waitAll(13, "13 after the busy feed")

	// A retry of a message whose first attempt was stored with its live
	// copy lost (the ack lost too, as around a leader change): JetStream
	// answers "duplicate", and the retry's live copy, which cannot name
	// the message's predecessor, makes the feeds read it from the stream.
	lost := e.appender()
	dead := e.conn()
	dead.Close()
	lost.live = dead
	if r, err := lost.Append(ctx, game, body("14"), "key-14"); err != nil || r.MsgID != 14 {
		t.Fatalf("append 14: %+v %v", r, err)
	}
	if r, err := lf.Append(ctx, game, body("14"), "key-14"); err != nil || r.MsgID != 14 || !r.Duplicate {
		t.Fatalf("retry of 14: %+v %v", r, err)
	}
	waitAll(14, "14 from its retry")

	// Many at once: atomic batches, across anchor pages.
	const total = 300
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for i := 15; i <= total; i++ {
		wg.Add(1)
		if err := svc.Appender().AppendAsync(game, body(fmt.Sprint(i)), "", func(_ Result, err error) {
			if err != nil {
				errs <- err
			}
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitAll(total, "every message on both feeds")

	// Both feeds delivered exactly what the stream holds, in order, with
	// the same sequence, anchor and time.
	stored := readAll(t, NewReader(e.conn(), e.cfg), game)
	if len(stored) != total {
		t.Fatalf("stream holds %d messages, want %d", len(stored), total)
	}
	for i, name := range []string{"local", "remote"} {
		logs[i].mu.Lock()
		got := logs[i].msgs
		logs[i].mu.Unlock()
		if len(got) != total {
			t.Fatalf("%s feed delivered %d messages, want %d", name, len(got), total)
		}
		for j, m := range got {
			w := stored[j]
			if m.ID != w.ID || m.Seq != w.Seq || m.Anchor != w.Anchor || m.TS != w.TS || !bytes.Equal(m.Data, w.Data) {
				t.Fatalf("%s feed message %d: got {id %d seq %d anchor %d ts %d %s}, stream has {id %d seq %d anchor %d ts %d %s}",
					name, j+1, m.ID, m.Seq, m.Anchor, m.TS, m.Data, w.ID, w.Seq, w.Anchor, w.TS, w.Data)
			}
		}
	}
}
