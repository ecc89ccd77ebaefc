package sequencer

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// The memory benchmarks measure what the capacity model in
// docs/capacity.md needs and no load run shows: what a game, an entry of
// the duplicate window and a hosted game's feed cost in memory. The NATS
// servers run in the test process, so their heap is this process's heap:
// each figure is the live heap (after a forced GC) with a thing minus
// without it, divided by how many were added. Run them once:
//
//	go test -run '^$' -bench Memory -benchtime 1x ./sequencer/

// memMessages is how many messages the stream benchmarks store per variant.
const memMessages = 20_000

// liveHeap returns the bytes of live heap objects after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// memStreamCluster runs replicas JetStream servers (1: a single server, 3:
// a cluster in this process) with gamerelay's log provisioned in one
// partition; stop shuts them down.
func memStreamCluster(b *testing.B, replicas int) (servers []*server.Server, url string, cfg Config, stop func()) {
	b.Helper()
	cfg = Config{Namespace: "mem", Partitions: 1, Replicas: replicas, Logger: quiet()}
	if replicas == 1 {
		s, err := embednats.Run(embednats.Options{StoreDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		servers, url, stop = []*server.Server{s}, s.ClientURL(), func() { s.Shutdown(); s.WaitForShutdown() }
	} else {
		c := embednats.NewCluster(b, replicas)
		servers, url, stop = c.Servers, c.URLs(), c.Shutdown
	}
	nc, err := nats.Connect(url)
	if err != nil {
		stop()
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		stop()
		b.Fatal(err)
	}
	if err := Provision(context.Background(), js, cfg); err != nil {
		stop()
		b.Fatal(err)
	}
	return servers, url, cfg, stop
}

// replicaState returns the state of stream on each server.
func replicaState(b *testing.B, servers []*server.Server, stream string) []server.StreamState {
	b.Helper()
	out := make([]server.StreamState, len(servers))
	for i, s := range servers {
		info, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
		if err != nil {
			b.Fatal(err)
		}
		for _, acc := range info.AccountDetails {
			for _, sd := range acc.Streams {
				if sd.Name == stream {
					out[i] = sd.State
				}
			}
		}
	}
	return out
}

// storedHeap stores memMessages messages in partition 0 of a new log on
// replicas servers, message i on the game game(i) with header hdr set to
// key(i), and returns how much the live heap grew, summed over the
// servers (they share this process), once every replica holds them all,
// and the bytes one replica stores per message. The body and the other
// headers are those of a typical stored message.
func storedHeap(b *testing.B, replicas int, game func(int) string, hdr string, key func(int) string) (heap int64, msgBytes float64) {
	b.Helper()
	servers, url, cfg, stop := memStreamCluster(b, replicas)
	defer stop()
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		b.Fatal(err)
	}
	names := cfg.names()
	body := []byte(`{"type":"move","col":3,"player":"p1","note":"a typical small game message","msg_id":1234,"ts":1795310019000}`)

	before := liveHeap()
	for i := 0; i < memMessages; i++ {
		m := nats.NewMsg(names.LogSubject(0, game(i)))
		m.Data = body
		m.Header.Set(wire.HdrMsgID, "1234")
		m.Header.Set(hdr, key(i))
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishes not acknowledged within a minute")
	}
	stream := names.Stream(0)
	var st []server.StreamState
	testutil.WaitFor(b, 30*time.Second, "every replica holds every message", func() bool {
		st = replicaState(b, servers, stream)
		for _, s := range st {
			if s.Msgs != memMessages {
				return false
			}
		}
		return true
	})
	return liveHeap() - before, float64(st[0].Bytes) / memMessages
}

// gameName returns a game id of fixed length, so that subjects of one
// game and of many take the same bytes in every message.
func gameName(i int) string { return fmt.Sprintf("game-%07d", i) }

// msgKey returns a Nats-Msg-Id as long as the gateway's for a player with
// a token: the game, then "u:", 24 hex digits of the user and the
// client's idem.
func msgKey(i int) string { return fmt.Sprintf("%s/u:0123456789abcdef01234567:%08x", gameName(i), i) }

// notDedupHdr is a header as long as Nats-Msg-Id that JetStream stores
// without remembering it.
const notDedupHdr = "Gr-NoDup-Id"

// BenchmarkStreamMemorySubjects: what one more game (a subject of its own)
// costs a partition stream's servers, beyond its messages: memMessages
// messages on as many games, less the same messages on one game. The
// difference is the stream's per-subject index and the per-subject state
// of the message block holding them, on every replica. B/subject is that
// over the whole cluster; B/subject/replica one server's share.
func BenchmarkStreamMemorySubjects(b *testing.B) {
	for _, r := range []int{1, 3} {
		b.Run(fmt.Sprintf("R%d", r), func(b *testing.B) {
			var perSubject float64
			for i := 0; i < b.N; i++ {
				many, _ := storedHeap(b, r, gameName, wire.HdrAnchor, func(int) string { return "4711" })
				one, _ := storedHeap(b, r, func(int) string { return gameName(0) }, wire.HdrAnchor, func(int) string { return "4711" })
				perSubject += float64(many-one) / memMessages
			}
			perSubject /= float64(b.N)
			b.ReportMetric(perSubject, "B/subject")
			b.ReportMetric(perSubject/float64(r), "B/subject/replica")
		})
	}
}

// BenchmarkStreamMemoryMsgIDs: what one entry of a stream's duplicate
// window costs its servers: memMessages messages with a unique
// Nats-Msg-Id each, less the same messages with a header of the same
// length that JetStream does not remember. gamerelay sends a Nats-Msg-Id
// with every append, and JetStream keeps each for the duplicate window (2
// minutes), on every replica. The keys are msgKey's, 45 bytes.
// B/stored-msg/replica is what one replica's file store counts for each of
// these messages (subject, headers, body and its record's framing).
func BenchmarkStreamMemoryMsgIDs(b *testing.B) {
	if len(notDedupHdr) != len(nats.MsgIdHdr) {
		b.Fatalf("%s and %s differ in length", notDedupHdr, nats.MsgIdHdr)
	}
	for _, r := range []int{1, 3} {
		b.Run(fmt.Sprintf("R%d", r), func(b *testing.B) {
			var perID, stored float64
			for i := 0; i < b.N; i++ {
				games := func(i int) string { return gameName(i % 1000) }
				ids, size := storedHeap(b, r, games, nats.MsgIdHdr, msgKey)
				none, _ := storedHeap(b, r, games, notDedupHdr, msgKey)
				perID += float64(ids-none) / memMessages
				stored += size
			}
			perID /= float64(b.N)
			b.ReportMetric(perID, "B/msgid")
			b.ReportMetric(perID/float64(r), "B/msgid/replica")
			b.ReportMetric(stored/float64(b.N), "B/stored-msg/replica")
		})
	}
}

// BenchmarkFeedMemory: what a game hosted on a gateway costs in the
// gateway's process: its Feed (a core NATS subscription to the game's live
// subject, with the server's side of it, which runs in this process too)
// with one subscriber, and the feed's cache of the game's last 1,024
// messages (at most 1 MiB of bodies; a live copy's buffer holds its
// headers with the body). Each of games games gets a message; then a feed
// is opened for each (B/feed: a feed with nothing cached); then each game
// gets msgs more messages, which the feeds deliver and cache, and the
// feeds are closed: what that frees, per feed, is B/feed-cached, and less
// an empty feed's cost, per message, B/cached-msg. With 1,100 messages the
// cache is full: its slice holds up to twice the messages it keeps.
func BenchmarkFeedMemory(b *testing.B) {
	for _, tc := range []struct{ games, msgs int }{{1000, 64}, {100, 1100}} {
		b.Run(fmt.Sprintf("games=%d/msgs=%d", tc.games, tc.msgs), func(b *testing.B) {
			var empty, cached float64
			for i := 0; i < b.N; i++ {
				e, c := feedHeap(b, tc.games, tc.msgs)
				empty += e
				cached += c
			}
			empty /= float64(b.N)
			cached /= float64(b.N)
			b.ReportMetric(empty, "B/feed")
			b.ReportMetric(cached, "B/feed-cached")
			b.ReportMetric((cached-empty)/float64(min(tc.msgs, 1024)), "B/cached-msg")
		})
	}
}

// feedHeap returns the live heap per feed with nothing cached and with
// msgs messages delivered (see BenchmarkFeedMemory).
func feedHeap(b *testing.B, games, msgs int) (empty, cached float64) {
	b.Helper()
	_, url, cfg, stop := memStreamCluster(b, 1)
	defer stop()
	ctx := context.Background()
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	a, err := NewAppender(ctx, nc, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close(ctx)
	body := []byte(`{"type":"move","col":3,"player":"p1","note":"a typical small game message"}`)
	appendAll := func(n int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 512)
		for k := 0; k < n; k++ {
			for g := 0; g < games; g++ {
				sem <- struct{}{}
				wg.Add(1)
				if err := a.AppendAsync(gameName(g), body, "", func(_ Result, err error) {
					if err != nil {
						b.Error(err)
					}
					<-sem
					wg.Done()
				}); err != nil {
					b.Fatal(err)
				}
			}
		}
		wg.Wait()
	}
	appendAll(1)

	fnc, err := nats.Connect(url, nats.NoEcho())
	if err != nil {
		b.Fatal(err)
	}
	defer fnc.Close()
	fs, err := NewFeeds(fnc, cfg, FeedConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Close()

	feeds := make([]*Feed, games)
	h0 := liveHeap()
	for g := range feeds {
		f, err := fs.Open(ctx, gameName(g))
		if err != nil {
			b.Fatal(err)
		}
		f.Subscribe(func(Stored) {})
		feeds[g] = f
	}
	h1 := liveHeap()

	appendAll(msgs)
	testutil.WaitFor(b, time.Minute, "every feed delivered every message", func() bool {
		for _, f := range feeds {
			if f.Last() != uint64(msgs+1) {
				return false
			}
		}
		return true
	})
	h2 := liveHeap()
	for g, f := range feeds {
		f.Close()
		feeds[g] = nil // a closed feed keeps its cache until it is unreachable
	}
	h3 := liveHeap()

	return float64(h1-h0) / float64(games), float64(h2-h3) / float64(games)
}
