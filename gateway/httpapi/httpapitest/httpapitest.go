// Package httpapitest runs a whole gamerelay installation in process for
// tests of the HTTP API and of its clients: embedded NATS JetStream, a
// sequencer service, and HTTP servers ("pods") serving the gateway's
// WebSocket endpoint at /ws and the API at /v1/, as cmd/gamerelay mounts
// them. Everything is stopped by t.Cleanup.
package httpapitest

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/gateway"
	"github.com/gamerelay/gamerelay/gateway/httpapi"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/sequencer"
)

// Secret is the token secret of every test system.
var Secret = []byte("httpapitest-secret-0123456789abcdef")

// Default API keys: owner → key.
var Keys = map[string]string{
	"studio":  "studio-key-0123456789abcdef",
	"matcher": "matcher-key-0123456789abcdef",
}

// Options configure a System; the zero value is one pod with Keys.
type Options struct {
	Pods      int               // HTTP servers, each with its own NATS connection; default 1
	Keys      map[string]string // default Keys
	Sequencer sequencer.Config  // Partitions default 2; Logger is set
	API       httpapi.Config    // Keys, Appender, Reader, TokenSecret, Logger are set when empty
	Gateway   gateway.Config    // TokenSecret and Logger are set when empty
	History   gateway.History   // archive for gateways and API; nil means none
}

// System is a running installation.
type System struct {
	t       testing.TB
	NATSURL string
	Seq     sequencer.Config
	Reader  *sequencer.Reader
	Pods    []*Pod
	Logs    *LogBuf
	stopSeq func()
}

// Pod is one gateway process: its HTTP server serves /ws and /v1/.
type Pod struct {
	URL     string // http://127.0.0.1:port
	WSURL   string // ws://127.0.0.1:port/ws
	API     *httpapi.API
	Gateway *gateway.Gateway
	srv     *httptest.Server
	feeds   *sequencer.Feeds
}

// LogBuf collects a system's log lines.
type LogBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs a System for t.
func Start(t testing.TB, o Options) *System {
	t.Helper()
	s := &System{t: t, Logs: &LogBuf{}}
	log := slog.New(slog.NewTextHandler(s.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ns := embednats.Server(t)
	s.NATSURL = ns.ClientURL()
	s.Seq = o.Sequencer
	if s.Seq.Partitions == 0 {
		s.Seq.Partitions = 2
	}
	s.Seq.Logger = log
	nc := embednats.Connect(t, s.NATSURL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := sequencer.Provision(context.Background(), js, s.Seq); err != nil {
		t.Fatal(err)
	}
	s.Reader = sequencer.NewReader(nc, s.Seq)
	s.startSequencer()
	t.Cleanup(s.close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("system log:\n%s", s.Logs.String())
		}
	})
	for range max(o.Pods, 1) {
		s.addPod(o, log)
	}
	return s
}

func (s *System) startSequencer() {
	svc, err := sequencer.NewService(embednats.Connect(s.t, s.NATSURL), s.Seq)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx, 5*time.Second); close(done) }()
	s.stopSeq = func() { cancel(); <-done }
	testutil.WaitFor(s.t, 10*time.Second, "httpapitest: the sequencer to own every partition", func() bool {
		return len(svc.Owned()) >= s.Seq.Partitions
	})
}

func (s *System) addPod(o Options, log *slog.Logger) {
	nc := embednats.Connect(s.t, s.NATSURL)
	feeds, err := sequencer.NewFeeds(nc, s.Seq, sequencer.FeedConfig{CheckAfter: 100 * time.Millisecond})
	if err != nil {
		s.t.Fatal(err)
	}
	app := sequencer.NewClient(nc, s.Seq)
	gcfg := o.Gateway
	if gcfg.TokenSecret == nil {
		gcfg.TokenSecret = Secret
	}
	if gcfg.Logger == nil {
		gcfg.Logger = log
	}
	g, err := gateway.New(app, feeds, o.History, gcfg)
	if err != nil {
		s.t.Fatal(err)
	}
	acfg := o.API
	if acfg.Keys == nil {
		acfg.Keys = o.Keys
		if acfg.Keys == nil {
			acfg.Keys = Keys
		}
	}
	if acfg.Appender == nil {
		acfg.Appender = app
	}
	if acfg.Reader == nil {
		acfg.Reader = sequencer.NewReader(nc, s.Seq)
	}
	if acfg.History == nil {
		acfg.History = o.History
	}
	if acfg.TokenSecret == nil {
		acfg.TokenSecret = gcfg.TokenSecret
	}
	if acfg.Logger == nil {
		acfg.Logger = log
	}
	api, err := httpapi.New(acfg)
	if err != nil {
		s.t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", g)
	mux.Handle("/v1/", api)
	srv := httptest.NewServer(mux)
	s.Pods = append(s.Pods, &Pod{
		URL:     srv.URL,
		WSURL:   "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws",
		API:     api,
		Gateway: g,
		srv:     srv,
		feeds:   feeds,
	})
}

// URL is the first pod's base URL.
func (s *System) URL() string { return s.Pods[0].URL }

// Head returns the game's last msg_id (0 if it has none).
func (s *System) Head(game string) uint64 {
	s.t.Helper()
	head, ok, err := s.Reader.Head(context.Background(), game)
	if err != nil {
		s.t.Fatalf("head of %s: %v", game, err)
	}
	if !ok {
		return 0
	}
	return head.ID
}

// Messages returns every stored message of the game, in msg_id order.
func (s *System) Messages(game string) [][]byte {
	s.t.Helper()
	head := s.Head(game)
	var out [][]byte
	err := s.Reader.Range(context.Background(), game, 0, head, nil, func(m sequencer.Stored) error {
		out = append(out, m.Data)
		return nil
	})
	if err != nil {
		s.t.Fatalf("messages of %s: %v", game, err)
	}
	return out
}

func (s *System) close() {
	for _, p := range s.Pods {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		p.srv.Config.SetKeepAlivesEnabled(false)
		if err := p.Gateway.Shutdown(ctx); err != nil {
			s.t.Errorf("gateway shutdown: %v", err)
		}
		cancel()
		p.srv.Close()
		p.feeds.Close()
	}
	s.stopSeq()
}
