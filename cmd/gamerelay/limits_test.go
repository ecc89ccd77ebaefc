package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/gateway"
	"github.com/gamerelay/gamerelay/internal/admin"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/sequencer"
)

// readFrame reads server frames until one of type typ arrives.
func readFrame(t *testing.T, conn net.Conn, typ string) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		p, err := wsutil.ReadServerText(conn)
		if err != nil {
			t.Fatalf("waiting for a %q frame: %v", typ, err)
		}
		if strings.Contains(string(p), `"type":"`+typ+`"`) {
			return string(p)
		}
	}
}

// The public listener's limits (here a few hundred milliseconds) bound
// HTTP clients but not WebSockets: net/http clears the deadlines of a
// hijacked connection, so a WebSocket idle far beyond ReadTimeout and
// IdleTimeout still works.
func TestPublicListenerLimits(t *testing.T) {
	ns := embednats.Server(t)
	nc := embednats.Connect(t, ns.ClientURL())
	live := embednats.Connect(t, ns.ClientURL(), nats.NoEcho())
	listen, adm := freeAddr(t), freeAddr(t)
	var (
		lc logCfg
		gf gatewayFlags
	)
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	lc.register(fs)
	gf.register(fs, gatewayRole)
	if err := fs.Parse([]string{"--allow-anonymous", "--listen", listen, "--drain-timeout", "5s"}); err != nil {
		t.Fatal(err)
	}
	gf.limits = admin.Limits{ReadHeaderTimeout: 100 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond, MaxHeaderBytes: 4 << 10}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := admin.NewRegistry()
	seqCfg, err := lc.config(log, sequencer.NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	gcfg, err := gf.config(log, gateway.NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveGateway(ctx, nc, live, seqCfg, gcfg, gf, adm, reg, log, embeddedSequencer, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	waitReady(t, "http://"+adm+"/readyz", nil)

	// Plain HTTP is bounded: oversized headers get 431, an idle keep-alive
	// is closed.
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nCookie: %s\r\n\r\n", strings.Repeat("a", 16<<10))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized upgrade request: %v %v, want 431", resp, err)
	}
	c2, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "GET /gamerelay.js HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c2), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /gamerelay.js: %v %v", resp, err)
	}
	_ = c2.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(io.Discard, c2); err != nil {
		t.Fatalf("idle keep-alive not closed by the server: %v", err)
	}

	// A WebSocket outlives both timeouts.
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	conn, _, _, err := ws.Dial(dctx, "ws://"+listen+"/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := wsutil.WriteClientText(conn, []byte(`{"type":"join","game":"limits"}`)); err != nil {
		t.Fatal(err)
	}
	readFrame(t, conn, "joined")
	// The subject: the WebSocket idles for five times ReadTimeout and
	// IdleTimeout, which closed the idle keep-alive above.
	time.Sleep(5 * gf.limits.ReadTimeout)
	if err := wsutil.WriteClientText(conn, []byte(`{"type":"move","col":3}`)); err != nil {
		t.Fatalf("write after %v idle: %v", 5*gf.limits.ReadTimeout, err)
	}
	if f := readFrame(t, conn, "move"); !strings.Contains(f, `"col":3`) {
		t.Fatalf("move frame %s", f)
	}
}
