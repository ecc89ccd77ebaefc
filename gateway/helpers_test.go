package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/sequencer"
)

var testSecret = []byte("test-secret-0123456789abcdef-0123456789")

// logBuf collects every log line of a test system, to check what is logged.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// system is NATS JetStream, a sequencer service and n gateways, each with
// its own NATS connection, feeds and HTTP server, as separate pods would be.
// The first gateway appends through sequencer.LocalFirst on the service,
// whose messages reach its feeds in process (sequencer.WithLocalFeeds, on a NoEcho
// connection), as `gamerelay dev` and gateways with an embedded sequencer
// do; the others append through sequencer.Client and get live copies.
type system struct {
	t       *testing.T
	natsURL string
	seqCfg  sequencer.Config
	gws     []*testGateway
	logs    *logBuf
	svc     *sequencer.Service
	stopSeq func()
	// The first gateway's feeds, handed to the service before it starts.
	localFeeds *sequencer.Feeds
}

type testGateway struct {
	g       *Gateway
	srv     *httptest.Server
	url     string
	feeds   *sequencer.Feeds
	metrics *Metrics
	stopped bool
}

func newSystem(t *testing.T, n int, cfg Config) *system {
	t.Helper()
	s := &system{t: t, logs: &logBuf{}}
	ns := embednats.Server(t)
	s.natsURL = ns.ClientURL()
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.seqCfg = sequencer.Config{Partitions: 2, Logger: log}
	nc := embednats.Connect(t, s.natsURL)
	js, _ := jetstream.New(nc)
	if err := sequencer.Provision(context.Background(), js, s.seqCfg); err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		s.localFeeds = s.newFeeds(embednats.Connect(t, s.natsURL, nats.NoEcho()))
	}
	s.startSequencer()
	for i := 0; i < n; i++ {
		s.addGateway(cfg, log)
	}
	t.Cleanup(s.close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("system log:\n%s", s.logs.String())
		}
	})
	return s
}

func (s *system) startSequencer() {
	var opts []sequencer.Option
	if s.localFeeds != nil {
		opts = append(opts, sequencer.WithLocalFeeds(s.localFeeds))
	}
	svc, err := sequencer.NewService(embednats.Connect(s.t, s.natsURL), s.seqCfg, opts...)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx, 5*time.Second); close(done) }()
	s.svc = svc
	s.stopSeq = func() { cancel(); <-done }
	testutil.WaitFor(s.t, 10*time.Second, "the sequencer to own every partition", func() bool {
		return len(svc.Owned()) >= s.seqCfg.Partitions
	})
}

func (s *system) newFeeds(nc *nats.Conn) *sequencer.Feeds {
	feeds, err := sequencer.NewFeeds(nc, s.seqCfg, sequencer.FeedConfig{CheckAfter: 100 * time.Millisecond})
	if err != nil {
		s.t.Fatal(err)
	}
	return feeds
}

func (s *system) addGateway(cfg Config, log *slog.Logger) *testGateway {
	nc := embednats.Connect(s.t, s.natsURL)
	feeds := s.localFeeds
	if len(s.gws) > 0 || feeds == nil {
		feeds = s.newFeeds(nc)
	}
	if cfg.Logger == nil {
		cfg.Logger = log
	}
	if cfg.TokenSecret == nil {
		cfg.TokenSecret = testSecret
	}
	m := NewMetrics(nil)
	cfg.Metrics = m
	var app Appender = sequencer.NewClient(nc, s.seqCfg)
	if len(s.gws) == 0 {
		app = sequencer.NewLocalFirst(s.svc, sequencer.NewClient(nc, s.seqCfg))
	}
	g, err := New(app, feeds, nil, cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	tg := &testGateway{g: g, srv: srv, url: "ws://" + srv.Listener.Addr().String() + "/ws", feeds: feeds, metrics: m}
	s.gws = append(s.gws, tg)
	return tg
}

func (tg *testGateway) stop(t testing.TB) {
	if tg.stopped {
		return
	}
	tg.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tg.srv.Config.SetKeepAlivesEnabled(false)
	if err := tg.g.Shutdown(ctx); err != nil {
		t.Errorf("gateway shutdown: %v", err)
	}
	tg.srv.Close()
	tg.feeds.Close()
}

func (s *system) close() {
	for _, tg := range s.gws {
		tg.stop(s.t)
	}
	s.stopSeq()
	checkNoGatewayGoroutines(s.t)
}

// checkNoGatewayGoroutines fails if any goroutine of this package's
// non-test code is still running.
func checkNoGatewayGoroutines(t testing.TB) {
	t.Helper()
	var leaked []string
	defer func() {
		if len(leaked) > 0 { // WaitFor failed
			t.Logf("goroutines left behind:\n%s", strings.Join(leaked, "\n\n"))
		}
	}()
	testutil.WaitFor(t, 5*time.Second, "the gateway's goroutines to end", func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		leaked = leaked[:0]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "gamerelay/gateway.(*") && !strings.Contains(g, "_test.go") {
				leaked = append(leaked, g)
			}
		}
		return len(leaked) == 0
	})
}

// client is a real WebSocket client (gobwas/ws) with a reader goroutine.
type client struct {
	t        testing.TB
	conn     net.Conn
	wmu      sync.Mutex
	frames   chan []byte
	audience chan []byte // audience frames, kept apart: they come at any time
	done     chan struct{}
	code     ws.StatusCode // close code received; valid after done
	pings    atomic.Int64  // pings received and answered by read
	pongs    atomic.Int64  // pongs received by read
}

type lockedRW struct {
	c *client
}

