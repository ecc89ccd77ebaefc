package backend_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/backend"
	"github.com/gamerelay/gamerelay/gateway/httpapi/httpapitest"
	"github.com/gamerelay/gamerelay/gateway/token"
)

var key = httpapitest.Keys["studio"]

// TestClient: every call against the real API, and typed errors.
func TestClient(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{})
	ctx := context.Background()
	c := backend.New(sys.URL()+"/", key)

	g, err := c.CreateGame(ctx, backend.CreateGameRequest{ID: "castle-1", TTL: time.Hour, Players: []string{"ana", "bo"}})
	if err != nil {
		t.Fatal(err)
	}
	if g.ID != "castle-1" || len(g.Players) != 2 || g.Players[1].Sub != "bo" || time.Until(g.Expires) > time.Hour+time.Minute || time.Until(g.Expires) < 50*time.Minute {
		t.Fatalf("game %+v", g)
	}
	v, err := token.NewVerifier(token.Config{Keys: []token.Key{{Secret: httpapitest.Secret}}})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := v.Verify(g.Players[0].Token, time.Now())
	if err != nil || cl.Game != "castle-1" || cl.Sub != "ana" || cl.Role != token.RolePlayer {
		t.Fatalf("ana's token: %+v, %v", cl, err)
	}
	if _, err := v.Verify(g.SpectatorToken, time.Now()); err != nil {
		t.Fatal(err)
	}

	type built struct {
		Type     string `json:"type"`
		Building string `json:"building"`
	}
	id1, err := c.Publish(ctx, g.ID, built{"construction_complete", "barracks"}, "")
	if err != nil || id1 != 2 {
		t.Fatalf("publish: %d, %v; want msg_id 2", id1, err)
	}
	id2, err := c.Publish(ctx, g.ID, []byte(`{"type":"timer","left":0}`), "timer-1")
	if err != nil || id2 != 3 {
		t.Fatalf("publish: %d, %v; want msg_id 3", id2, err)
	}
	again, err := c.Publish(ctx, g.ID, json.RawMessage(`{"type":"timer","left":0}`), "timer-1")
	if err != nil || again != id2 {
		t.Fatalf("retried publish: %d, %v; want %d", again, err, id2)
	}
	end, err := c.End(ctx, g.ID, "")
	if err != nil || end != 4 {
		t.Fatalf("end: %d, %v; want 4", end, err)
	}

	p, err := c.Messages(ctx, g.ID, 1, 2)
	if err != nil || len(p.Messages) != 2 || p.Next != 3 || p.Head != 4 {
		t.Fatalf("page: %+v, %v", p, err)
	}
	var m map[string]any
	_ = json.Unmarshal(p.Messages[0], &m)
	if m["type"] != "construction_complete" || m["building"] != "barracks" || m["source"] != "studio" || m["client_id"] != "" {
		t.Fatalf("stored %s", p.Messages[0])
	}
	if p, err = c.Messages(ctx, g.ID, p.Next, 0); err != nil || len(p.Messages) != 1 || p.Next != p.Head {
		t.Fatalf("last page: %+v, %v", p, err)
	}

	// Typed errors, not retried.
	for _, tc := range []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"unknown game", func() error { _, err := c.Publish(ctx, "nope", map[string]string{"type": "x"}, ""); return err }, 404, "unknown_game"},
		{"reserved field", func() error { _, err := c.Publish(ctx, g.ID, map[string]any{"type": "x", "msg_id": 1}, ""); return err }, 400, "reserved_field"},
		{"not an object", func() error { _, err := c.Publish(ctx, g.ID, []int{1}, ""); return err }, 400, "not_object"},
		{"game exists", func() error {
			_, err := c.CreateGame(ctx, backend.CreateGameRequest{ID: "castle-1"})
			return err
		}, 409, "game_exists"},
		{"wrong key", func() error {
			_, err := backend.New(sys.URL(), "wrong-key-0123456789").Messages(ctx, g.ID, 0, 0)
			return err
		}, 401, "unauthorized"},
		{"history of unknown game", func() error { _, err := c.Messages(ctx, "nope", 0, 0); return err }, 404, "unknown_game"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var e *backend.Error
			if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code || e.Message == "" {
				t.Fatalf("error %v, want %d %s", err, tc.status, tc.code)
			}
		})
	}
	if h := sys.Head(g.ID); h != 4 {
		t.Fatalf("head %d, want 4", h)
	}
}

