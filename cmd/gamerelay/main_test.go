package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/backend"
	"github.com/gamerelay/gamerelay/internal/bench"
	"github.com/gamerelay/gamerelay/internal/cli"
	"github.com/gamerelay/gamerelay/sequencer"
)

func TestUsageAndExitCodes(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		code int
		out  string
	}{
		"no args":          {nil, nil, 2, "Commands:"},
		"help":             {[]string{"--help"}, nil, 0, "sequencer"},
		"unknown command":  {[]string{"frobnicate"}, nil, 2, `unknown command "frobnicate"`},
		"sequencer help":   {[]string{"sequencer", "--help"}, nil, 0, "$GAMERELAY_PARTITIONS"},
		"dev help":         {[]string{"dev", "--help"}, nil, 0, "$GAMERELAY_NATS_LISTEN"},
		"bad flag":         {[]string{"sequencer", "--bogus"}, nil, 2, "flag provided but not defined"},
		"bad env":          {[]string{"sequencer"}, map[string]string{"GAMERELAY_PARTITIONS": "many"}, 2, "$GAMERELAY_PARTITIONS"},
		"invalid config":   {[]string{"sequencer", "--partitions", "-3"}, nil, 2, "Partitions -3"},
		"bad log level":    {[]string{"dev", "--log-level", "loud"}, nil, 2, "--log-level"},
		"stray argument":   {[]string{"dev", "extra"}, nil, 2, `unexpected argument "extra"`},
		"bad nats address": {[]string{"dev", "--nats-listen", "nohost"}, nil, 2, "--nats-listen"},
		"gateway help":     {[]string{"gateway", "--help"}, nil, 0, "$GAMERELAY_TOKEN_SECRET"},
		"gateway no auth":  {[]string{"gateway"}, nil, 2, "no one could join"},
		"create no secret": {[]string{"gateway", "--allow-create"}, nil, 2, "AllowCreate needs TokenSecret"},
		"short secret":     {[]string{"gateway", "--token-secret", "short"}, nil, 2, "at least 16 bytes"},
		"bad api key":      {[]string{"gateway", "--allow-anonymous", "--api-key", "secret-without-owner"}, nil, 2, "want NAME=KEY"},
		"token no game":    {[]string{"token", "--token-secret", "0123456789abcdef"}, nil, 2, "--game"},
		"token bad role":   {[]string{"token", "--game", "g", "--role", "king", "--token-secret", "0123456789abcdef"}, nil, 2, "role"},
		"floor no store":   {[]string{"bench", "--mode", "reference", "--persist-checked"}, nil, 2, "need --persist DIR"},
		"two floors":       {[]string{"bench", "--mode", "reference", "--persist", "x", "--persist-checked", "--persist-group"}, nil, 2, "choose one"},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			if code := run(tc.args, &out, &out); code != tc.code {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tc.code, out.String())
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Fatalf("output lacks %q:\n%s", tc.out, out.String())
			}
		})
	}
}

