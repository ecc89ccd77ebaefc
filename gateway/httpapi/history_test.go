package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/gateway/httpapi"
	"github.com/gamerelay/gamerelay/gateway/httpapi/httpapitest"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// page is a decoded history page.
type page struct {
	Messages []json.RawMessage
	Next     uint64
	Head     uint64
}

func getPage(t testing.TB, base, game, query string) page {
	t.Helper()
	r := expect(t, call(t, "GET", base+"/v1/games/"+game+"/messages"+query, studioKey, ""), http.StatusOK)
	var p page
	if err := json.Unmarshal(r.raw, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// readAll pages through a game's history from since with limit and checks
// every page: dense msg_ids, next = the last one, the same head.
func readAll(t testing.TB, base, game string, since uint64, limit int) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		p := getPage(t, base, game, fmt.Sprintf("?since=%d&limit=%d", since, limit))
		if len(p.Messages) > limit {
			t.Fatalf("page of %d messages, limit %d", len(p.Messages), limit)
		}
		for _, m := range p.Messages {
			var f struct {
				MsgID uint64 `json:"msg_id"`
			}
			_ = json.Unmarshal(m, &f)
			if f.MsgID != since+1 {
				t.Fatalf("page after %d holds msg_id %d", since, f.MsgID)
			}
			since = f.MsgID
			out = append(out, m)
		}
		if p.Next != since {
			t.Fatalf("next %d, want %d", p.Next, since)
		}
		if p.Next >= p.Head {
			return out
		}
		if len(p.Messages) == 0 {
			t.Fatalf("empty page before the head (%d < %d)", p.Next, p.Head)
		}
	}
}

// TestHistoryPaging: pages are dense, in order, the bytes the log holds,
// and bounded by limit (default 100, at most 1000).
func TestHistoryPaging(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{})
	base := sys.URL()
	game := createGame(t, base, "").body["game"].(string)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 75 {
				if r := publish(t, base, game, fmt.Sprintf(`{"type":"n","w":%d,"i":%d}`, w, i)); r.status != http.StatusCreated {
					t.Errorf("publish: %d %s", r.status, r.raw)
				}
			}
		})
	}
	wg.Wait()
	stored := sys.Messages(game)
	if len(stored) != 301 {
		t.Fatalf("%d stored, want 301", len(stored))
	}
	for _, tc := range []struct {
		since uint64
		limit int
	}{{280, 1}, {0, 13}, {0, 128}, {0, 1000}, {127, 129}} {
		got := readAll(t, base, game, tc.since, tc.limit)
		if len(got) != len(stored)-int(tc.since) {
			t.Fatalf("since %d, limit %d: read %d messages, want %d", tc.since, tc.limit, len(got), len(stored)-int(tc.since))
		}
		for i := range got {
			if id := int(tc.since) + i + 1; !bytes.Equal(got[i], stored[id-1]) {
				t.Fatalf("since %d, limit %d: msg_id %d is %s, the log holds %s", tc.since, tc.limit, id, got[i], stored[id-1])
			}
		}
	}
	if p := getPage(t, base, game, ""); len(p.Messages) != 100 || p.Next != 100 || p.Head != 301 {
		t.Fatalf("default page: %d messages, next %d, head %d; want 100, 100, 301", len(p.Messages), p.Next, p.Head)
	}
	if p := getPage(t, base, game, "?since=250&limit=5000"); len(p.Messages) != 51 || p.Next != 301 {
		t.Fatalf("since 250, limit 5000: %d messages, next %d; want 51, 301", len(p.Messages), p.Next)
	}
	for _, since := range []uint64{301, 5000} {
		if p := getPage(t, base, game, "?since="+strconv.FormatUint(since, 10)); len(p.Messages) != 0 || p.Next != since || p.Head != 301 {
			t.Fatalf("since %d: %d messages, next %d, head %d", since, len(p.Messages), p.Next, p.Head)
		}
	}
}

// archive is a History fed from the live subjects: every stored message,
// as an archiver would keep it.
type archive struct {
	mu     sync.Mutex
	frames map[string]map[uint64][]byte
	calls  int
}

