package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/gamerelay/gamerelay/gateway/httpapi/httpapitest"
)

var studioKey = httpapitest.Keys["studio"]

// reply is an API answer.
type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// code returns the error code of an error reply.
func (r reply) code() string {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (r reply) num(k string) uint64 {
	f, _ := r.body[k].(float64)
	return uint64(f)
}

// call sends one API request; hdr are header name/value pairs.
func call(t testing.TB, method, url, key, body string, hdr ...string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	if method != http.MethodHead {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: %d %q is not a JSON object: %v", method, url, resp.StatusCode, raw, err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", method, url, ct)
		}
	}
	return r
}

// expect checks an API answer's status (and error code).
func expect(t testing.TB, r reply, status int, code ...string) reply {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %d %s, want %d", r.status, r.raw, status)
	}
	if len(code) > 0 && r.code() != code[0] {
		t.Fatalf("got code %q (%s), want %q", r.code(), r.raw, code[0])
	}
	return r
}

// createGame creates a game through the API and returns the answer.
func createGame(t testing.TB, base, body string, hdr ...string) reply {
	t.Helper()
	return expect(t, call(t, "POST", base+"/v1/games", studioKey, body, hdr...), http.StatusCreated)
}

func publish(t testing.TB, base, game, body string, hdr ...string) reply {
	t.Helper()
	return call(t, "POST", base+"/v1/games/"+game+"/messages", studioKey, body, hdr...)
}

// wsClient is a real WebSocket client (gobwas/ws) with a reader goroutine.
type wsClient struct {
	t      testing.TB
	conn   net.Conn
	wmu    sync.Mutex
	frames chan []byte
	done   chan struct{}
}

func dial(t testing.TB, url string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, _, err := ws.Dial(ctx, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c := &wsClient{t: t, conn: conn, frames: make(chan []byte, 1<<14), done: make(chan struct{})}
	t.Cleanup(func() { _ = conn.Close(); <-c.done })
	go c.readLoop()
	return c
}

type lockedWriter struct{ c *wsClient }

func (l lockedWriter) Write(p []byte) (int, error) {
	l.c.wmu.Lock()
	defer l.c.wmu.Unlock()
	return l.c.conn.Write(p)
}

func (c *wsClient) readLoop() {
	defer close(c.done)
	for {
		h, err := ws.ReadHeader(c.conn)
		if err != nil || h.Length > 1<<20 {
			return
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.conn, p); err != nil {
			return
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = wsutil.WriteClientMessage(lockedWriter{c}, ws.OpPong, p)
		case ws.OpClose:
			_ = wsutil.WriteClientMessage(lockedWriter{c}, ws.OpClose, p[:min(2, len(p))])
			return
		case ws.OpText:
			c.frames <- p
		}
	}
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := wsutil.WriteClientText(lockedWriter{c}, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

var errNoFrame = errors.New("no frame in time")

// next returns the next frame, decoded.
func (c *wsClient) next(d time.Duration) (map[string]any, error) {
	p, err := c.nextRaw(d)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// nextRaw returns the next frame as received.
func (c *wsClient) nextRaw(d time.Duration) ([]byte, error) {
	select {
	case p := <-c.frames:
		return p, nil
	case <-c.done:
		select {
		case p := <-c.frames:
			return p, nil
		default:
			return nil, errors.New("connection closed")
		}
	case <-time.After(d):
		return nil, errNoFrame
	}
}

// expect reads the next frame and checks its type.
func (c *wsClient) expect(typ string) map[string]any {
	c.t.Helper()
	m, err := c.next(10 * time.Second)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", typ, err)
	}
	if m["type"] != typ {
		c.t.Fatalf("got %v, want type %s", m, typ)
	}
	return m
}

// until reads frames until one of type typ and returns it.
func (c *wsClient) until(typ string) map[string]any {
	c.t.Helper()
	for {
		m, err := c.next(10 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", typ, err)
		}
		if m["type"] == typ {
			return m
		}
	}
}

// join connects to url and joins game with token; it returns the client
// after its joined frame.
func join(t testing.TB, url, game, token string) *wsClient {
	t.Helper()
	c := dial(t, url)
	c.send(map[string]any{"type": "join", "game": game, "token": token})
	c.expect("joined")
	return c
}

func msgID(m map[string]any) uint64 {
	f, _ := m["msg_id"].(float64)
	return uint64(f)
}
