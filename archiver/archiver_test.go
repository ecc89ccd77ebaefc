package archiver

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/gamerelay/gamerelay/internal/embedmongo"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env is an embedded NATS JetStream with the log provisioned, an embedded
// FerretDB, and clients for both.
type env struct {
	t      *testing.T
	url    string
	seq    sequencer.Config
	app    *sequencer.Appender
	mdir   string
	mongo  *embedmongo.Server
	client *mongo.Client
	db     *mongo.Database
}

func newEnv(t *testing.T, seq sequencer.Config) *env {
	t.Helper()
	seq.Logger = quiet()
	s := embednats.Server(t)
	e := &env{t: t, url: s.ClientURL(), seq: seq, mdir: t.TempDir()}
	nc := e.conn()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := sequencer.Provision(context.Background(), js, seq); err != nil {
		t.Fatal(err)
	}
	e.app, err = sequencer.NewAppender(context.Background(), nc, seq)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.app.Close(context.Background()) })
	e.mongo, err = embedmongo.Start(embedmongo.Options{Dir: e.mdir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.mongo.Stop() })
	e.client, err = mongo.Connect(options.Client().ApplyURI(e.mongo.URI()).SetServerSelectionTimeout(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.client.Disconnect(context.Background()) })
	e.db = e.client.Database("gamerelay")
	return e
}

func (e *env) conn() *nats.Conn { return embednats.Connect(e.t, e.url) }

// config is an archiver configuration for this env, tuned for fast tests.
func (e *env) config() Config {
	return Config{
		Partitions: e.seq.Partitions,
		BatchSize:  64,
		BatchWait:  50 * time.Millisecond,
		AckWait:    2 * time.Second,
		MaxBackoff: 200 * time.Millisecond,
		Logger:     quiet(),
		Metrics:    NewMetrics(nil),
	}
}

// running is an archiver started by start.
type running struct {
	*Archiver
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result, once done
}

// stop cancels the archiver and waits for Run to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("Run: %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// start runs an archiver until the test ends (or stop).
func (e *env) start(cfg Config, hook func(*Archiver)) *running {
	e.t.Helper()
	return e.startWith(e.client, cfg, hook)
}

