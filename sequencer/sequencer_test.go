package sequencer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig() Config {
	return Config{Partitions: 2, BatchMin: 2, Logger: quiet(), LeaseTTL: 2 * time.Second, Metrics: NewMetrics(nil)}
}

// env is one embedded JetStream server with the log provisioned.
type env struct {
	t   *testing.T
	url string
	cfg Config
	js  jetstream.JetStream
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	s := embednats.Server(t)
	e := &env{t: t, url: s.ClientURL(), cfg: cfg}
	nc := e.conn()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	if err := Provision(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) conn() *nats.Conn { return embednats.Connect(e.t, e.url) }

func (e *env) appender() *Appender {
	e.t.Helper()
	a, err := NewAppender(context.Background(), e.conn(), e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = a.Close(context.Background()) })
	return a
}

// service runs a Service (handing its messages to local, if not nil) until
// the test ends and waits until it owns every partition.
func (e *env) service(local *Feeds) *Service {
	e.t.Helper()
	var opts []Option
	if local != nil {
		opts = append(opts, WithLocalFeeds(local))
	}
	svc, err := NewService(e.conn(), e.cfg, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, 5*time.Second) }()
	e.t.Cleanup(func() { stop(); <-done })
	testutil.WaitFor(e.t, 10*time.Second, "service owns partitions", func() bool { return len(svc.Owned()) == e.cfg.Partitions })
	return svc
}

func (e *env) feeds(fc FeedConfig) *Feeds {
	e.t.Helper()
	fs, err := NewFeeds(e.conn(), e.cfg, fc)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(fs.Close)
	return fs
}

func body(tag string) []byte { return []byte(`{"type":"move","tag":"` + tag + `"}`) }