func newArchive(t testing.TB, natsURL string) *archive {
	a := &archive{frames: map[string]map[uint64][]byte{}}
	nc := embednats.Connect(t, natsURL)
	_, err := nc.Subscribe("gr.live.*.*", func(m *nats.Msg) {
		id, _ := strconv.ParseUint(m.Header.Get(wire.HdrMsgID), 10, 64)
		game := m.Subject[len("gr.live.0."):]
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.frames[game] == nil {
			a.frames[game] = map[uint64][]byte{}
		}
		a.frames[game][id] = m.Data
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *archive) count(game string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.frames[game])
}

func (a *archive) frame(game string, id uint64) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.frames[game][id]
}

func (a *archive) asked() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

func (a *archive) Range(_ context.Context, game string, since, upto uint64, fn func(uint64, []byte) error) error {
	a.mu.Lock()
	a.calls++
	frames := a.frames[game]
	a.mu.Unlock()
	for id := since + 1; id <= upto; id++ {
		f, ok := frames[id]
		if !ok {
			return fmt.Errorf("archive: %s lacks msg_id %d", game, id)
		}
		if err := fn(id, f); err != nil {
			return err
		}
	}
	return nil
}

// TestHistoryFromArchive: what retention removed from the stream comes
// from History, seamlessly; without History it is 410 history_gap.
func TestHistoryFromArchive(t *testing.T) {
	// The archive must be listening before anything is stored.
	var arch *archive
	sys := httpapitest.Start(t, httpapitest.Options{
		Sequencer: sequencer.Config{Partitions: 1, MaxMsgsPerGame: 20},
		History: historyFunc(func(ctx context.Context, game string, since, upto uint64, fn func(uint64, []byte) error) error {
			return arch.Range(ctx, game, since, upto, fn)
		}),
	})
	arch = newArchive(t, sys.NATSURL)
	base := sys.URL()
	game := createGame(t, base, `{"id":"long-game"}`).body["game"].(string)
	for i := range 49 {
		expect(t, publish(t, base, game, fmt.Sprintf(`{"type":"n","i":%d}`, i)), http.StatusCreated)
	}
	testutil.WaitFor(t, 10*time.Second, "the archive to hold 50 messages", func() bool { return arch.count(game) >= 50 })
	err := sys.Reader.Range(context.Background(), game, 0, 50, nil, func(sequencer.Stored) error { return nil })
	if te := (*sequencer.TruncatedError)(nil); !errors.As(err, &te) || te.FirstID != 31 {
		t.Fatalf("reading the stream from msg_id 1: %v; want it truncated before 31", err)
	}

	for _, tc := range []struct {
		since uint64
		limit int
	}{{0, 1000}, {0, 7}, {10, 5}, {25, 10}, {35, 100}} {
		got := readAll(t, base, game, tc.since, tc.limit)
		if len(got) != int(50-tc.since) {
			t.Fatalf("since %d limit %d: %d messages, want %d", tc.since, tc.limit, len(got), 50-tc.since)
		}
		for i, m := range got {
			id := tc.since + uint64(i) + 1
			if want := arch.frame(game, id); !bytes.Equal(m, want) {
				t.Fatalf("msg_id %d: %s, want %s", id, m, want)
			}
		}
	}
	if arch.asked() == 0 {
		t.Fatal("the archive was never asked")
	}

	// The same installation without an archive: 410 for what the stream lost.
	nc := embednats.Connect(t, sys.NATSURL)
	api, err := httpapi.New(httpapi.Config{Keys: httpapitest.Keys, Appender: sequencer.NewClient(nc, sys.Seq), Reader: sequencer.NewReader(nc, sys.Seq)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	expect(t, call(t, "GET", srv.URL+"/v1/games/"+game+"/messages", studioKey, ""), http.StatusGone, wire.CodeHistoryGap)
	if got := readAll(t, srv.URL, game, 30, 100); len(got) != 20 {
		t.Fatalf("from the stream alone: %d messages, want 20", len(got))
	}
}

type historyFunc func(ctx context.Context, game string, since, upto uint64, fn func(uint64, []byte) error) error

func (f historyFunc) Range(ctx context.Context, game string, since, upto uint64, fn func(uint64, []byte) error) error {
	return f(ctx, game, since, upto, fn)
}