// startWith runs an archiver writing through client until the test ends
// (or stop).
func (e *env) startWith(client *mongo.Client, cfg Config, hook func(*Archiver)) *running {
	e.t.Helper()
	a, err := New(e.conn(), client, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	a.infoEvery = 100 * time.Millisecond
	if hook != nil {
		hook(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Archiver: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = a.Run(ctx)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-r.done
	})
	testutil.WaitFor(e.t, 20*time.Second, "archiver ready", a.Ready)
	return r
}

// appendN appends n messages to each game, games in parallel, each game's
// messages from players p0..p2 in turn. It returns every game's frames by
// msg_id (index 0 = msg_id 1).
func (e *env) appendN(games []string, n int) map[string][][]byte {
	e.t.Helper()
	var wg sync.WaitGroup
	for _, g := range games {
		wg.Go(func() {
			for i := 0; i < n; i++ {
				body := fmt.Sprintf(`{"type":"move","i":%d,"client_id":"c%d","user":"p%d"}`, i, i%3, i%3)
				if _, err := e.app.Append(context.Background(), g, []byte(body), ""); err != nil {
					e.t.Errorf("append %s: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e.t.Failed() {
		e.t.FailNow()
	}
	return e.frames(games...)
}

// frames returns every stored frame of the games, by msg_id (index 0 =
// msg_id 1, or the oldest msg_id the stream still holds).
func (e *env) frames(games ...string) map[string][][]byte {
	e.t.Helper()
	out := make(map[string][][]byte)
	r := sequencer.NewReader(e.conn(), e.seq)
	for _, g := range games {
		head, ok, err := r.Head(context.Background(), g)
		if err != nil || !ok {
			e.t.Fatalf("head of %s: %v %v", g, ok, err)
		}
		read := func(m sequencer.Stored) error {
			out[g] = append(out[g], m.Data)
			return nil
		}
		err = r.Range(context.Background(), g, 0, head.ID, nil, read)
		var te *sequencer.TruncatedError
		if errors.As(err, &te) {
			err = r.Range(context.Background(), g, te.FirstID-1, head.ID, nil, read)
		}
		if err != nil {
			e.t.Fatalf("read %s: %v", g, err)
		}
	}
	return out
}

func (e *env) count(filter bson.D) int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := e.db.Collection(MessagesCollection).CountDocuments(ctx, filter)
	if err != nil {
		return -1
	}
	return n
}

// waitCount waits until the archive holds n messages and every partition's
// consumer has nothing pending or unacknowledged (so the games collection
// is complete too), then checks that it holds exactly n.
func (e *env) waitCount(n int64) {
	e.t.Helper()
	testutil.WaitFor(e.t, 30*time.Second, fmt.Sprintf("%d archived messages", n), func() bool { return e.count(bson.D{}) >= n })
	js, err := jetstream.New(e.conn())
	if err != nil {
		e.t.Fatal(err)
	}
	testutil.WaitFor(e.t, 30*time.Second, "consumers settled", func() bool {
		for p := range e.seq.Partitions {
			c, err := js.Consumer(context.Background(), wire.Names{}.Stream(p), "archiver")
			if err != nil {
				return false
			}
			info, err := c.Info(context.Background())
			if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
				return false
			}
		}
		return true
	})
	if got := e.count(bson.D{}); got != n {
		e.t.Fatalf("%d archived messages, want exactly %d", got, n)
	}
}

// checkGame verifies that the archive holds exactly msg_id 1..len(frames)
// of game with the exact frames, and that the games summary matches.
func (e *env) checkGame(game string, frames [][]byte) {
	e.t.Helper()
	e.checkMessages(game, frames, true)
}

// checkMessages verifies that the archive holds exactly msg_id
// 1..len(frames) of game with the exact frames, and the games summary if
// summary is set.
func (e *env) checkMessages(game string, frames [][]byte, summary bool) {
	e.t.Helper()
	ctx := context.Background()
	cur, err := e.db.Collection(MessagesCollection).Find(ctx, bson.D{{Key: "game", Value: game}},
		options.Find().SetSort(bson.D{{Key: "msg_id", Value: 1}}))
	if err != nil {
		e.t.Fatal(err)
	}
	var docs []struct {
		MsgID    int64         `bson:"msg_id"`
		TS       bson.DateTime `bson:"ts"`
		ClientID string        `bson:"client_id"`
		User     string        `bson:"user"`
		Type     string        `bson:"type"`
		Raw      string        `bson:"raw"`
		Body     bson.M        `bson:"body"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		e.t.Fatal(err)
	}
	if len(docs) != len(frames) {
		e.t.Fatalf("game %s: %d documents, want %d", game, len(docs), len(frames))
	}
	players := map[string]bool{}
	first, last := docs[0].TS, docs[0].TS
	for i, d := range docs {
		if d.MsgID != int64(i+1) {
			e.t.Fatalf("game %s: document %d has msg_id %d", game, i, d.MsgID)
		}
		if d.Raw != string(frames[i]) {
			e.t.Fatalf("game %s msg_id %d: raw %q, stored frame %q", game, d.MsgID, d.Raw, frames[i])
		}
		var f struct {
			Type     string `json:"type"`
			ClientID string `json:"client_id"`
			User     string `json:"user"`
			TS       int64  `json:"ts"`
		}
		if err := json.Unmarshal(frames[i], &f); err != nil {
			e.t.Fatal(err)
		}
		if d.Type != f.Type || d.ClientID != f.ClientID || d.User != f.User || int64(d.TS) != f.TS {
			e.t.Fatalf("game %s msg_id %d: fields %+v, frame %s", game, d.MsgID, d, frames[i])
		}
		if d.Body["type"] != f.Type || d.Body["msg_id"] != int64(i+1) {
			e.t.Fatalf("game %s msg_id %d: body %v", game, d.MsgID, d.Body)
		}
		if p := cmp.Or(f.User, f.ClientID); p != "" {
			players[p] = true
		}
		first, last = min(first, d.TS), max(last, d.TS)
	}
	if !summary {
		return
	}
	g, err := NewArchive(e.client, "gamerelay").Game(ctx, game)
	if err != nil {
		e.t.Fatal(err)
	}
	want := slices.Sorted(maps.Keys(players))
	sort.Strings(g.Players)
	if g.FirstMsgID != 1 || g.LastMsgID != int64(len(frames)) || g.FirstTS != first || g.LastTS != last ||
		!slices.Equal(g.Players, want) || g.Partition != wire.Partition(game, e.seq.Partitions) {
		e.t.Fatalf("game %s summary %+v; want msg_id 1..%d, ts %v..%v, players %v", game, g, len(frames), first, last, want)
	}
}

func gameNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// TestArchivesEveryMessageOnce: N messages over several games in two
// partitions become exactly N documents, dense per game, with the right
// games summaries, metrics and end marker.
func TestArchivesEveryMessageOnce(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 2})
	games := gameNames("g", 4)
	frames := e.appendN(games, 40)
	// A system message ends game g-0; a player's "game_ended" does not end g-1.
	for _, a := range []struct{ game, body string }{
		{"g-0", `{"type":"game_ended","client_id":"","winner":"p1"}`},
		{"g-1", `{"type":"game_ended","client_id":"c9","user":"p9"}`},
	} {
		if _, err := e.app.Append(context.Background(), a.game, []byte(a.body), ""); err != nil {
			t.Fatal(err)
		}
	}
	maps.Copy(frames, e.frames("g-0", "g-1"))
	cfg := e.config()
	r := e.start(cfg, nil)
	e.waitCount(4*40 + 2)
	for _, g := range games {
		e.checkGame(g, frames[g])
	}
	ctx := context.Background()
	a := NewArchive(e.client, "gamerelay")
	g0, _ := a.Game(ctx, "g-0")
	g1, _ := a.Game(ctx, "g-1")
	if g0.EndedAt == nil || *g0.EndedAt != g0.LastTS {
		t.Fatalf("g-0 ended_at %v, want %v", g0.EndedAt, g0.LastTS)
	}
	if g1.EndedAt != nil {
		t.Fatalf("g-1 ended by a player's message: %v", g1.EndedAt)
	}
	if got := promtest.ToFloat64(cfg.Metrics.Archived); got != 4*40+2 {
		t.Fatalf("archived_total %v", got)
	}
	if got := promtest.ToFloat64(cfg.Metrics.Duplicates); got != 0 {
		t.Fatalf("duplicates_total %v", got)
	}
	testutil.WaitFor(t, 10*time.Second, "pending gauges at 0", func() bool {
		return promtest.ToFloat64(cfg.Metrics.ConsumerPending.WithLabelValues("0")) == 0 &&
			promtest.ToFloat64(cfg.Metrics.ConsumerPending.WithLabelValues("1")) == 0 &&
			promtest.ToFloat64(cfg.Metrics.AckPending.WithLabelValues("0")) == 0 &&
			promtest.ToFloat64(cfg.Metrics.Lag.WithLabelValues("1")) == 0
	})
	if promtest.CollectAndCount(cfg.Metrics.BatchSize) != 1 {
		t.Fatal("batch size histogram missing")
	}

	// Messages appended while it runs are archived too; SIGTERM-like stop.
	more := e.appendN([]string{"g-3"}, 41)
	e.waitCount(4*40 + 2 + 41)
	e.checkGame("g-3", more["g-3"])
	r.stop(t)
	if r.Ready() {
		t.Fatal("Ready after Run returned")
	}
	idx, err := e.db.Collection(MessagesCollection).Indexes().ListSpecifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range idx {
		names = append(names, s.Name)
		if s.Name == "game_msg_id" && (s.Unique == nil || !*s.Unique) {
			t.Fatal("game_msg_id index is not unique")
		}
	}
	sort.Strings(names)
	if !slices.Equal(names, []string{"_id_", "game_msg_id", "ts", "type_ts"}) {
		t.Fatalf("indexes %v", names)
	}
}

// TestCrashMidBatchNoLossNoDuplicate: an archiver dies after inserting a
// batch but before updating games and acking it; a new archiver gets the
// batch again and the archive ends with every message exactly once.
func TestCrashMidBatchNoLossNoDuplicate(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 1})
	games := gameNames("c", 3)
	frames := e.appendN(games, 50)

	crashed := make(chan struct{})
	cfgA := e.config()
	a := e.start(cfgA, func(a *Archiver) {
		a.crashAfterInsert = func(int) error {
			close(crashed)
			return errCrashed
		}
	})
	select {
	case <-crashed:
	case <-time.After(20 * time.Second):
		t.Fatal("first batch never written")
	}
	a.stop(t)
	inserted := e.count(bson.D{})
	if inserted == 0 || inserted == 150 {
		t.Fatalf("%d messages inserted before the crash; want a partial archive", inserted)
	}
	if n, _ := e.db.Collection(GamesCollection).CountDocuments(context.Background(), bson.D{}); n != 0 {
		t.Fatalf("games updated before the crash: %d", n)
	}

	cfgB := e.config()
	e.start(cfgB, nil)
	e.waitCount(150)
	for _, g := range games {
		e.checkGame(g, frames[g])
	}
	if got := promtest.ToFloat64(cfgB.Metrics.Archived) + promtest.ToFloat64(cfgA.Metrics.Archived); got != 150 {
		t.Fatalf("archived_total %v over both archivers, want 150", got)
	}
	if got := promtest.ToFloat64(cfgB.Metrics.Duplicates); got != float64(inserted) {
		t.Fatalf("duplicates_total %v, want the %d redelivered messages", got, inserted)
	}
}

// TestMongoOutageBacklogArchived: while MongoDB is down the archiver keeps
// retrying without acking; after MongoDB is back (same data, same port) the
// backlog is archived completely.
func TestMongoOutageBacklogArchived(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 2})
	games := gameNames("o", 3)
	cfg := e.config()
	e.start(cfg, nil)
	e.appendN(games, 10)
	e.waitCount(30)

	addr := e.mongo.Addr()
	e.mongo.Stop()
	frames := e.appendN(games, 20)
	testutil.WaitFor(t, 20*time.Second, "failed write attempts", func() bool {
		return promtest.ToFloat64(cfg.Metrics.WriteErrors) >= 1
	})
	lag := func() float64 {
		return max(promtest.ToFloat64(cfg.Metrics.Lag.WithLabelValues("0")), promtest.ToFloat64(cfg.Metrics.Lag.WithLabelValues("1")))
	}
	testutil.WaitFor(t, 20*time.Second, "lag growing during the outage", func() bool { return lag() > 1 })
	var err error
	e.mongo, err = embedmongo.Start(embedmongo.Options{Dir: e.mdir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.mongo.Stop)
	e.waitCount(3 * 30)
	for _, g := range games {
		e.checkGame(g, frames[g])
	}
	testutil.WaitFor(t, 10*time.Second, "lag back to 0", func() bool { return lag() == 0 })
	if got := promtest.ToFloat64(cfg.Metrics.Archived); got != 3*30 {
		t.Fatalf("archived_total %v, want %d", got, 3*30)
	}
}

// TestNumberReuseKeptAsConflict: if the archive already holds a game's
// msg_id for another stream message (numbers reused), the new message is
// neither dropped as a duplicate nor overwrites the old one: it goes to the
// conflicts collection.
func TestNumberReuseKeptAsConflict(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 1})
	ctx := context.Background()
	old := bson.D{{Key: "game", Value: "reuse"}, {Key: "msg_id", Value: int64(1)}, {Key: "ts", Value: bson.DateTime(1)},
		{Key: "client_id", Value: ""}, {Key: "type", Value: "old"}, {Key: "raw", Value: `{"type":"old","msg_id":1,"ts":1}`},
		{Key: "seq", Value: int64(999)}, {Key: "partition", Value: int32(0)}}
	if _, err := e.db.Collection(MessagesCollection).InsertOne(ctx, old); err != nil {
		t.Fatal(err)
	}
	frames := e.appendN([]string{"reuse"}, 2)["reuse"]
	cfg := e.config()
	e.start(cfg, nil)
	e.waitCount(2)
	var kept struct {
		Type string `bson:"type"`
	}
	if err := e.db.Collection(MessagesCollection).FindOne(ctx, bson.D{{Key: "game", Value: "reuse"}, {Key: "msg_id", Value: int64(1)}}).Decode(&kept); err != nil || kept.Type != "old" {
		t.Fatalf("archived msg_id 1: %+v, %v", kept, err)
	}
	var conflicts []struct {
		MsgID int64  `bson:"msg_id"`
		Raw   string `bson:"raw"`
	}
	cur, err := e.db.Collection(ConflictsCollection).Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.All(ctx, &conflicts); err != nil {
		t.Fatal(err)
	}
	if len(conflicts) != 1 || conflicts[0].MsgID != 1 || conflicts[0].Raw != string(frames[0]) {
		t.Fatalf("conflicts %+v", conflicts)
	}
	if c, d := promtest.ToFloat64(cfg.Metrics.Conflicts), promtest.ToFloat64(cfg.Metrics.Duplicates); c != 1 || d != 0 {
		t.Fatalf("conflicts_total %v, duplicates_total %v; want 1, 0", c, d)
	}
}

// TestTwoReplicasExactlyOnce: two archivers share the durable consumers
// while messages arrive; every message is inserted by exactly one of them.
// The games summaries are not checked here: FerretDB v1 applies updates as
// read-modify-write without a transaction, so concurrent updates of one
// game's summary by two archivers can lose one there (MongoDB applies each
// single-document update atomically).
func TestTwoReplicasExactlyOnce(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 2})
	games := gameNames("r", 6)
	cfgA, cfgB := e.config(), e.config()
	cfgA.BatchSize, cfgB.BatchSize = 16, 16
	e.start(cfgA, nil)
	e.start(cfgB, nil)
	frames := e.appendN(games, 40)
	e.waitCount(6 * 40)
	for _, g := range games {
		e.checkMessages(g, frames[g], false)
	}
	a, b := promtest.ToFloat64(cfgA.Metrics.Archived), promtest.ToFloat64(cfgB.Metrics.Archived)
	t.Logf("archiver A inserted %v, B %v", a, b)
	if a+b != 6*40 {
		t.Fatalf("archivers inserted %v + %v messages, want %d in total", a, b, 6*40)
	}
}

// crashAfterInsert runs an archiver that dies right after inserting its
// first batch, before looking up duplicates, updating games or acking, so
// the batch will be redelivered. It returns the number of documents in
// messages then.
func (e *env) crashAfterInsert() int64 {
	e.t.Helper()
	crashed := make(chan struct{})
	a := e.start(e.config(), func(a *Archiver) {
		a.crashAfterInsert = func(int) error {
			close(crashed)
			return errCrashed
		}
	})
	select {
	case <-crashed:
	case <-time.After(20 * time.Second):
		e.t.Fatal("first batch never written")
	}
	a.stop(e.t)
	n := e.count(bson.D{})
	if n < 1 {
		e.t.Fatal("nothing inserted before the crash")
	}
	return n
}

// finds records the filters of the find commands a client sends to the
// messages collection.
type finds struct {
	mu      sync.Mutex
	filters []bson.Raw
}

func (f *finds) all() []bson.Raw {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.filters)
}

// monitoredClient connects to the env's MongoDB with a command monitor
// recording every find on the messages collection.
func (e *env) monitoredClient() (*mongo.Client, *finds) {
	e.t.Helper()
	f := &finds{}
	mon := &event.CommandMonitor{Started: func(_ context.Context, ev *event.CommandStartedEvent) {
		if ev.CommandName != "find" || ev.Command.Lookup("find").StringValue() != MessagesCollection {
			return
		}
		f.mu.Lock()
		f.filters = append(f.filters, slices.Clone(ev.Command.Lookup("filter").Document()))
		f.mu.Unlock()
	}}
	client, err := mongo.Connect(options.Client().ApplyURI(e.mongo.URI()).SetServerSelectionTimeout(2 * time.Second).SetMonitor(mon))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	return client, f
}

// lookedUp checks that filter has the look-up's shape, one branch per game,
// each an equality on game and a list of msg_ids: the unique (game, msg_id)
// index bounds every branch. It returns the (game, msg_id)s asked for.
func lookedUp(t *testing.T, filter bson.Raw) []string {
	t.Helper()
	branches := []bson.Raw{filter}
	if or, err := filter.LookupErr("$or"); err == nil {
		vals, err := or.Array().Values()
		if err != nil || len(vals) < 2 {
			t.Fatalf("look-up %s: $or of %d branches", filter, len(vals))
		}
		branches = branches[:0]
		for _, v := range vals {
			branches = append(branches, v.Document())
		}
	}
	var keys []string
	games := map[string]bool{}
	for _, b := range branches {
		elems, _ := b.Elements()
		if len(elems) != 2 || elems[0].Key() != "game" || elems[0].Value().Type != bson.TypeString || elems[1].Key() != "msg_id" {
			t.Fatalf("look-up %s: branch %s is not {game: G, msg_id: {$in: [...]}}", filter, b)
		}
		game := elems[0].Value().StringValue()
		if games[game] {
			t.Fatalf("look-up %s: game %s in two branches", filter, game)
		}
		games[game] = true
		in, ok := elems[1].Value().DocumentOK()
		ie, _ := in.Elements()
		if !ok || len(ie) != 1 || ie[0].Key() != "$in" {
			t.Fatalf("look-up %s: branch %s is not {game: G, msg_id: {$in: [...]}}", filter, b)
		}
		ids, _ := ie[0].Value().Array().Values()
		for _, id := range ids {
			keys = append(keys, fmt.Sprintf("%s/%d", game, id.Int64()))
		}
	}
	return keys
}

// batches returns how many batches the archiver fetched.
func batches(t *testing.T, m *Metrics) uint64 {
	t.Helper()
	var d dto.Metric
	if err := m.BatchSize.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetHistogram().GetSampleCount()
}

// TestRedeliveryLookedUpOnceByIndex: a redelivered batch spanning three
// games, one of whose numbers was reused, is looked up with one query per
// batch whose every branch the unique (game, msg_id) index bounds, not one
// per game; what that query found is kept, so the attempt after a failed
// games update asks nothing again. The redeliveries are absorbed and the
// reused number lands in conflicts.
func TestRedeliveryLookedUpOnceByIndex(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 1})
	ctx := context.Background()
	old := bson.D{{Key: "game", Value: "b"}, {Key: "msg_id", Value: int64(4)}, {Key: "ts", Value: bson.DateTime(1)},
		{Key: "client_id", Value: ""}, {Key: "type", Value: "old"}, {Key: "raw", Value: `{"type":"old","msg_id":4,"ts":1}`},
		{Key: "seq", Value: int64(999)}, {Key: "partition", Value: int32(0)}}
	if _, err := e.db.Collection(MessagesCollection).InsertOne(ctx, old); err != nil {
		t.Fatal(err)
	}
	games := []string{"a", "b", "c"}
	frames := e.appendN(games, 10)
	inserted := e.crashAfterInsert() - 1

	// B gets the batch again; its first games update fails.
	client, seen := e.monitoredClient()
	cfg := e.config()
	var failOnce sync.Once
	e.startWith(client, cfg, func(a *Archiver) {
		a.failGames = func(_, n int) (err error) {
			failOnce.Do(func() { err = errors.New("test: games update failed") })
			return err
		}
	})
	e.waitCount(30) // 29 of the stream, and the old msg_id 4 of b
	e.checkGame("a", frames["a"])
	e.checkGame("c", frames["c"])

	filters := seen.all()
	if n := batches(t, cfg.Metrics); uint64(len(filters)) != n {
		t.Fatalf("%d look-ups for %d batches: %v", len(filters), n, filters)
	}
	asked := map[string]bool{}
	for _, f := range filters {
		for _, k := range lookedUp(t, f) {
			if asked[k] {
				t.Fatalf("%s looked up twice", k)
			}
			asked[k] = true
		}
	}
	if len(asked) != int(inserted)+1 {
		t.Fatalf("looked up %d messages, want the %d inserted before the crash and the reused number", len(asked), inserted+1)
	}
	if !asked["b/4"] {
		t.Fatal("the reused number b/4 was not looked up")
	}
	if promtest.ToFloat64(cfg.Metrics.WriteErrors) < 1 {
		t.Fatal("the games update never failed")
	}

	var kept struct {
		Type string `bson:"type"`
	}
	if err := e.db.Collection(MessagesCollection).FindOne(ctx, bson.D{{Key: "game", Value: "b"}, {Key: "msg_id", Value: int64(4)}}).Decode(&kept); err != nil || kept.Type != "old" {
		t.Fatalf("archived b/4: %+v, %v", kept, err)
	}
	var conflicts []struct {
		Game  string `bson:"game"`
		MsgID int64  `bson:"msg_id"`
		Raw   string `bson:"raw"`
	}
	cur, err := e.db.Collection(ConflictsCollection).Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.All(ctx, &conflicts); err != nil {
		t.Fatal(err)
	}
	if len(conflicts) != 1 || conflicts[0].Game != "b" || conflicts[0].MsgID != 4 || conflicts[0].Raw != string(frames["b"][3]) {
		t.Fatalf("conflicts %+v", conflicts)
	}
	c, d, ar := promtest.ToFloat64(cfg.Metrics.Conflicts), promtest.ToFloat64(cfg.Metrics.Duplicates), promtest.ToFloat64(cfg.Metrics.Archived)
	if c != 1 || d != float64(inserted) || ar != float64(29-inserted) {
		t.Fatalf("conflicts_total %v, duplicates_total %v, archived_total %v; want 1, %d, %d", c, d, ar, inserted, 29-inserted)
	}
}

// TestTimedOutBatchSplit: inserts of more than 16 messages are applied but
// answered with a timeout. Each failed attempt is followed by one of half
// its size, down to 16 messages or fewer, which succeed; every message ends up
// archived exactly once, the ones whose answer was lost counted as
// duplicates.
func TestTimedOutBatchSplit(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 1})
	games := gameNames("s", 3)
	frames := e.appendN(games, 30)
	cfg := e.config()
	var mu sync.Mutex
	var sizes []int
	e.start(cfg, func(a *Archiver) {
		a.loseInsertAnswer = func(_, n int) bool {
			mu.Lock()
			defer mu.Unlock()
			sizes = append(sizes, n)
			return n > 16
		}
	})
	e.waitCount(3 * 30)
	for _, g := range games {
		e.checkGame(g, frames[g])
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("attempt sizes %v", sizes)
	if sizes[0] <= 16 {
		t.Fatalf("first attempt of %d messages; want a batch bigger than 16", sizes[0])
	}
	for i := 1; i < len(sizes); i++ {
		if sizes[i-1] > 16 && sizes[i] > sizes[i-1]/2 {
			t.Fatalf("attempt of %d messages after a failed one of %d (sizes %v)", sizes[i], sizes[i-1], sizes)
		}
	}
	if sizes[len(sizes)-1] > 16 {
		t.Fatalf("last attempt of %d messages", sizes[len(sizes)-1])
	}
	ar, d := promtest.ToFloat64(cfg.Metrics.Archived), promtest.ToFloat64(cfg.Metrics.Duplicates)
	if ar+d != 3*30 || d == 0 {
		t.Fatalf("archived_total %v + duplicates_total %v; want %d with duplicates from the lost answers", ar, d, 3*30)
	}
	if promtest.ToFloat64(cfg.Metrics.Conflicts) != 0 {
		t.Fatal("conflicts from the archiver's own inserts")
	}
}

// TestSlowLookupGetsMoreTime: when the look-up of a redelivered batch's
// duplicates times out (on FerretDB a pass over the whole collection, however
// few messages it asks for), the next attempt covers the same messages and
// gives the look-up twice as long, instead of failing the same way forever
// or splitting the batch into halves that each need a pass.
func TestSlowLookupGetsMoreTime(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 1})
	games := gameNames("l", 2)
	frames := e.appendN(games, 20)
	inserted := e.crashAfterInsert()

	cfg := e.config()
	cfg.WriteTimeout = time.Second
	type call struct {
		n       int
		timeout time.Duration
	}
	var mu sync.Mutex
	var calls []call
	e.start(cfg, func(a *Archiver) {
		a.slowLookup = func(_, n int, timeout time.Duration) bool {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, call{n, timeout})
			return len(calls) <= 2
		}
	})
	e.waitCount(2 * 20)
	for _, g := range games {
		e.checkGame(g, frames[g])
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) < 3 {
		t.Fatalf("look-ups %v; want two that timed out, then one that did not", calls)
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if calls[i].n != calls[0].n || calls[i].timeout != want {
			t.Fatalf("look-ups %v; want %d messages each time, with 1s, 2s, 4s", calls, calls[0].n)
		}
	}
	if d := promtest.ToFloat64(cfg.Metrics.Duplicates); d != float64(inserted) {
		t.Fatalf("duplicates_total %v, want the %d redelivered", d, inserted)
	}
}
