package web

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/gateway"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/sequencer"
)

const chromiumPath = "/usr/bin/chromium"

// requireNode fails (or, with GAMERELAY_SKIP_BROWSER=1, skips) t unless
// node is installed; with browser, also Chromium and web/e2e/node_modules.
func requireNode(t *testing.T, browser bool) string {
	t.Helper()
	skip := os.Getenv("GAMERELAY_SKIP_BROWSER") == "1"
	if skip && browser {
		t.Skip("GAMERELAY_SKIP_BROWSER=1: skipping the browser test")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		if skip {
			t.Skip("GAMERELAY_SKIP_BROWSER=1 and node is not installed")
		}
		t.Fatal("node is not installed: the JavaScript tests need Node.js ≥ 20")
	}
	if !browser {
		return node
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing: run `make e2e-deps` (or set GAMERELAY_SKIP_BROWSER=1 to skip this test)", chromiumPath)
	}
	if _, err := os.Stat(filepath.Join("e2e", "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatal("web/e2e/node_modules is missing: run `make e2e-deps` (or set GAMERELAY_SKIP_BROWSER=1 to skip this test)")
	}
	return node
}

// TestJSUnit runs the JavaScript unit tests (client and game rules) with
// node's own test runner.
func TestJSUnit(t *testing.T) {
	node := requireNode(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "jstest/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test jstest/: %v\n%s", err, out)
	}
	t.Logf("node --test jstest/:\n%s", out)
}

// e2eSystem is NATS JetStream, a sequencer service and gateways serving
// /ws and the web handler, as `gamerelay dev` would.
type e2eSystem struct {
	t       *testing.T
	natsURL string
	seqCfg  sequencer.Config
	log     *slog.Logger
	logs    *syncBuffer
}

type e2eGateway struct {
	g     *gateway.Gateway
	srv   *http.Server
	feeds *sequencer.Feeds
	nc    *nats.Conn
	addr  string
	done  chan error
}

var e2eSecret = []byte("e2e-secret-0123456789abcdef-0123456789")

func newE2ESystem(t *testing.T) *e2eSystem {
	s := &e2eSystem{t: t, logs: &syncBuffer{}}
	s.log = slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ns := embednats.Server(t)
	s.natsURL = ns.ClientURL()
	s.seqCfg = sequencer.Config{Partitions: 1, Logger: s.log}
	js, err := jetstream.New(embednats.Connect(t, s.natsURL))
	if err != nil {
		t.Fatal(err)
	}
	if err := sequencer.Provision(context.Background(), js, s.seqCfg); err != nil {
		t.Fatal(err)
	}
	svc, err := sequencer.NewService(embednats.Connect(t, s.natsURL), s.seqCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx, 5*time.Second); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.WaitFor(t, 10*time.Second, "the sequencer to own every partition", func() bool {
		return len(svc.Owned()) >= s.seqCfg.Partitions
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("system log:\n%s", s.logs.String())
		}
	})
	return s
}

// startGateway serves a new gateway and the web handler on addr
// ("127.0.0.1:0" for any port).
func (s *e2eSystem) startGateway(addr string) *e2eGateway {
	t := s.t
	var ln net.Listener
	// A restarted gateway takes over its predecessor's address.
	testutil.WaitFor(t, 5*time.Second, "a listener on "+addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	nc := embednats.Connect(t, s.natsURL)
	feeds, err := sequencer.NewFeeds(nc, s.seqCfg, sequencer.FeedConfig{CheckAfter: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(sequencer.NewClient(nc, s.seqCfg), feeds, nil, gateway.Config{
		TokenSecret:    e2eSecret,
		AllowAnonymous: true,
		AllowCreate:    true,
		Logger:         s.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", g)
	mux.Handle("/", Handler())
	gw := &e2eGateway{g: g, feeds: feeds, nc: nc, addr: ln.Addr().String(), done: make(chan error, 1),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() { gw.done <- gw.srv.Serve(ln) }()
	t.Cleanup(func() { gw.stop(t) })
	return gw
}

// stop drains the gateway as SIGTERM does: stop accepting, close every
// WebSocket with 1001, wait.
func (gw *e2eGateway) stop(t *testing.T) {
	if gw.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.srv.Shutdown(ctx); err != nil {
		t.Errorf("http shutdown: %v", err)
	}
	if err := gw.g.Shutdown(ctx); err != nil {
		t.Errorf("gateway shutdown: %v", err)
	}
	if err := <-gw.done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("serve: %v", err)
	}
	gw.feeds.Close()
	gw.nc.Close()
	gw.srv = nil
}

func (gw *e2eGateway) url() string { return "http://" + gw.addr }

// TestConnectFourE2E plays a whole game in headless Chromium: two players
// on gateway A, a spectator on gateway B; gateway A is restarted mid-game.
// The script is web/e2e/connect4.mjs; the final screenshot is kept in the
// test's artifact directory (go test -artifacts -outputdir DIR).
func TestConnectFourE2E(t *testing.T) {
	node := requireNode(t, true)
	s := newE2ESystem(t)
	gwA := s.startGateway("127.0.0.1:0")
	gwB := s.startGateway("127.0.0.1:0")
	addrA := gwA.addr

	out := t.ArtifactDir()
	t.Logf("e2e output directory: %s", out)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "connect4.mjs"), gwA.url(), gwB.url(), out)
	cmd.Stderr = t.Output()
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	passed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		t.Logf("e2e: %s", line)
		switch line {
		case "DROP":
			gwA.stop(t) // players get 1001 and start reconnecting
			gwA = s.startGateway(addrA)
			t.Logf("gateway A restarted on %s", gwA.addr)
			if _, err := io.WriteString(stdin, "RESTARTED\n"); err != nil {
				t.Errorf("writing to the e2e script: %v", err)
			}
		case "PASS":
			passed = true
		}
	}
	err = cmd.Wait()
	t.Logf("e2e script ran %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("node e2e/connect4.mjs: %v (its messages are above; screenshots of failures in %s)", err, out)
	}
	if !passed {
		t.Fatal("the e2e script exited without PASS")
	}
	png, err := os.ReadFile(filepath.Join(out, "final-board.png"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatal("final-board.png is not a PNG")
	}
	t.Logf("final screenshot: %s (%d bytes)", filepath.Join(out, "final-board.png"), len(png))
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
