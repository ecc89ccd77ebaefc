package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/gateway"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// testSecret is the token secret of the gateways tests start.
const testSecret = "bench-test-secret-0123456789abcdef"

// startGateway runs NATS, a sequencer and one gateway in process.
func startGateway(t *testing.T) string {
	t.Helper()
	return startGatewayWith(t, gateway.Config{AllowAnonymous: true})
}

// startGatewayWith is startGateway with the gateway's configuration
// (TokenSecret and Logger are set here).
func startGatewayWith(t *testing.T, gcfg gateway.Config) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns := embednats.Server(t)
	cfg := sequencer.Config{Logger: log}
	nc := embednats.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	if err := sequencer.Provision(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	svc, _ := sequencer.NewService(embednats.Connect(t, ns.ClientURL()), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx, time.Second); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	feeds, _ := sequencer.NewFeeds(nc, cfg, sequencer.FeedConfig{})
	gcfg.TokenSecret, gcfg.Logger = []byte(testSecret), log
	g, err := gateway.New(sequencer.NewClient(nc, cfg), feeds, nil, gcfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(func() {
		_ = g.Shutdown(context.Background())
		srv.Close()
		feeds.Close()
	})
	return "ws://" + srv.Listener.Addr().String() + "/ws"
}

func startReference(t *testing.T) string {
	t.Helper()
	return serveReference(t, NewReference(slog.New(slog.NewTextHandler(io.Discard, nil))))
}

func serveReference(t *testing.T, rf *Reference) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = rf.Serve(ctx, addr); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.WaitFor(t, 5*time.Second, "the reference relay to accept connections", func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return "ws://" + addr + "/ws"
}

func TestModesAgainstGatewayAndReference(t *testing.T) {
	gw, ref := startGateway(t), startReference(t)
	pid := os.Getpid()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"pingpong gateway", Config{URL: gw, Mode: "pingpong", Games: 3, Players: 2, Duration: 500 * time.Millisecond, ServerPIDs: []int{pid}}},
		{"pingpong reference", Config{URL: ref, Mode: "pingpong", Games: 3, Players: 2, Duration: 500 * time.Millisecond}},
		{"fanout with spectators", Config{URL: gw, Mode: "fanout", Games: 2, Players: 2, Spectators: 3, Rate: 50, Duration: 500 * time.Millisecond, TokenSecret: testSecret}},
		{"fanout to an audience", Config{URL: gw, Mode: "fanout", Games: 1, Players: 2, Spectators: 60, Inflight: 8, Rate: 20, Duration: 500 * time.Millisecond, TokenSecret: testSecret, ServerPIDs: []int{pid}}},
		{"fanout to an audience, reference", Config{URL: ref, Mode: "fanout", Games: 1, Players: 2, Spectators: 60, Inflight: 8, Rate: 20, Duration: 500 * time.Millisecond}},
		{"idle", Config{URL: gw, Mode: "idle", Conns: 50, Games: 5, Sources: 3, Duration: 100 * time.Millisecond, ServerPIDs: []int{pid}}},
		{"rejoin", Config{URL: gw, Mode: "rejoin", History: 300, Others: 500, Rejoins: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Run(context.Background(), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + r.String())
			if !r.OK() {
				t.Fatalf("verification failed: %+v", r)
			}
			switch tc.cfg.Mode {
			case "pingpong", "fanout":
				if r.Deliveries == 0 || r.GamesVerified != tc.cfg.Games || r.Own.Count == 0 {
					t.Fatalf("nothing measured: %+v", r)
				}
				// Every client gets every message (the run verified the
				// sequences up to the games' last message).
				if n := uint64(tc.cfg.Players + tc.cfg.Spectators); r.Deliveries != r.Sends*n {
					t.Fatalf("%d deliveries for %d sends to %d clients per game", r.Deliveries, r.Sends, n)
				}
				if s := tc.cfg.Spectators * tc.cfg.Games; s > 0 && (r.Join == nil || r.Join.Joined != s || r.Join.Latency.Count != uint64(s)) {
					t.Fatalf("spectators' joins: %+v", r.Join)
				}
			case "idle":
				if r.Connections != tc.cfg.Conns || r.ServerRSSBytes <= 0 {
					t.Fatalf("idle: %+v", r)
				}
			case "rejoin":
				if r.Replay == nil || r.Replay.Runs != 3 || r.Replay.Latency.P50 <= 0 {
					t.Fatalf("rejoin: %+v", r.Replay)
				}
			}
		})
	}
}

