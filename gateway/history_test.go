package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/sequencer"
)

// memArchive is an archive fed from a live feed: what the archiver would
// hold. It serves History.Range like archiver.HistoryClient.
type memArchive struct {
	mu     sync.Mutex
	frames map[uint64][]byte
	during func() // if set, runs once, inside the next Range call
}

func (a *memArchive) Range(_ context.Context, _ string, since, upto uint64, fn func(uint64, []byte) error) error {
	a.mu.Lock()
	during := a.during
	a.during = nil
	a.mu.Unlock()
	if during != nil {
		during()
	}
	for id := since + 1; id <= upto; id++ {
		a.mu.Lock()
		f, ok := a.frames[id]
		a.mu.Unlock()
		if !ok {
			return fmt.Errorf("archive lacks msg_id %d", id)
		}
		if err := fn(id, f); err != nil {
			return err
		}
	}
	return nil
}

// TestJoinFromZeroCrossesIntoTheArchive: retention keeps only the last 50
// messages of a game in the stream; a join with since=0 still gets 1..N,
// the old part from the archive and the rest from the stream, gap-free.
func TestJoinFromZeroCrossesIntoTheArchive(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns := embednats.Server(t)
	seqCfg := sequencer.Config{Partitions: 1, MaxMsgsPerGame: 50, Logger: log}
	nc := embednats.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	if err := sequencer.Provision(context.Background(), js, seqCfg); err != nil {
		t.Fatal(err)
	}
	app, err := sequencer.NewAppender(context.Background(), nc, seqCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	feeds, err := sequencer.NewFeeds(nc, seqCfg, sequencer.FeedConfig{CacheMessages: 10})
	if err != nil {
		t.Fatal(err)
	}
	// The archive records every message as it is delivered.
	archive := &memArchive{frames: map[uint64][]byte{}}
	recorder, err := feeds.Open(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	recorder.Subscribe(func(m sequencer.Stored) {
		archive.mu.Lock()
		archive.frames[m.ID] = m.Data
		archive.mu.Unlock()
	})
	const n = 200
	for i := 1; i <= n; i++ {
		if _, err := app.Append(context.Background(), "old", []byte(fmt.Sprintf(`{"type":"n","i":%d}`, i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("the archive to hold %d messages", n), func() bool {
		archive.mu.Lock()
		defer archive.mu.Unlock()
		return len(archive.frames) == n
	})
	recorder.Close()

	g, err := New(app, feeds, archive, Config{AllowAnonymous: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer func() {
		_ = g.Shutdown(context.Background())
		srv.Close()
		feeds.Close()
		checkNoGatewayGoroutines(t)
	}()
	c := dial(t, "ws://"+srv.Listener.Addr().String()+"/ws")
	c.send(`{"type":"join","game":"old","since":0}`)
	if head := c.expect("joined")["head"].(float64); head != n {
		t.Fatalf("head %v", head)
	}
	for want := 1; want <= n; want++ {
		m := c.next(10 * time.Second)
		if id(m) != uint64(want) || m["i"] != float64(want) {
			t.Fatalf("got %v, want msg_id %d", m, want)
		}
	}
	// Retention moves while a join reads the archive: new messages push
	// more old ones out of the stream before it reads the stream part.
	archive.mu.Lock()
	archive.during = func() {
		for i := 0; i < 5; i++ {
			if _, err := app.Append(context.Background(), "old", []byte(`{"type":"late"}`), ""); err != nil {
				t.Error(err)
			}
		}
	}
	archive.mu.Unlock()
	c3 := dial(t, "ws://"+srv.Listener.Addr().String()+"/ws")
	c3.send(`{"type":"join","game":"old","since":0}`)
	head := uint64(c3.expect("joined")["head"].(float64))
	for want := uint64(1); want <= head; want++ {
		if m := c3.next(10 * time.Second); id(m) != want {
			t.Fatalf("with retention moving: got %v, want msg_id %d", m, want)
		}
	}

	// Without the archive the same join is refused rather than gapped.
	g2, err := New(app, feeds, nil, Config{AllowAnonymous: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(g2)
	defer func() { _ = g2.Shutdown(context.Background()); srv2.Close() }()
	c2 := dial(t, "ws://"+srv2.Listener.Addr().String()+"/ws")
	c2.send(`{"type":"join","game":"old","since":0}`)
	c2.expect("joined")
	for {
		m := c2.next(10 * time.Second)
		if m["type"] == "error" {
			if m["code"] != "unavailable" {
				t.Fatalf("got %v", m)
			}
			break
		}
		if id(m) != 0 {
			t.Fatalf("delivered msg_id %v with history missing", m["msg_id"])
		}
	}
}
