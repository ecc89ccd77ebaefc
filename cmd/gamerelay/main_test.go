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
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/sequencer"
)

func TestUsageAndExitCodes(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		code int
		out  string
	}{
		"no args":                     {nil, nil, 2, "Commands:"},
		"help":                        {[]string{"--help"}, nil, 0, "sequencer"},
		"unknown command":             {[]string{"frobnicate"}, nil, 2, `unknown command "frobnicate"`},
		"sequencer help":              {[]string{"sequencer", "--help"}, nil, 0, "$GAMERELAY_PARTITIONS"},
		"dev help":                    {[]string{"dev", "--help"}, nil, 0, "$GAMERELAY_NATS_LISTEN"},
		"bad flag":                    {[]string{"sequencer", "--bogus"}, nil, 2, "flag provided but not defined"},
		"bad env":                     {[]string{"sequencer"}, map[string]string{"GAMERELAY_PARTITIONS": "many"}, 2, "$GAMERELAY_PARTITIONS"},
		"invalid config":              {[]string{"sequencer", "--partitions", "-3"}, nil, 2, "Partitions -3"},
		"bad log level":               {[]string{"dev", "--log-level", "loud"}, nil, 2, "--log-level"},
		"stray argument":              {[]string{"dev", "extra"}, nil, 2, `unexpected argument "extra"`},
		"bad nats address":            {[]string{"dev", "--nats-listen", "nohost"}, nil, 2, "--nats-listen"},
		"gateway help":                {[]string{"gateway", "--help"}, nil, 0, "$GAMERELAY_TOKEN_SECRET"},
		"gateway no auth":             {[]string{"gateway"}, nil, 2, "no one could join"},
		"create no secret":            {[]string{"gateway", "--allow-create"}, nil, 2, "AllowCreate needs TokenSecret"},
		"short secret":                {[]string{"gateway", "--token-secret", "short"}, nil, 2, "at least 32 bytes"},
		"bad trusted proxy":           {[]string{"gateway", "--allow-anonymous", "--trusted-proxies", "10.0.0.0/99"}, nil, 2, "--trusted-proxies"},
		"token keys file missing":     {[]string{"gateway", "--token-keys-file", "/nonexistent/keys"}, nil, 2, "--token-keys-file"},
		"public key not PEM":          {[]string{"gateway", "--token-public-key", "k1=main_test.go"}, nil, 2, "--token-public-key"},
		"create ttl over lifetime":    {[]string{"gateway", "--token-secret", tokenSecret, "--allow-create", "--token-ttl", "48h"}, nil, 2, "TokenTTL"},
		"bad api key":                 {[]string{"gateway", "--allow-anonymous", "--api-key", "secret-without-owner"}, nil, 2, "want NAME=KEY"},
		"token no game":               {[]string{"token", "--token-secret", tokenSecret}, nil, 2, "--game"},
		"token bad role":              {[]string{"token", "--game", "g", "--role", "king", "--token-secret", tokenSecret}, nil, 2, "role"},
		"token no key":                {[]string{"token", "--game", "g"}, nil, 2, "no key"},
		"token short secret":          {[]string{"token", "--game", "g", "--token-secret", tokenSecret[:31]}, nil, 2, "at least 32 bytes"},
		"token short secret from env": {[]string{"token", "--game", "g"}, map[string]string{"GAMERELAY_TOKEN_SECRET": tokenSecret[:31]}, 2, "GAMERELAY_TOKEN_SECRET): want at least 32"},
		"token two keys":              {[]string{"token", "--game", "g", "--token-secret", tokenSecret, "--key-file", "k.pem"}, nil, 2, "choose one"},
		"token two keys in env":       {[]string{"token", "--game", "g"}, map[string]string{"GAMERELAY_TOKEN_SECRET": tokenSecret, "GAMERELAY_KEY_FILE": "k.pem"}, 2, "choose one"},
		"token no key file":           {[]string{"token", "--game", "g", "--key-file", "/nonexistent/k.pem"}, nil, 2, "--key-file"},
		"token key file not PEM":      {[]string{"token", "--game", "g", "--key-file", "main_test.go"}, nil, 2, "--key-file"},
		"token nbf after exp":         {[]string{"token", "--game", "g", "--token-secret", tokenSecret, "--ttl", "1h", "--nbf", "2h"}, nil, 2, "--nbf"},
		"floor no store":              {[]string{"bench", "--mode", "reference", "--persist-checked"}, nil, 2, "need --persist DIR"},
		"two floors":                  {[]string{"bench", "--mode", "reference", "--persist", "x", "--persist-checked", "--persist-group"}, nil, 2, "choose one"},
		"two stores":                  {[]string{"bench", "--mode", "reference", "--persist", "x", "--persist-nats", "nats://127.0.0.1:1"}, nil, 2, "choose one store"},
		"replicas of one node":        {[]string{"bench", "--mode", "reference", "--persist", "x", "--persist-replicas", "3"}, nil, 2, "--persist-replicas needs --persist-nats"},
		"bench help":                  {[]string{"bench", "--help"}, nil, 0, "$GAMERELAY_SINCE_HEAD"},
		"spectators":                  {[]string{"bench", "--mode", "join", "--role", "spectator"}, nil, 2, "--role spectator needs --token-secret"},
		"bad role":                    {[]string{"bench", "--mode", "join", "--role", "king"}, nil, 2, `--role "king"`},
		"bad history":                 {[]string{"bench", "--mode", "join", "--history", "-1"}, nil, 2, "want a non-negative integer"},
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

// waitReady polls url until it answers 200. A role that sends its exit
// on exited (nil: not watched) before that fails the test at once.
func waitReady(t *testing.T, url string, exited <-chan error) {
	t.Helper()
	var last error // the last answer short of 200
	ready := false
	defer func() {
		if !ready && last != nil {
			t.Logf("%s last answered: %v", url, last)
		}
	}()
	testutil.WaitFor(t, 20*time.Second, url+" to answer 200", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("exited before %s answered 200: %v", url, err)
		default:
		}
		resp, err := http.Get(url)
		if err != nil {
			last = err
			return false
		}
		resp.Body.Close()
		last = fmt.Errorf("status %d", resp.StatusCode)
		return resp.StatusCode == http.StatusOK
	})
	ready = true
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
	waitReady(t, "http://"+devAdmin+"/readyz", devDone)

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
	waitReady(t, "http://"+seqAdmin+"/readyz", seqDone)

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
	const secret = tokenSecret
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
	waitReady(t, "http://"+gwAdmin+"/readyz", gwDone)
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
	if err := spliceFile(path, "first\n", devMarkers); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append([]byte("# keep me\n"), mustRead(t, path)...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := spliceFile(path, "second\n", devMarkers); err != nil {
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
		{name: "pp", cfg: pp, server: "reference"}, {name: "pp", cfg: pp, server: "reference+js"}, {name: "pp", cfg: pp, server: "reference+checked"}, {name: "pp", cfg: pp, server: "gamerelay"},
		{name: "fo", cfg: fo, server: "reference"}, {name: "fo", cfg: fo, server: "reference+js"}, {name: "fo", cfg: fo, server: "reference+checked"}, {name: "fo", cfg: fo, server: "gamerelay"},
		{name: "rj small", cfg: bench.Config{Mode: "rejoin"}, server: "gamerelay"}, {name: "rj big", cfg: bench.Config{Mode: "rejoin"}, server: "gamerelay"},
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
	got := suiteTable(runs, results, nil)
	tableHas(t, got,
		"- pp: throughput 33 % of the reference (target ≥ 80 %) [50 %, 42 %], 80 % of reference+checked; CPU per delivery 4.00× [2.50×, 3.33×], 1.20× reference+checked",
		"- fo: CPU per delivery 3.00× (target ≤ 1.3×) [2.00×, 2.50×], 1.20× reference+checked; p99 latency 4ms vs 1ms [2ms, 3ms]",
		"- replay of 1,000 messages: p50 with 1000000 others / with 10000 others = 1.25×",
		"| pp | reference+checked | 25000 | 25000 | 1.5ms / 3ms | 40.0 |  |  |",
	)
}

// The join runs get a table of their own and the ratios that say whether
// joining costs the same whatever the audience; the big audience gets its
// line; a failed run is marked, not dropped.
func TestSuiteTableJoins(t *testing.T) {
	ms := time.Millisecond
	join := func(role string, clients, games int) bench.Config {
		return bench.Config{Mode: "join", Role: role, Clients: clients, Games: games, Inflight: 200, Settle: 30 * time.Second}
	}
	big := bench.Config{Mode: "fanout", Games: 1, Players: 2, Spectators: 10_000, Rate: 20}
	runs := []suiteRun{
		{name: "j1", cfg: join("player", 9000, 1), server: "reference"}, {name: "j1", cfg: join("player", 9000, 1), server: "gamerelay"},
		{name: "j900", cfg: join("player", 9000, 900), server: "reference"}, {name: "j900", cfg: join("player", 9000, 900), server: "gamerelay"},
		{name: "jsmall", cfg: join("player", 1000, 1), server: "reference"}, {name: "jsmall", cfg: join("player", 1000, 1), server: "gamerelay"},
		{name: "s1", cfg: join("spectator", 9000, 1), server: "reference"}, {name: "s1", cfg: join("spectator", 9000, 1), server: "gamerelay"},
		{name: "s900", cfg: join("spectator", 9000, 900), server: "reference"}, {name: "s900", cfg: join("spectator", 9000, 900), server: "gamerelay"},
		{name: "ssmall", cfg: join("spectator", 1000, 1), server: "reference"}, {name: "ssmall", cfg: join("spectator", 1000, 1), server: "gamerelay"},
		{name: "audience", cfg: big, server: "reference"}, {name: "audience", cfg: big, server: "gamerelay"},
		{name: "pp", cfg: bench.Config{Mode: "pingpong"}, server: "gamerelay"},
	}
	// Until quiet, a join's deliveries and CPU are twice what they were
	// when all had joined, and quiet comes a second after.
	jr := func(clients int, all time.Duration, perJoin float64, rssPerConn float64, failures map[string]uint64) *bench.Report {
		j := &bench.JoinReport{Clients: clients, Joined: clients, AllJoined: all, QuietAfter: time.Second,
			PerJoin: perJoin, PerJoinAll: 2 * perJoin, CPUPerJoin: 250, CPUPerJoinAll: 500,
			Latency: bench.Latency{Count: 1, P50: 2 * ms, P99: 40 * ms}, Failures: failures}
		for _, v := range failures {
			j.Joined -= int(v)
		}
		return &bench.Report{Mode: "join", Join: j, ServerRSSBytes: 1 << 30, ServerRSSPerConn: rssPerConn}
	}
	fo := func(dels, cpu float64, p99 time.Duration) *bench.Report {
		return &bench.Report{Sends: 1, SendsPerSec: 40, DeliveriesSec: dels, ServerCPUPerDelivery: cpu, All: bench.Latency{Count: 1, P50: p99 / 2, P99: p99}}
	}
	results := []*bench.Report{
		jr(9000, 2000*ms, 0, 4096, nil), jr(9000, 30000*ms, 9000, 12288, map[string]uint64{"closed 1013": 3, "timeout": 1}),
		jr(9000, 2000*ms, 0, 4096, nil), jr(9000, 3000*ms, 11, 10240, nil),
		jr(1000, 250*ms, 0, 4096, nil), jr(1000, 800*ms, 1000, 12288, nil),
		jr(9000, 2000*ms, 0, 4096, nil), jr(9000, 3100*ms, 3, 9216, nil),
		jr(9000, 2000*ms, 0, 4096, nil), jr(9000, 3000*ms, 3, 9216, nil),
		jr(1000, 250*ms, 0, 4096, nil), jr(1000, 300*ms, 3, 9216, nil),
		fo(400_000, 5, 10*ms), fo(399_000, 7.5, 40*ms),
		nil,
	}
	failed := make([]string, len(runs))
	failed[len(runs)-1] = "verification failed: 2 order violations"
	got := suiteTable(runs, results, failed)
	tableHas(t, got,
		"| run | server | all joined in | quiet after | join p50 / p99 | deliveries per join | server CPU µs/join | RSS growth/conn | failures |",
		"| j1 | gamerelay | 30s | 1s | 2ms / 40ms | 9000.0 / 18000.0 | 250 / 500 | 12.0 KiB | 4 of 9000 (closed 1013 3, timeout 1) |",
		"| jsmall | reference | 250ms | 1s | 2ms / 40ms | 0.0 / 0.0 | 250 / 500 | 4.0 KiB | none |",
		"- players: time until all joined, 9000 into 1 game ÷ 9000 into 900 games: gamerelay 10.00× (30s vs 3s; until quiet 7.75×: 31s vs 4s), reference 1.00× (2s vs 2s; until quiet 1.00×: 3s vs 3s) (target ≤ 1.5×;",
		"- players: deliveries per join until quiet, 9000 into 1 game ÷ 1000 into 1 game: gamerelay 9.00× (18000.0 vs 2000.0; until all joined 9.00×: 9000.0 vs 1000.0), reference n/a (0.0 vs 0.0; until all joined n/a: 0.0 vs 0.0) (target ≤ 12×;",
		"- spectators: deliveries per join until quiet, 9000 into 1 game ÷ 1000 into 1 game: gamerelay 1.00× (6.0 vs 6.0; until all joined 1.00×: 3.0 vs 3.0)",
		"- players: RSS growth per connection after the 9000-join burst: gamerelay 12.0 KiB into 1 game, 10.0 KiB into 900 games; reference 4.0 KiB into 1 game, 4.0 KiB into 900 games (target ≤ 12 KiB)",
		"- players: failed joins: gamerelay 9000 into 1 game: 4 of 9000 (closed 1013 3, timeout 1); reference none",
		"- spectators: failed joins: gamerelay none; reference none",
		"- audience: gamerelay's CPU per delivery 1.50× the reference's (7.5 vs 5.0 µs); 399000 vs 400000 deliveries/s; p99 latency 40ms vs 10ms; every spectator got every message in order",
		"| pp | gamerelay | failed |",
		"- pp against gamerelay: verification failed: 2 order violations",
	)
	if strings.Contains(got, "| j1 | gamerelay | 1 |") {
		t.Errorf("a join run in the traffic table:\n%s", got)
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

// tableHas checks that a generated table holds every one of wants.
func tableHas(t *testing.T, got string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}