// tagOf returns the "tag" field of a stored frame.
func tagOf(t testing.TB, data []byte) (string, uint64) {
	t.Helper()
	var v struct {
		Tag   string `json:"tag"`
		MsgID uint64 `json:"msg_id"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("stored frame %q: %v", data, err)
	}
	return v.Tag, v.MsgID
}

// recorder collects what a feed subscriber receives.
type recorder struct {
	mu  sync.Mutex
	ids []uint64
	tag []string
}

func (r *recorder) add(t testing.TB) func(Stored) {
	return func(m Stored) {
		tag, id := tagOf(t, m.Data)
		if id != m.ID {
			t.Errorf("frame msg_id %d, header %d", id, m.ID)
		}
		r.mu.Lock()
		r.ids = append(r.ids, m.ID)
		r.tag = append(r.tag, tag)
		r.mu.Unlock()
	}
}

func (r *recorder) snapshot() ([]uint64, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.ids...), append([]string(nil), r.tag...)
}

// readAll returns every stored message of game in order.
func readAll(t testing.TB, r *Reader, game string) []Stored {
	t.Helper()
	head, ok, err := r.Head(context.Background(), game)
	if err != nil || !ok {
		t.Fatalf("head of %s: ok=%v err=%v", game, ok, err)
	}
	var out []Stored
	if err := r.Range(context.Background(), game, 0, head.ID, nil, func(m Stored) error {
		out = append(out, m)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkDense verifies msgs are exactly 1..n with the acknowledged tags, each once.
func checkDense(t testing.TB, msgs []Stored, acked map[string]uint64) {
	t.Helper()
	seen := map[string]bool{}
	for i, m := range msgs {
		if m.ID != uint64(i+1) {
			t.Fatalf("message %d has msg_id %d", i+1, m.ID)
		}
		tag, _ := tagOf(t, m.Data)
		if seen[tag] {
			t.Fatalf("tag %s stored twice", tag)
		}
		seen[tag] = true
		if id, ok := acked[tag]; ok && id != m.ID {
			t.Fatalf("tag %s acknowledged as msg_id %d, stored as %d", tag, id, m.ID)
		}
	}
	for tag := range acked {
		if !seen[tag] {
			t.Fatalf("acknowledged tag %s missing", tag)
		}
	}
}

func TestConcurrentAppendersOneGame(t *testing.T) {
	e := newEnv(t, testConfig())
	const game = "race"
	fa, fb := e.feeds(FeedConfig{}), e.feeds(FeedConfig{})
	var recs [2]recorder
	for i, fs := range []*Feeds{fa, fb} {
		f, err := fs.Open(context.Background(), game)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Close)
		if last, _ := f.Subscribe(recs[i].add(t)); last != 0 {
			t.Fatalf("new game feed starts at %d", last)
		}
	}

	// Two sequencer instances plus a service reached through the client:
	// three independent numberers racing on one game.
	e.service(nil)
	client := NewClient(e.conn(), e.cfg)

	apps := []*Appender{e.appender(), e.appender()}
	const writers, per = 12, 60
	var mu sync.Mutex
	acked := map[string]uint64{}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				tag := fmt.Sprintf("w%d-%d", w, i)
				var r Result
				var err error
				if w%3 == 2 {
					r, err = client.Append(context.Background(), game, body(tag), tag)
				} else {
					r, err = apps[w%3].Append(context.Background(), game, body(tag), "")
				}
				if err != nil {
					t.Errorf("append %s: %v", tag, err)
					return
				}
				mu.Lock()
				acked[tag] = r.MsgID
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	const n = writers * per
	msgs := readAll(t, NewReader(e.conn(), e.cfg), game)
	if len(msgs) != n {
		t.Fatalf("stored %d messages, want %d", len(msgs), n)
	}
	checkDense(t, msgs, acked)

	for i := range recs {
		testutil.WaitFor(t, 10*time.Second, "feed catches up", func() bool { ids, _ := recs[i].snapshot(); return len(ids) >= n })
	}
	ids0, tags0 := recs[0].snapshot()
	ids1, tags1 := recs[1].snapshot()
	if len(ids0) != n || len(ids1) != n {
		t.Fatalf("feeds delivered %d and %d messages, want %d", len(ids0), len(ids1), n)
	}
	for i := range ids0 {
		if ids0[i] != uint64(i+1) || ids1[i] != uint64(i+1) || tags0[i] != tags1[i] {
			t.Fatalf("feeds differ at %d: %d/%s vs %d/%s", i, ids0[i], tags0[i], ids1[i], tags1[i])
		}
	}
	// The race was real: publishes collided on the check and were batched.
	m := e.cfg.Metrics
	conflicts := promtest.ToFloat64(m.Conflicts.WithLabelValues("10071"))
	var h dto.Metric
	if err := m.BatchSize.Write(&h); err != nil {
		t.Fatal(err)
	}
	singles := h.GetHistogram().GetBucket()[0].GetCumulativeCount()
	batches := h.GetHistogram().GetSampleCount() - singles
	t.Logf("conflicts %v, single publishes %d, atomic batches %d", conflicts, singles, batches)
	if conflicts == 0 || batches == 0 {
		t.Fatalf("expected both check conflicts and atomic batches, got %v and %d", conflicts, batches)
	}
}

func TestIdempotentAppend(t *testing.T) {
	e := newEnv(t, testConfig())
	a, b := e.appender(), e.appender()
	ctx := context.Background()
	r1, err := a.Append(ctx, "idem", body("x"), "key-1")
	if err != nil {
		t.Fatal(err)
	}
	// The same key through another sequencer: JetStream's duplicate window.
	r2, err := b.Append(ctx, "idem", body("x"), "key-1")
	if err != nil {
		t.Fatal(err)
	}
	if r2.MsgID != r1.MsgID || r2.Seq != r1.Seq || !r2.Duplicate {
		t.Fatalf("retry got %+v, first %+v", r2, r1)
	}
	// Concurrent calls with one key coalesce.
	var wg sync.WaitGroup
	res := make([]Result, 8)
	for i := range res {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := a.Append(ctx, "idem", body("y"), "key-2")
			if err != nil {
				t.Error(err)
			}
			res[i] = r
		}(i)
	}
	wg.Wait()
	for _, r := range res {
		if r.MsgID != 2 {
			t.Fatalf("coalesced append got msg_id %d, want 2", r.MsgID)
		}
	}
	msgs := readAll(t, NewReader(e.conn(), e.cfg), "idem")
	if len(msgs) != 2 {
		t.Fatalf("stored %d messages, want 2", len(msgs))
	}
}

// An idle game's append is published on the caller's goroutine; when that
// one attempt fails (here: another sequencer moved the head) the retry runs
// on a goroutine of the Appender and the caller still gets the outcome.
func TestInlineAppendHandsOffRetry(t *testing.T) {
	cfg := testConfig()
	cfg.Metrics = NewMetrics(nil)
	e := newEnv(t, cfg)
	a, b := e.appender(), e.appender()
	ctx := context.Background()
	for i, step := range []struct {
		app  *Appender
		want uint64
	}{{a, 1}, {b, 2}, {a, 3}, {a, 4}} {
		r, err := step.app.Append(ctx, "inline", body(fmt.Sprint(i)), "")
		if err != nil {
			t.Fatal(err)
		}
		if r.MsgID != step.want {
			t.Fatalf("append %d got msg_id %d, want %d", i, r.MsgID, step.want)
		}
	}
	// a's third append was checked against the head it knew (msg_id 1) and
	// refused; only the retry stored it.
	if n := promtest.ToFloat64(cfg.Metrics.Conflicts.WithLabelValues("10071")); n != 1 {
		t.Fatalf("conflicts = %v, want 1", n)
	}
	msgs := readAll(t, NewReader(e.conn(), e.cfg), "inline")
	if len(msgs) != 4 {
		t.Fatalf("stored %d messages, want 4", len(msgs))
	}
	// The retry goroutine finishes and leaves the game idle.
	testutil.WaitFor(t, 5*time.Second, "game idle", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return !a.games["inline"].busy
	})
}

func TestBadInputRejectedBeforePublish(t *testing.T) {
	e := newEnv(t, testConfig())
	a := e.appender()
	client := NewClient(e.conn(), e.cfg)
	for name, tc := range map[string]struct {
		game string
		body string
		code string
	}{
		"empty game":       {"", `{"type":"a"}`, wire.CodeInvalidGame},
		"long game":        {strings.Repeat("g", 65), `{"type":"a"}`, wire.CodeInvalidGame},
		"dot in game":      {"a.b", `{"type":"a"}`, wire.CodeInvalidGame},
		"wildcard game":    {"a*", `{"type":"a"}`, wire.CodeInvalidGame},
		"gt game":          {">", `{"type":"a"}`, wire.CodeInvalidGame},
		"space game":       {"a b", `{"type":"a"}`, wire.CodeInvalidGame},
		"not json":         {"g", `{"type":`, wire.CodeInvalidMessage},
		"array":            {"g", `[1,2]`, wire.CodeInvalidMessage},
		"no type":          {"g", `{"x":1}`, wire.CodeInvalidMessage},
		"number type":      {"g", `{"type":3}`, wire.CodeInvalidMessage},
		"forged msg_id":    {"g", `{"type":"a","msg_id":7}`, wire.CodeReservedField},
		"escaped ts":       {"g", `{"type":"a","\u0074s":7}`, wire.CodeReservedField},
		"MSG_ID":           {"g", `{"type":"a","MSG_ID":7}`, wire.CodeReservedField},
		"Ts":               {"g", `{"type":"a","Ts":7}`, wire.CodeReservedField},
		"duplicate type":   {"g", `{"type":"a","type":"b"}`, wire.CodeInvalidMessage},
		"too large":        {"g", `{"type":"a","x":"` + strings.Repeat("x", 70<<10) + `"}`, wire.CodeTooLarge},
		"trailing garbage": {"g", `{"type":"a"}x`, wire.CodeInvalidMessage},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.Append(context.Background(), tc.game, []byte(tc.body), "")
			var se *Error
			if !errors.As(err, &se) || se.Code != tc.code {
				t.Fatalf("appender: got %v, want code %s", err, tc.code)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if tc.code == wire.CodeInvalidGame {
				_, err = client.Append(ctx, tc.game, []byte(tc.body), "")
				if !errors.As(err, &se) || se.Code != tc.code {
					t.Fatalf("client: got %v, want code %s", err, tc.code)
				}
			}
		})
	}
	for p := 0; p < e.cfg.Partitions; p++ {
		s, err := e.js.Stream(context.Background(), wire.Names{}.Stream(p))
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().State.Msgs; n != 0 {
			t.Fatalf("partition %d holds %d messages after rejected input", p, n)
		}
	}
}

func TestServiceRejectsBadRequests(t *testing.T) {
	e := newEnv(t, testConfig())
	e.service(nil)
	client := NewClient(e.conn(), e.cfg)
	_, err := client.Append(context.Background(), "g1", []byte(`{"type":"x","msg_id":1}`), "")
	var se *Error
	if !errors.As(err, &se) || se.Code != wire.CodeReservedField {
		t.Fatalf("got %v, want reserved_field", err)
	}
	// A request on the wrong partition's subject is refused.
	nc := e.conn()
	game := "g1"
	wrong := 1 - wire.Partition(game, 2)
	resp, err := nc.RequestMsg(&nats.Msg{Subject: wire.Names{}.AppendSubject(wrong), Data: body("x"),
		Header: nats.Header{wire.HdrGame: {game}}}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r AppendReply
	if err := json.Unmarshal(resp.Data, &r); err != nil || r.Error == nil || r.Error.Code != wire.CodeWrongPartition {
		t.Fatalf("wrong partition: %s", resp.Data)
	}
}

func TestFeedFillsGapsAndDropsDuplicates(t *testing.T) {
	e := newEnv(t, testConfig())
	a := e.appender()
	fs := e.feeds(FeedConfig{CheckAfter: 50 * time.Millisecond})
	const game = "gappy"
	ctx := context.Background()
	f, err := fs.Open(ctx, game)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rec recorder
	f.Subscribe(rec.add(t))
	appendN := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := a.Append(ctx, game, body(fmt.Sprint(i)), ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(1, 5)
	testutil.WaitFor(t, 5*time.Second, "1..5 live", func() bool { ids, _ := rec.snapshot(); return len(ids) == 5 })

	// Lose the live path for 6..8, as around a stream leader change.
	f.deliverMu.Lock()
	_ = f.sub.Unsubscribe()
	f.deliverMu.Unlock()
	appendN(6, 8)
	f.deliverMu.Lock()
	f.sub, err = e.conn().Subscribe(wire.Names{}.LiveSubject(f.p, game), f.onLive)
	f.deliverMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	appendN(9, 9)
	testutil.WaitFor(t, 5*time.Second, "gap 6..8 filled", func() bool { ids, _ := rec.snapshot(); return len(ids) == 9 })

	// Lose the last message: only the head check can find it.
	f.deliverMu.Lock()
	_ = f.sub.Unsubscribe()
	f.deliverMu.Unlock()
	appendN(10, 10)
	fs.recheck(func(*Feed) bool { return true })
	testutil.WaitFor(t, 5*time.Second, "lost tail 10 recovered", func() bool { ids, _ := rec.snapshot(); return len(ids) == 10 })

	// A repeated live message is dropped.
	old, err := fs.Reader().st.bySeq(ctx, f.p, 3)
	if err != nil {
		t.Fatal(err)
	}
	f.onLive(&nats.Msg{Header: nats.Header{wire.HdrMsgID: {fmt.Sprint(old.ID)}, wire.HdrSeq: {"3"}, wire.HdrPrev: {"2"}}, Data: old.Data})

	ids, tags := rec.snapshot()
	for i, id := range ids {
		if id != uint64(i+1) || tags[i] != fmt.Sprint(i+1) {
			t.Fatalf("delivery %d: msg_id %d tag %s", i, id, tags[i])
		}
	}
	if len(ids) != 10 {
		t.Fatalf("delivered %d, want 10", len(ids))
	}
}

func TestReplayAcrossCacheAndPages(t *testing.T) {
	e := newEnv(t, testConfig())
	a := e.appender()
	fs := e.feeds(FeedConfig{CacheMessages: 50})
	ctx := context.Background()
	const game, total, openAt = "replay", 700, 300
	var f *Feed
	others := 0
	// Bursts of queued appends: atomic batches that cross page boundaries.
	var wg sync.WaitGroup
	appendAsync := func(game, tag string) {
		wg.Add(1)
		if err := a.AppendAsync(game, body(tag), "", func(_ Result, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= total; i++ {
		if i == openAt+1 {
			wg.Wait()
			var err error
			if f, err = fs.Open(ctx, game); err != nil {
				t.Fatal(err)
			}
			defer f.Close()
		}
		appendAsync(game, fmt.Sprint(i))
		if i%3 == 0 { // interleave another game of the same partition
			for {
				others++
				if wire.Partition(fmt.Sprintf("o%d", others), 2) == wire.Partition(game, 2) {
					break
				}
			}
			appendAsync(fmt.Sprintf("o%d", others), "other")
		}
		if i%331 == 0 {
			wg.Wait()
		}
	}
	wg.Wait()
	var h dto.Metric
	if err := e.cfg.Metrics.BatchSize.Write(&h); err != nil {
		t.Fatal(err)
	}
	if h.GetHistogram().GetSampleCount() >= total {
		t.Fatalf("no atomic batches were used (%d publishes)", h.GetHistogram().GetSampleCount())
	}
	testutil.WaitFor(t, 5*time.Second, "feed at head", func() bool { return f.Last() == total })
	for _, since := range []uint64{0, 1, 126, 127, 128, 129, 255, 256, 257, 500, 649, 650, 651, 698, 699, 700} {
		t.Run(fmt.Sprint("since=", since), func(t *testing.T) {
			want := since + 1
			err := f.Replay(ctx, since, total, func(m Stored) error {
				tag, _ := tagOf(t, m.Data)
				if m.ID != want || tag != fmt.Sprint(want) {
					return fmt.Errorf("got msg_id %d tag %s, want %d", m.ID, tag, want)
				}
				want++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if want != total+1 {
				t.Fatalf("replay ended before %d", want)
			}
		})
	}
	// The anchor walk lands exactly on the page start of the wanted message,
	// never on the fallback scan from the game's first message.
	r := fs.Reader()
	head, _, err := r.Head(ctx, game)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{1, 2, 128, 129, 130, 300, 600, 700} {
		seq, err := r.locate(ctx, f.p, head, want)
		if err != nil {
			t.Fatal(err)
		}
		m, err := r.st.bySeq(ctx, f.p, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.ID != wire.PageStart(want) {
			t.Fatalf("locate(%d) found msg_id %d at seq %d, want page start %d", want, m.ID, seq, wire.PageStart(want))
		}
	}
	// Partial ranges through the Reader directly.
	var got []uint64
	if err := fs.Reader().Range(ctx, game, 99, 130, nil, func(m Stored) error { got = append(got, m.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 31 || got[0] != 100 || got[30] != 130 {
		t.Fatalf("range 100..130 got %v", got)
	}
}

func TestReplayBeyondRetention(t *testing.T) {
	cfg := testConfig()
	cfg.MaxMsgsPerGame = 100
	e := newEnv(t, cfg)
	a := e.appender()
	ctx := context.Background()
	for i := 1; i <= 250; i++ {
		if _, err := a.Append(ctx, "short", body(fmt.Sprint(i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(e.conn(), cfg)
	err := r.Range(ctx, "short", 0, 250, nil, func(Stored) error { t.Fatal("delivered a message"); return nil })
	var te *TruncatedError
	if !errors.As(err, &te) || te.FirstID != 151 {
		t.Fatalf("got %v, want TruncatedError from 151", err)
	}
	n := 0
	if err := r.Range(ctx, "short", 150, 250, nil, func(m Stored) error { n++; return nil }); err != nil || n != 100 {
		t.Fatalf("retained range: n=%d err=%v", n, err)
	}
}

func TestNumberingSurvivesEmptiedSubject(t *testing.T) {
	e := newEnv(t, testConfig())
	ctx := context.Background()
	a, err := NewAppender(ctx, e.conn(), e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if _, err := a.Append(ctx, "old", body(fmt.Sprint(i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(ctx); err != nil { // writes the head checkpoint
		t.Fatal(err)
	}
	// Retention removes every message of the game.
	p := wire.Partition("old", e.cfg.Partitions)
	s, err := e.js.Stream(ctx, wire.Names{}.Stream(p))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(wire.Names{}.LogSubject(p, "old"))); err != nil {
		t.Fatal(err)
	}
	r, err := e.appender().Append(ctx, "old", body("6"), "")
	if err != nil {
		t.Fatal(err)
	}
	if r.MsgID != 6 {
		t.Fatalf("after the stream forgot the game, next msg_id is %d, want 6", r.MsgID)
	}
}

func TestLeaseTakeover(t *testing.T) {
	cfg := testConfig()
	cfg.Partitions = 4
	cfg.LeaseTTL = time.Second
	e := newEnv(t, cfg)
	run := func(nc *nats.Conn) (*Service, context.CancelFunc, chan error) {
		svc, err := NewService(nc, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx, time.Second) }()
		return svc, cancel, done
	}
	ncA := e.conn()
	a, stopA, doneA := run(ncA)
	b, stopB, doneB := run(e.conn())
	defer func() { stopB(); <-doneB }()
	testutil.WaitFor(t, 15*time.Second, "partitions split 2/2", func() bool { return len(a.Owned()) == 2 && len(b.Owned()) == 2 })

	client := NewClient(e.conn(), cfg)
	ctx := context.Background()
	appendAll := func(round int) {
		for g := 0; g < 16; g++ {
			actx, cancel := context.WithTimeout(ctx, 20*time.Second)
			if _, err := client.Append(actx, fmt.Sprintf("lease%d", g), body(fmt.Sprint(round)), ""); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
	}
	appendAll(1)
	// Kill A without letting it release anything: its connection dies.
	ncA.Close()
	stopA()
	<-doneA
	testutil.WaitFor(t, 15*time.Second, "B takes every partition", func() bool { return len(b.Owned()) == 4 })
	appendAll(2)
	r := NewReader(e.conn(), cfg)
	for g := 0; g < 16; g++ {
		msgs := readAll(t, r, fmt.Sprintf("lease%d", g))
		if len(msgs) != 2 || msgs[1].ID != 2 {
			t.Fatalf("game %d: %d messages", g, len(msgs))
		}
	}
}

func TestStamp(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"members": {`{"type":"a"}`, `{"type":"a","msg_id":7,"ts":9}`},
		"empty":   {`{}`, `{"msg_id":7,"ts":9}`},
		"spaces":  {` { "type" : "a" } `, `{ "type" : "a" ,"msg_id":7,"ts":9}`},
		"blank":   {"{ \n }", "{ \n \"msg_id\":7,\"ts\":9}"},
	} {
		t.Run(name, func(t *testing.T) {
			got := string(stamp(nil, []byte(tc.in), 7, 9))
			if got != tc.want {
				t.Fatalf("got %s want %s", got, tc.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("invalid JSON %s", got)
			}
			if ts, ok := wire.StampedTS([]byte(got)); !ok || ts != 9 {
				t.Fatalf("StampedTS = %d, %v; want 9", ts, ok)
			}
		})
	}
	// A stored message carries its append time in the body; readers take
	// it from there.
	h := nats.Header{wire.HdrMsgID: {"7"}}
	body := stamp(nil, []byte(`{"type":"a","ts_like":"x"}`), 7, 1764460800123)
	if st, err := parseStored(h, body, "42"); err != nil || st.TS != 1764460800123 || st.ID != 7 || st.Seq != 42 {
		t.Fatalf("parseStored: %+v %v", st, err)
	}
}

// AppendWithin bounds the wait by a duration instead of a deadline in the
// context: stored inline when the log answers, DeadlineExceeded when it
// does not, and the context still cancels. LocalFirst takes the same path
// locally and falls back to the client with the same bound.
func TestAppendWithin(t *testing.T) {
	e := newEnv(t, testConfig())
	ctx := context.Background()
	a := e.appender()
	for i := uint64(1); i <= 2; i++ {
		r, err := a.AppendWithin(ctx, 5*time.Second, "within", body(fmt.Sprint(i)), "")
		if err != nil || r.MsgID != i {
			t.Fatalf("append %d: %+v %v", i, r, err)
		}
	}

	// Local and remote through LocalFirst.
	svc := e.service(nil)
	idle, err := NewService(e.conn(), e.cfg) // never run: owns nothing
	if err != nil {
		t.Fatal(err)
	}
	for i, lf := range []*LocalFirst{NewLocalFirst(svc, NewClient(e.conn(), e.cfg)), NewLocalFirst(idle, NewClient(e.conn(), e.cfg))} {
		r, err := lf.AppendWithin(ctx, 5*time.Second, "within", body("lf"), "")
		if err != nil || r.MsgID != uint64(3+i) {
			t.Fatalf("LocalFirst %d: %+v %v", i, r, err)
		}
	}

	// The log gone: the append keeps retrying in the background, the
	// caller is told at its bound.
	gone := "gone-" + fmt.Sprint(time.Now().UnixNano())
	if err := e.js.DeleteStream(ctx, e.cfg.names().Stream(wire.Partition(gone, e.cfg.Partitions))); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := a.AppendWithin(ctx, 300*time.Millisecond, gone, body("x"), ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unavailable log: %v, want deadline exceeded", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("waited %v for a 300ms bound", waited)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.AppendWithin(cctx, time.Minute, gone, body("y"), ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	closeCtx, cancelClose := context.WithTimeout(ctx, time.Second)
	defer cancelClose()
	_ = a.Close(closeCtx) // abandons the retries
}

// flakyLeases fails lease renewals while failing is set, as a lease
// bucket whose stream is electing a leader would.
type flakyLeases struct {
	leaseStore
	mu       sync.Mutex
	failing  bool
	failed   int // renewals refused
	renewals int // renewals that went through
}

func (f *flakyLeases) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	f.mu.Lock()
	if f.failing {
		f.failed++
		f.mu.Unlock()
		return 0, context.DeadlineExceeded
	}
	f.mu.Unlock()
	r, err := f.leaseStore.Update(ctx, key, value, rev)
	if err == nil {
		f.mu.Lock()
		f.renewals++
		f.mu.Unlock()
	}
	return r, err
}

func (f *flakyLeases) counts() (failed, renewals int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed, f.renewals
}

// Renewals that fail for a while (shorter than the lease TTL) keep the
// leases: the partitions neither move nor go unserved.
func TestLeasesSurviveTransientRenewalErrors(t *testing.T) {
	cfg := testConfig()
	cfg.LeaseTTL = 3 * time.Second
	var logs logLines
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	e := newEnv(t, cfg)
	svc, err := NewService(e.conn(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyLeases{}
	svc.leases = func(kv leaseStore) leaseStore { flaky.leaseStore = kv; return flaky }
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, time.Second) }()
	defer func() { stop(); <-done }()
	testutil.WaitFor(t, 15*time.Second, "the service owns every partition", func() bool { return len(svc.Owned()) == cfg.Partitions })
	_, before := flaky.counts()
	testutil.WaitFor(t, 15*time.Second, "a renewal", func() bool { _, r := flaky.counts(); return r > before })
	flaky.mu.Lock()
	flaky.failing = true
	flaky.mu.Unlock()
	// Two rounds of failed renewals: about 2 s, less than the 3 s TTL.
	testutil.WaitFor(t, 15*time.Second, "failed renewals", func() bool { f, _ := flaky.counts(); return f >= 2*cfg.Partitions })
	if got := len(svc.Owned()); got != cfg.Partitions {
		t.Fatalf("owns %d partitions while renewals fail, want %d", got, cfg.Partitions)
	}
	flaky.mu.Lock()
	flaky.failing = false
	before = flaky.renewals
	flaky.mu.Unlock()
	testutil.WaitFor(t, 15*time.Second, "renewals again", func() bool { _, r := flaky.counts(); return r >= before+cfg.Partitions })
	if got := len(svc.Owned()); got != cfg.Partitions {
		t.Fatalf("owns %d partitions after renewals recovered, want %d", got, cfg.Partitions)
	}
	if strings.Contains(logs.String(), "lost partition lease") {
		t.Fatalf("a lease was dropped:\n%s", logs.String())
	}
	if promtest.ToFloat64(cfg.Metrics.LeaseRenewalErrors) == 0 {
		t.Fatal("failed renewals not counted")
	}
}

// logLines collects log output.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A partition's owner is cut off while its lease still runs: appends to its
// games are taken by another sequencer at once (through the "any" subject),
// not after the lease expires.
func TestAppendsBypassAnOwnerThatIsGone(t *testing.T) {
	cfg := testConfig()
	cfg.Partitions = 4
	cfg.LeaseTTL = 10 * time.Second // A's leases outlive the appends below
	e := newEnv(t, cfg)
	run := func(nc *nats.Conn) (*Service, func()) {
		svc, err := NewService(nc, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx, time.Second) }()
		return svc, func() { cancel(); <-done }
	}
	ncA := e.conn()
	a, stopA := run(ncA)
	b, stopB := run(e.conn())
	defer stopB()
	testutil.WaitFor(t, 30*time.Second, "partitions split 2/2", func() bool { return len(a.Owned()) == 2 && len(b.Owned()) == 2 })
	owned := map[int]bool{}
	for _, p := range a.Owned() {
		owned[p] = true
	}
	var games []string
	for i := 0; len(games) < 4; i++ {
		if g := fmt.Sprintf("cut%d", i); owned[wire.Partition(g, cfg.Partitions)] {
			games = append(games, g)
		}
	}
	client := NewClient(e.conn(), cfg)
	ncA.Close() // A is gone; its leases stay for 10 s
	defer stopA()
	for _, g := range games {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		r, err := client.Append(ctx, g, body("after"), "k-"+g)
		cancel()
		if err != nil || r.MsgID != 1 {
			t.Fatalf("append to %s (partition of the cut-off owner): %+v, %v", g, r, err)
		}
	}
	if len(b.Owned()) != 2 {
		t.Fatalf("B owns %v: the appends must not have waited for a lease takeover", b.Owned())
	}
}

// After its connection reconnects, Feeds re-reads every feed's head by
// itself: what was published while the connection was down is found.
func TestFeedsRecheckAfterReconnect(t *testing.T) {
	e := newEnv(t, testConfig())
	a := e.appender()
	fnc := e.conn()
	fs, err := NewFeeds(fnc, e.cfg, FeedConfig{CheckAfter: time.Hour, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	f, err := fs.Open(context.Background(), "rc")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rec recorder
	f.Subscribe(rec.add(t))
	// Lose the live copy, as a connection that is down would.
	f.deliverMu.Lock()
	_ = f.sub.Unsubscribe()
	f.deliverMu.Unlock()
	if _, err := a.Append(context.Background(), "rc", body("lost"), ""); err != nil {
		t.Fatal(err)
	}
	if err := fnc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the message found after the reconnect", func() bool { ids, _ := rec.snapshot(); return len(ids) == 1 })
}