func (l lockedRW) Read(p []byte) (int, error) { return l.c.conn.Read(p) }
func (l lockedRW) Write(p []byte) (int, error) {
	l.c.wmu.Lock()
	defer l.c.wmu.Unlock()
	return l.c.conn.Write(p)
}

func dial(t testing.TB, url string) *client {
	t.Helper()
	c := dialRaw(t, url)
	go c.readLoop()
	return c
}

// dialRaw connects without reading: the caller decides when to read.
func dialRaw(t testing.TB, url string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, _, err := ws.Dial(ctx, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c := &client{t: t, conn: conn, frames: make(chan []byte, 1<<16), audience: make(chan []byte, 1<<10), done: make(chan struct{})}
	t.Cleanup(func() { _ = conn.Close() })
	return c
}

func (c *client) readLoop() {
	defer close(c.done)
	for {
		p, code, err := c.read()
		if err != nil {
			c.code = code
			return
		}
		if bytes.HasPrefix(p, []byte(`{"type":"audience"`)) {
			select {
			case c.audience <- p:
			default: // nobody looks: keep the latest ones
				<-c.audience
				c.audience <- p
			}
			continue
		}
		c.frames <- p
	}
}

// nextAudience waits up to d for an audience frame matching want.
func (c *client) nextAudience(d time.Duration, want func(players, spectators int) bool) map[string]any {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case p := <-c.audience:
			var m map[string]any
			if err := json.Unmarshal(p, &m); err != nil {
				c.t.Fatalf("audience frame %q: %v", p, err)
			}
			if _, ok := m["msg_id"]; ok {
				c.t.Fatalf("audience frame with a msg_id: %s", p)
			}
			pl, _ := m["players"].(float64)
			sp, _ := m["spectators"].(float64)
			if want(int(pl), int(sp)) {
				return m
			}
		case <-deadline:
			c.t.Fatal("no matching audience frame in time")
			return nil
		}
	}
}

var errClosed = errors.New("closed by server")

// read returns the next data message. It answers pings, and on a close
// frame answers it and returns errClosed with the code. (wsutil refuses
// close codes outside RFC 6455 such as 1013, which browsers accept.)
func (c *client) read() ([]byte, ws.StatusCode, error) {
	for {
		h, err := ws.ReadHeader(c.conn)
		if err != nil {
			return nil, 0, err
		}
		if h.Length > 1<<20 {
			return nil, 0, errors.New("server frame over 1 MiB")
		}
		f := ws.Frame{Header: h, Payload: make([]byte, h.Length)}
		if _, err := io.ReadFull(c.conn, f.Payload); err != nil {
			return nil, 0, err
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			_ = wsutil.WriteClientMessage(lockedRW{c}, ws.OpPong, f.Payload)
			c.pings.Add(1)
		case ws.OpPong:
			c.pongs.Add(1)
		case ws.OpClose:
			var code ws.StatusCode
			if len(f.Payload) >= 2 {
				code = ws.StatusCode(binary.BigEndian.Uint16(f.Payload))
			}
			_ = wsutil.WriteClientMessage(lockedRW{c}, ws.OpClose, f.Payload[:min(2, len(f.Payload))])
			return nil, code, errClosed
		case ws.OpText, ws.OpBinary:
			if !f.Header.Fin {
				return nil, 0, errors.New("fragmented server frame")
			}
			return f.Payload, 0, nil
		}
	}
}

func (c *client) send(s string) {
	c.t.Helper()
	if err := wsutil.WriteClientText(lockedRW{c}, []byte(s)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next returns the next frame as a map, failing after d.
func (c *client) next(d time.Duration) map[string]any {
	c.t.Helper()
	select {
	case p := <-c.frames:
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			c.t.Fatalf("frame %q: %v", p, err)
		}
		return m
	case <-c.done:
		select {
		case p := <-c.frames:
			var m map[string]any
			_ = json.Unmarshal(p, &m)
			return m
		default:
		}
		c.t.Fatalf("connection closed (code %d) while waiting for a frame", c.code)
	case <-time.After(d):
		c.t.Fatal("no frame in time")
	}
	return nil
}

// expect reads the next frame and checks its type (and code for errors).
func (c *client) expect(typ string, code ...string) map[string]any {
	c.t.Helper()
	m := c.next(10 * time.Second)
	if m["type"] != typ {
		c.t.Fatalf("got %v, want type %s", m, typ)
	}
	if len(code) > 0 && m["code"] != code[0] {
		c.t.Fatalf("got %v, want code %s", m, code[0])
	}
	return m
}

// closed waits for the server to close the connection and returns the code.
func (c *client) closed(d time.Duration) ws.StatusCode {
	c.t.Helper()
	select {
	case <-c.done:
		return c.code
	case <-time.After(d):
		c.t.Fatal("connection not closed in time")
	}
	return 0
}

func id(m map[string]any) uint64 {
	f, _ := m["msg_id"].(float64)
	return uint64(f)
}

func mint(t testing.TB, secret []byte, game, role string, ttl time.Duration) string {
	t.Helper()
	return mintClaims(t, secret, token.Claims{Game: game, Role: role, Exp: time.Now().Add(ttl).Unix()})
}

func mintClaims(t testing.TB, secret []byte, c token.Claims) string {
	t.Helper()
	s, err := token.NewHMACSigner(secret, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func joinMsg(game, token string, since uint64) string {
	b, _ := json.Marshal(map[string]any{"type": "join", "game": game, "token": token, "since": since})
	return string(b)
}

func testutilValue(c prometheus.Collector) float64 { return promtest.ToFloat64(c) }