// wsSession connects, sends msgs, and reads frames until one of type
// "move" arrives (or 5s pass).
func wsSession(t *testing.T, url string, msgs ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, _, err := ws.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, m := range msgs {
		if err := wsutil.WriteClientText(conn, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var out []string
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		p, err := wsutil.ReadServerText(conn)
		if err != nil {
			t.Fatalf("read after %q: %v", out, err)
		}
		out = append(out, string(p))
		if strings.Contains(string(p), `"type":"move"`) {
			return out
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never ready (last error %v)", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDevWithSecondSequencer runs `gamerelay dev`, joins a second
// `gamerelay sequencer` to its embedded NATS, appends through the
// sequencer API, and stops both as SIGTERM would.
func TestDevWithSecondSequencer(t *testing.T) {
	natsAddr, devAdmin, seqAdmin, devListen, mongoAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	devDone := make(chan error, 1)
	go func() {
		devDone <- runDev(ctx, []string{"--data", t.TempDir(), "--nats-listen", natsAddr, "--admin", devAdmin, "--listen", devListen, "--mongo-listen", mongoAddr, "--log-level", "warn"}, io.Discard, io.Discard)
	}()
	waitReady(t, "http://"+devAdmin+"/readyz")

	// Secrets come from files (mounted Secrets in Kubernetes).
	secrets := t.TempDir()
	secretFile := func(name, content string) string {
		p := filepath.Join(secrets, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seqCtx, seqCancel := context.WithCancel(ctx)
	seqDone := make(chan error, 1)
	natsURLFile := secretFile("nats-url", "nats://"+natsAddr+"\n")
	go func() {
		seqDone <- runSequencer(seqCtx, []string{"--nats-url-file", natsURLFile, "--admin", seqAdmin, "--lease-ttl", "1s", "--log-level", "warn"}, io.Discard, io.Discard)
	}()
	waitReady(t, "http://"+seqAdmin+"/readyz")

	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	client := sequencer.NewClient(nc, sequencer.Config{})
	for i := 1; i <= 3; i++ {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := client.Append(actx, "cli-game", []byte(fmt.Sprintf(`{"type":"n","i":%d}`, i)), "")
		acancel()
		if err != nil {
			t.Fatal(err)
		}
		if r.MsgID != uint64(i) {
			t.Fatalf("append %d got msg_id %d", i, r.MsgID)
		}
	}
	// dev serves the demo page and the JS client next to /ws.
	for _, path := range []string{"/", "/gamerelay.js"} {
		resp, err := http.Get("http://" + devListen + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
	resp, err := http.Get("http://" + devAdmin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(buf.String(), "gamerelay_sequencer_partitions_owned") {
		t.Fatal("metrics lack sequencer gauges")
	}

	// A second gateway joins dev's NATS; a token from `gamerelay token`
	// admits a player there, who sees what was appended above.
	const secret = "cli-test-secret-0123456789"
	secretPath := secretFile("token-secret", "\n  "+secret+"\n")
	var tok bytes.Buffer
	if code := run([]string{"token", "--game", "cli-game", "--sub", "ana", "--token-secret-file", secretPath}, &tok, io.Discard); code != 0 {
		t.Fatalf("token exit %d", code)
	}
	t.Setenv("GAMERELAY_TOKEN_SECRET_FILE", secretPath) // the environment twin of --token-secret-file
	keysFile := secretFile("api-keys", "# backend services\n\nstudio=studio-key-0123456789\n  other=other-key-0123456789, third=third-key-0123456789  \n")
	gwListen, gwAdmin := freeAddr(t), freeAddr(t)
	gwCtx, gwCancel := context.WithCancel(ctx)
	gwDone := make(chan error, 1)
	go func() {
		gwDone <- runGateway(gwCtx, []string{"--nats", "nats://" + natsAddr, "--listen", gwListen, "--admin", gwAdmin, "--api-keys-file", keysFile, "--log-level", "warn"}, io.Discard, io.Discard)
	}()
	select {
	case err := <-gwDone:
		t.Fatalf("gateway exited: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	waitReady(t, "http://"+gwAdmin+"/readyz")
	frames := wsSession(t, "ws://"+gwListen+"/ws", `{"type":"join","game":"cli-game","token":"`+strings.TrimSpace(tok.String())+`"}`, `{"type":"move","col":1}`)
	if !strings.Contains(frames[0], `"type":"joined"`) || !strings.Contains(frames[0], `"head":3`) {
		t.Fatalf("joined frame %s", frames[0])
	}
	last := frames[len(frames)-1]
	if !strings.Contains(last, `"type":"move"`) || !strings.Contains(last, `"user":"ana"`) {
		t.Fatalf("move frame %s", last)
	}
	// The backend API on the same listener appends into the same order.
	bc := backend.New("http://"+gwListen, "studio-key-0123456789")
	apiID, err := bc.Publish(ctx, "cli-game", map[string]any{"type": "timer", "left": 3}, "t-1")
	if err != nil {
		t.Fatal(err)
	}
	if apiID <= 4 {
		t.Fatalf("API message got msg_id %d, want after the move", apiID)
	}
	for i, key := range []string{"other-key-0123456789", "third-key-0123456789"} {
		if id, err := backend.New("http://"+gwListen, key).Publish(ctx, "cli-game", map[string]any{"type": "timer"}, fmt.Sprintf("k-%d", i)); err != nil || id != apiID+1+uint64(i) {
			t.Fatalf("key %d from the file: msg_id %d, %v", i+2, id, err)
		}
	}
	gwCancel()
	if err := <-gwDone; err != nil {
		t.Fatalf("gateway exit: %v", err)
	}

	seqCancel()
	if err := <-seqDone; err != nil {
		t.Fatalf("sequencer exit: %v", err)
	}
	cancel()
	if err := <-devDone; err != nil {
		t.Fatalf("dev exit: %v", err)
	}
}

func TestSuiteSplicesItsSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.md")
	if err := spliceFile(path, "first\n"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append([]byte("# keep me\n"), mustRead(t, path)...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := spliceFile(path, "second\n"); err != nil {
		t.Fatal(err)
	}
	got := string(mustRead(t, path))
	if !strings.Contains(got, "# keep me") || !strings.Contains(got, "second") || strings.Contains(got, "first") || strings.Count(got, suiteBegin) != 1 {
		t.Fatalf("spliced file:\n%s", got)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The suite's ratios set gamerelay against the bare reference and each
// floor of the same scenario, and replay with the big stream against the
// small one.
func TestSuiteTableRatios(t *testing.T) {
	ms := time.Millisecond
	pp := bench.Config{Mode: "pingpong", Games: 10, Players: 1}
	fo := bench.Config{Mode: "fanout", Games: 10, Players: 1, Spectators: 3}
	runs := []suiteRun{
		{"pp", pp, "reference"}, {"pp", pp, "reference+js"}, {"pp", pp, "reference+checked"}, {"pp", pp, "gamerelay"},
		{"fo", fo, "reference"}, {"fo", fo, "reference+js"}, {"fo", fo, "reference+checked"}, {"fo", fo, "gamerelay"},
		{"rj small", bench.Config{Mode: "rejoin"}, "gamerelay"}, {"rj big", bench.Config{Mode: "rejoin"}, "gamerelay"},
	}
	rep := func(dels, cpu float64, p99 time.Duration) *bench.Report {
		return &bench.Report{Sends: 1, SendsPerSec: dels, DeliveriesSec: dels, ServerCPUPerDelivery: cpu, All: bench.Latency{Count: 1, P50: p99 / 2, P99: p99}}
	}
	replay := func(others int, p50 time.Duration) *bench.Report {
		return &bench.Report{Replay: &bench.ReplayReport{History: 1000, Others: others, Latency: bench.Latency{P50: p50, P99: 2 * p50}}}
	}
	results := []*bench.Report{
		rep(60000, 12, ms), rep(30000, 30, 2*ms), rep(25000, 40, 3*ms), rep(20000, 48, 4*ms),
		rep(2000, 10, ms), rep(2000, 20, 2*ms), rep(2000, 25, 3*ms), rep(2000, 30, 4*ms),
		replay(10_000, 20*ms), replay(1_000_000, 25*ms),
	}
	got := suiteTable(runs, results)
	for _, want := range []string{
		"- pp: throughput 33 % of the reference (BRIEF: ≥ 80 %) [50 %, 42 %], 80 % of reference+checked; CPU per delivery 4.00× [2.50×, 3.33×], 1.20× reference+checked",
		"- fo: CPU per delivery 3.00× (BRIEF: ≤ 1.3×) [2.00×, 2.50×], 1.20× reference+checked; p99 latency 4ms vs 1ms [2ms, 3ms]",
		"- replay of 1,000 messages: p50 with 1000000 others / with 10000 others = 1.25×",
		"| pp | reference+checked | 25000 | 25000 | 1.5ms / 3ms | 40.0 |  |  |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// `gamerelay dev` listens on this machine only unless told otherwise:
// --expose widens the public and admin defaults, explicit addresses win,
// the embedded NATS and MongoDB-wire servers stay on loopback.
func TestDevListenersLocalByDefault(t *testing.T) {
	var help bytes.Buffer
	if code := run([]string{"dev", "--help"}, &help, &help); code != 0 {
		t.Fatalf("dev --help: exit %d", code)
	}
	for _, flag := range []string{"listen", "admin", "nats-listen", "mongo-listen"} {
		if !regexp.MustCompile(`--` + flag + `  \[\$\S+\]\n.*\(default "127\.0\.0\.1:\d+"\)`).MatchString(help.String()) {
			t.Errorf("--%s does not default to a loopback address:\n%s", flag, help.String())
		}
	}
	for name, tc := range map[string]struct {
		args          []string
		env           map[string]string
		listen, admin string
	}{
		"defaults":        {nil, nil, ":8080", ":9090"},
		"explicit listen": {[]string{"--listen", "127.0.0.1:8081"}, nil, "127.0.0.1:8081", ":9090"},
		"admin by env":    {nil, map[string]string{"GAMERELAY_ADMIN": "10.0.0.1:9999"}, ":8080", "10.0.0.1:9999"},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := cli.NewFlagSet("dev", "", io.Discard)
			listen := fs.String("listen", devListenAddr, "")
			admin := fs.String("admin", devAdminAddr, "")
			if err := cli.Parse(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			exposeDefaults(fs, map[string]*string{"listen": listen, "admin": admin})
			if *listen != tc.listen || *admin != tc.admin {
				t.Fatalf("--expose: listen %q admin %q, want %q %q", *listen, *admin, tc.listen, tc.admin)
			}
		})
	}
}