// The persisting reference stores every message it relays, in order, and
// relays none it could not store.
func TestReferencePersists(t *testing.T) {
	for _, mode := range []struct {
		name string
		new  func(context.Context, *nats.Conn, int) (func(string, []byte) error, error)
	}{{"one publish each", NewJetStreamPersist}, {"group commit", NewJetStreamGroupPersist}, {"checked", func(ctx context.Context, nc *nats.Conn, r int) (func(string, []byte) error, error) {
		return NewJetStreamCheckedPersist(ctx, nc, r, 1)
	}}} {
		t.Run(mode.name, func(t *testing.T) {
			ns := embednats.Server(t)
			nc := embednats.Connect(t, ns.ClientURL())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			persist, err := mode.new(ctx, nc, 1)
			if err != nil {
				t.Fatal(err)
			}
			rf := NewReference(slog.New(slog.NewTextHandler(io.Discard, nil)))
			var (
				fail         atomic.Bool
				stored, size atomic.Int64
			)
			rf.Persist = func(room string, frame []byte) error {
				if fail.Load() {
					return errors.New("store down")
				}
				err := persist(room, frame)
				if err == nil {
					stored.Add(1)
					size.Add(int64(len(frame)))
				}
				return err
			}
			url := serveReference(t, rf)
			r, err := Run(context.Background(), Config{URL: url, Mode: "pingpong", Games: 3, Players: 2, Duration: 300 * time.Millisecond})
			if err != nil || !r.OK() || r.Sends == 0 {
				t.Fatalf("pingpong: %v %+v", err, r)
			}
			js, _ := jetstream.New(nc)
			st, err := js.Stream(context.Background(), PersistStream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// Each message reached both players of its game; one still on
			// its way to the relay when the run ended may be unstored.
			if relayed := r.Deliveries / 2; uint64(stored.Load()) < relayed || uint64(stored.Load()) > r.Sends {
				t.Fatalf("stored %d frames; relayed %d of %d sent", stored.Load(), relayed, r.Sends)
			}
			// The stream holds every stored frame: one message each, or
			// several to a message.
			if info.State.Msgs == 0 || info.State.Msgs > uint64(stored.Load()) || info.State.Bytes < uint64(size.Load()) {
				t.Fatalf("stream holds %d messages, %d bytes, for %d frames of %d bytes", info.State.Msgs, info.State.Bytes, stored.Load(), size.Load())
			}
			// With the store refusing, nothing is relayed: pingpong stalls,
			// and the message sent never comes back.
			fail.Store(true)
			r, err = Run(context.Background(), Config{URL: url, Mode: "pingpong", Games: 1, Players: 1, Duration: 200 * time.Millisecond, Stall: 300 * time.Millisecond})
			if err == nil && (r.Deliveries != 0 || r.OK() || r.Unanswered != r.Sends) {
				t.Fatalf("relayed %d messages the store refused; %d of %d sent unanswered; OK %v", r.Deliveries, r.Unanswered, r.Sends, r.OK())
			}
		})
	}
}

// The checked floor sends gamerelay's two checks with every publish: a
// frame after another writer's message in its room is refused, and every
// stored frame names its room's previous one and has its own Nats-Msg-Id.
func TestCheckedPersistChecks(t *testing.T) {
	ns := embednats.Server(t)
	nc := embednats.Connect(t, ns.ClientURL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	persist, err := NewJetStreamCheckedPersist(ctx, nc, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		for _, room := range []string{"a", "b.c"} {
			if err := persist(room, []byte(fmt.Sprintf("%s-%d", room, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, PersistStream)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	prev := map[string]uint64{}
	for seq := uint64(1); seq <= 6; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		want := strconv.FormatUint(prev[m.Subject], 10)
		if got := m.Header.Get("Nats-Expected-Last-Subject-Sequence"); got != want {
			t.Fatalf("message %d (%s): expected last sequence %q, want %q", seq, m.Subject, got, want)
		}
		id := m.Header.Get("Nats-Msg-Id")
		if id == "" || ids[id] {
			t.Fatalf("message %d: Nats-Msg-Id %q missing or repeated", seq, id)
		}
		ids[id] = true
		prev[m.Subject] = seq
	}
	if _, err := js.Publish(ctx, "bench.reference.a", []byte("another writer")); err != nil {
		t.Fatal(err)
	}
	if err := persist("a", []byte("a-3")); err == nil || !strings.Contains(err.Error(), "wrong last sequence") {
		t.Fatalf("frame after another writer's message: %v, want wrong last sequence", err)
	}
	if err := persist("b.c", []byte("b.c-3")); err != nil {
		t.Fatalf("the other room: %v", err)
	}
}

// With partitions, the checked floor spreads the rooms over that many
// streams as gamerelay spreads games, each room on its partition's stream.
func TestCheckedPersistPartitions(t *testing.T) {
	ns := embednats.Server(t)
	nc := embednats.Connect(t, ns.ClientURL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const parts = 4
	persist, err := NewJetStreamCheckedPersist(ctx, nc, 1, parts)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]uint64, parts)
	for i := range 40 {
		room := "room-" + strconv.Itoa(i)
		for j := range 2 {
			if err := persist(room, []byte(fmt.Sprintf("%s-%d", room, j))); err != nil {
				t.Fatal(err)
			}
		}
		want[wire.Partition(room, parts)] += 2
	}
	js, _ := jetstream.New(nc)
	for p := range parts {
		st, err := js.Stream(ctx, PersistStream+"_"+strconv.Itoa(p))
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != want[p] || want[p] == 0 {
			t.Fatalf("stream %d holds %d messages, want %d (rooms spread as gamerelay spreads games)", p, info.State.Msgs, want[p])
		}
	}
}

// The verifier itself must catch what it exists to catch.
func TestVerificationDetectsDivergence(t *testing.T) {
	a := &bclient{entries: []entry{{1, 10}, {2, 20}, {3, 30}}}
	b := &bclient{entries: []entry{{2, 20}, {3, 30}}}
	if !sameSequence([]*bclient{a, b}) {
		t.Fatal("identical overlap reported as mismatch")
	}
	e := &bclient{entries: []entry{{2, 20}, {3, 30}, {4, 40}}}
	if sameSequence([]*bclient{a, e}) {
		t.Fatal("a client that stopped before the game's last message not detected")
	}
	c := &bclient{entries: []entry{{2, 20}, {3, 31}}}
	if sameSequence([]*bclient{a, c}) {
		t.Fatal("different message at msg_id 3 not detected")
	}
	d := &bclient{entries: []entry{{1, 10}, {3, 30}}}
	if sameSequence([]*bclient{a, d}) {
		t.Fatal("missing msg_id 2 not detected")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := newHist()
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Microsecond, 0.99: 990 * time.Microsecond} {
		got := h.quantile(q)
		if got < want*97/100 || got > want*103/100 {
			t.Fatalf("q%.2f = %v, want about %v", q, got, want)
		}
	}
	if h.max != time.Millisecond {
		t.Fatalf("max %v", h.max)
	}
}

// TestShortSecret: Run refuses an HS256 secret under 32 bytes before it
// connects anywhere, and does not show it.
func TestShortSecret(t *testing.T) {
	secret := testSecret[:31]
	_, err := Run(context.Background(), Config{URL: "ws://127.0.0.1:1/ws", Mode: "pingpong", TokenSecret: secret})
	if err == nil || !strings.Contains(err.Error(), "--token-secret") || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v, want one naming --token-secret without the secret", err)
	}
}

// A run is verified once everything sent was delivered: a server still
// holding messages when the senders stop is waited for, even through a
// pause longer than the 300 ms that count as quiet, and the time until
// its last delivery is the run's drain.
func TestRunWaitsForTheBacklog(t *testing.T) {
	rf := NewReference(slog.New(slog.NewTextHandler(io.Discard, nil)))
	var calls atomic.Int64
	rf.Persist = func(string, []byte) error {
		if calls.Add(1) == 1 {
			time.Sleep(900 * time.Millisecond) // the first message is stored late
		}
		return nil
	}
	url := serveReference(t, rf)
	r, err := Run(context.Background(), Config{URL: url, Mode: "fanout", Games: 1, Players: 2, Rate: 50, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Sends == 0 || r.Deliveries != 2*r.Sends {
		t.Fatalf("%s", r)
	}
	if r.Drain < 500*time.Millisecond {
		t.Fatalf("drain %v, want the time after the last send the held messages took", r.Drain)
	}
}