// flaky sits in front of the API: it forwards every request, then, while
// fail > 0, throws the answer away and fails the call (a lost reply),
// alternating between a 502 and a dropped connection.
type flaky struct {
	upstream string
	fail     atomic.Int32
	noDrop   atomic.Bool // fail with 502s only
	mu       sync.Mutex
	keys     []string // Idempotency-Key of every request
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, f.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	req.Header = r.Header.Clone()
	f.mu.Lock()
	f.keys = append(f.keys, r.Header.Get("Idempotency-Key"))
	f.mu.Unlock()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if n := f.fail.Add(-1); n >= 0 {
		if n%2 == 0 && !f.noDrop.Load() {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
				return
			}
		}
		http.Error(w, "upstream reply lost", http.StatusBadGateway)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(data)
}

func (f *flaky) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.keys...)
	f.keys = nil
	return out
}

// TestRetriesAppendOnce: replies lost after the API acted are retried with
// the same Idempotency-Key; every call takes effect once.
func TestRetriesAppendOnce(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{})
	f := &flaky{upstream: sys.URL()}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx := context.Background()
	c := backend.New(srv.URL, key, backend.WithBackoff(time.Millisecond, 20*time.Millisecond))

	sameKey := func(what string, want int) {
		t.Helper()
		keys := f.seen()
		if len(keys) != want {
			t.Fatalf("%s: %d attempts, want %d", what, len(keys), want)
		}
		for _, k := range keys {
			if k == "" || k != keys[0] {
				t.Fatalf("%s: idempotency keys %q, want one non-empty key", what, keys)
			}
		}
	}

	f.fail.Store(2)
	g, err := c.CreateGame(ctx, backend.CreateGameRequest{Players: []string{"ana"}})
	if err != nil {
		t.Fatal(err)
	}
	sameKey("create", 3)
	if h := sys.Head(g.ID); h != 1 || len(g.Players) != 1 {
		t.Fatalf("create: head %d, players %v", h, g.Players)
	}

	f.fail.Store(3)
	id, err := c.Publish(ctx, g.ID, map[string]string{"type": "drop", "item": "sword"}, "")
	if err != nil || id != 2 {
		t.Fatalf("publish: %d, %v; want msg_id 2", id, err)
	}
	sameKey("publish", 4)

	f.fail.Store(2)
	end, err := c.End(ctx, g.ID, "")
	if err != nil || end != 3 {
		t.Fatalf("end: %d, %v; want msg_id 3", end, err)
	}
	f.seen()
	if h := sys.Head(g.ID); h != 3 {
		t.Fatalf("head %d after retried calls, want 3", h)
	}

	// Bounded: attempts run out with the last error.
	f.fail.Store(100)
	f.noDrop.Store(true)
	c2 := backend.New(srv.URL, key, backend.WithAttempts(3), backend.WithBackoff(time.Millisecond, time.Millisecond))
	_, err = c2.Publish(ctx, g.ID, map[string]string{"type": "x"}, "k")
	if err == nil {
		t.Fatal("publish succeeded through a failing proxy")
	}
	sameKey("exhausted publish", 3)
	// The message was appended once all the same (each attempt reached the API).
	if h := sys.Head(g.ID); h != 4 {
		t.Fatalf("head %d, want 4", h)
	}
}

// TestRetryLimits: 4xx answers are not retried; the context ends retries.
func TestRetryLimits(t *testing.T) {
	var calls atomic.Int32
	status := atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(status.Load()))
		_, _ = w.Write([]byte(`{"error":{"code":"x","message":"y"}}`))
	}))
	defer srv.Close()
	c := backend.New(srv.URL, key, backend.WithAttempts(100), backend.WithBackoff(5*time.Millisecond, 5*time.Millisecond))

	status.Store(http.StatusBadRequest)
	if _, err := c.End(context.Background(), "g", ""); err == nil || calls.Load() != 1 {
		t.Fatalf("400: %v after %d calls, want an error after 1", err, calls.Load())
	}

	status.Store(http.StatusServiceUnavailable)
	calls.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.End(ctx, "g", "")
	var e *backend.Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &e) || e.Status != 503 {
		t.Fatalf("503 until the deadline: %v", err)
	}
	if n := calls.Load(); n < 2 || n >= 100 {
		t.Fatalf("%d calls before the deadline", n)
	}

	// A non-JSON error body still gives a typed error.
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "teapot", http.StatusTeapot)
	}))
	defer srv2.Close()
	_, err = backend.New(srv2.URL, key).Messages(context.Background(), "g", 0, 0)
	if !errors.As(err, &e) || e.Status != http.StatusTeapot || e.Code != "http_418" {
		t.Fatalf("plain-text error: %v", err)
	}
}
