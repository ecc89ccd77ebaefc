package sequencer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// TestClusterLeaderFailover appends steadily to R3 streams on a 3-node
// cluster while the stream leader steps down and then dies. Every
// acknowledged append must be stored once, numbers dense, and feeds must
// deliver every game gap-free and without duplicates, whether they get
// messages by live copies or in process.
func TestClusterLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover test is slow; run without -short")
	}
	c := embednats.NewCluster(t, 3)
	cfg := Config{Partitions: 1, Replicas: 3, BatchMin: 2, Logger: quiet(), RequestTimeout: 2 * time.Second}
	connect := func() *nats.Conn {
		return embednats.Connect(t, c.URLs(), nats.RetryOnFailedConnect(true))
	}
	nc := connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	stream := wire.Names{}.Stream(0)
	testutil.WaitFor(t, 20*time.Second, "stream leader", func() bool { return c.StreamLeader(stream) >= 0 })

	apps := make([]*Appender, 2)
	for i := range apps {
		a, err := NewAppender(ctx, connect(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close(context.Background())
		apps[i] = a
	}

	// Feeds on every node, re-checking heads after reconnects as the
	// gateway does. The first gets the first appender's messages in
	// process, as a gateway with an embedded sequencer does.
	const games = 4
	recs := make([][games]recorder, 2)
	for i := range recs {
		var opts []nats.Option
		if i == 0 {
			opts = append(opts, nats.NoEcho())
		}
		fnc := embednats.Connect(t, c.URLs(), opts...)
		fs, err := NewFeeds(fnc, cfg, FeedConfig{CheckAfter: 100 * time.Millisecond, SweepInterval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer fs.Close()
		if i == 0 {
			apps[0].live, apps[0].feeds = fnc, fs
		}
		for g := 0; g < games; g++ {
			f, err := fs.Open(ctx, fmt.Sprintf("fo%d", g))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Subscribe(recs[i][g].add(t))
		}
	}

	var (
		mu    sync.Mutex
		acked = make([]map[string]uint64, games)
		stop  atomic.Bool
		wg    sync.WaitGroup
		count atomic.Int64
	)
	for g := range acked {
		acked[g] = map[string]uint64{}
	}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			g := w % games
			game := fmt.Sprintf("fo%d", g)
			for i := 0; !stop.Load(); i++ {
				tag := fmt.Sprintf("w%d-%d", w, i)
				// Retry with the same key until acknowledged, as a gateway does.
				for {
					actx, cancel := context.WithTimeout(ctx, 10*time.Second)
					r, err := apps[w%2].Append(actx, game, body(tag), tag)
					cancel()
					if err == nil {
						mu.Lock()
						acked[g][tag] = r.MsgID
						mu.Unlock()
						count.Add(1)
						break
					}
					if stop.Load() {
						return
					}
				}
			}
		}(w)
	}
	progress := func(n int64, what string) {
		start := count.Load()
		testutil.WaitFor(t, 30*time.Second, what, func() bool { return count.Load() >= start+n })
	}
	progress(200, "initial load")

	// 1. Leader step-down.
	leader := c.StreamLeader(stream)
	if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "new leader", func() bool { l := c.StreamLeader(stream); return l >= 0 && l != leader })
	progress(200, "appends after step-down")

	// 2. Kill the leader.
	leader = c.StreamLeader(stream)
	c.Kill(leader)
	testutil.WaitFor(t, 30*time.Second, "leader after kill", func() bool { l := c.StreamLeader(stream); return l >= 0 && l != leader })
	progress(200, "appends after leader death")
	c.Restart(leader)
	progress(100, "appends after restart")
	stop.Store(true)
	wg.Wait()

	r := NewReader(connect(), cfg)
	for g := 0; g < games; g++ {
		game := fmt.Sprintf("fo%d", g)
		var msgs []Stored
		var newest uint64 // highest acknowledged msg_id
		for _, id := range acked[g] {
			newest = max(newest, id)
		}
		// Direct Get may be answered by a replica still catching up (the
		// restarted node): read until the head covers every acknowledged
		// message; checkDense below judges what was read.
		testutil.WaitFor(t, 25*time.Second, fmt.Sprintf("game %s read up to msg_id %d, the newest acknowledged", game, newest), func() bool {
			head, ok, err := r.Head(ctx, game)
			if err != nil || !ok || head.ID < newest {
				return false
			}
			msgs = msgs[:0]
			if r.Range(ctx, game, 0, head.ID, nil, func(m Stored) error { msgs = append(msgs, m); return nil }) != nil {
				return false
			}
			return uint64(len(msgs)) >= newest
		})
		checkDense(t, msgs, acked[g])
		for i := range recs {
			rec := &recs[i][g]
			testutil.WaitFor(t, 30*time.Second, "feed complete", func() bool { ids, _ := rec.snapshot(); return len(ids) >= len(msgs) })
			ids, tags := rec.snapshot()
			if len(ids) != len(msgs) {
				t.Fatalf("feed %d game %d delivered %d, stored %d", i, g, len(ids), len(msgs))
			}
			for k := range ids {
				want, _ := tagOf(t, msgs[k].Data)
				if ids[k] != uint64(k+1) || tags[k] != want {
					t.Fatalf("feed %d game %d position %d: msg_id %d tag %s, want %d %s", i, g, k, ids[k], tags[k], k+1, want)
				}
			}
		}
		t.Logf("game %s: %d messages, all feeds identical", game, len(msgs))
	}
}
