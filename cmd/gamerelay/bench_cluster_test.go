package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/bench"
	"github.com/gamerelay/gamerelay/internal/localproc"
)

// benchChildEnv makes this test binary a server of the cluster suite:
// with "-c FILE" a NATS node run from that configuration file (as
// nats-server would be; embedded, so the tests need no nats-server
// binary; SIGHUP reloads the file), with "--version" the version of such a node, else gamerelay
// with its arguments.
const benchChildEnv = "BENCHTEST_CHILD=1"

func TestMain(m *testing.M) {
	if os.Getenv("BENCHTEST_CHILD") == "1" {
		os.Exit(benchChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func benchChild(args []string) int {
	switch {
	case len(args) == 2 && args[0] == "-c":
		opts, err := server.ProcessConfigFile(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		opts.NoSigs = true
		s, err := server.NewServer(opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			fmt.Fprintln(os.Stderr, "node not ready")
			return 1
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		for {
			select {
			case <-hup:
				// As nats-server does: re-read the configuration file.
				if err := s.Reload(); err != nil {
					fmt.Fprintln(os.Stderr, "reload:", err)
				} else {
					fmt.Fprintln(os.Stderr, "reloaded")
				}
				continue
			case <-ctx.Done():
			}
			break
		}
		s.Shutdown()
		s.WaitForShutdown()
		return 0
	case len(args) == 1 && args[0] == "--version":
		fmt.Println("nats-server: v" + server.VERSION + " (embedded)")
		return 0
	}
	return run(args, os.Stdout, os.Stderr)
}

// The cluster suite's servers on a small installation: three NATS nodes
// (this test binary as nats-server), one partition at R3, one sequencer,
// one gateway. Each server runs alone with the NATS nodes and is
// verified by a short run against it, with every process's CPU charged;
// a fresh start restarts the NATS cluster on new data; close leaves no
// process behind.
func TestClusterServers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS cluster and gamerelay processes")
	}
	shape := clusterShape{natsServer: os.Args[0], gamerelay: os.Args[0], env: []string{benchChildEnv},
		partitions: 2, replicas: 3, sequencers: 1, gateways: 1}
	c, err := newClusterServers(shape, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var all []int
	defer func() {
		c.close()
		for _, pid := range all {
			if err := syscall.Kill(pid, 0); err == nil {
				t.Errorf("process %d still runs after close", pid)
			}
		}
	}()
	ctx := context.Background()
	prev := map[string][]int{}
	for _, tc := range []struct {
		server string
		fresh  bool
		procs  int // its own, beside the NATS nodes
		cfg    bench.Config
	}{
		{srvFloor, false, 1, bench.Config{Mode: "pingpong", Games: 2, Players: 1}},
		{srvGamerelay, false, 2, bench.Config{Mode: "fanout", Games: 1, Players: 1, Spectators: 2, Rate: 50}},
		{srvEmbed, false, 1, bench.Config{Mode: "pingpong", Games: 2, Players: 1}},
		{srvGamerelay, true, 2, bench.Config{Mode: "join", Games: 1, Clients: 3, Settle: time.Millisecond}},
		{srvReference, false, 1, bench.Config{Mode: "pingpong", Games: 2, Players: 1}},
	} {
		url, pids, err := c.prepare(ctx, tc.server, tc.fresh)
		if err != nil {
			t.Fatalf("%s: %v", tc.server, err)
		}
		all = append(all, pids...)
		nats := natsNodes
		if tc.server == srvReference {
			nats = 0
		}
		if len(pids) != nats+tc.procs {
			t.Fatalf("%s: pids %v, want %d NATS nodes and %d of its own", tc.server, pids, nats, tc.procs)
		}
		if tc.fresh && len(prev[tc.server]) > 0 && pids[0] == prev[tc.server][0] {
			t.Fatalf("%s fresh: NATS node still pid %d", tc.server, pids[0])
		}
		prev[tc.server] = pids
		if tc.server != srvReference {
			checkLayout(t, c, tc.server)
		}
		// Only the NATS nodes and the server in use run.
		running := 0
		for _, tg := range c.targets {
			if tg.running() {
				running++
			}
		}
		if running != 1 {
			t.Fatalf("%s: %d servers running", tc.server, running)
		}
		cfg := tc.cfg
		cfg.URL, cfg.ServerPIDs, cfg.TokenSecret, cfg.Duration = url, pids, suiteSecret, 300*time.Millisecond
		r, err := bench.Run(ctx, cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.server, err)
		}
		t.Logf("%s (pids %v):\n%s", tc.server, pids, r)
		if !r.OK() || r.ServerCPUSeconds <= 0 && cfg.Mode != "join" {
			t.Fatalf("%s: %s", tc.server, r)
		}
	}
}

// checkLayout checks that server's processes are connected to their
// nodes of the suite's layout and that its streams' leaders are on theirs.
func checkLayout(t *testing.T, c *clusterServers, server string) {
	t.Helper()
	want := map[string]int{"gamerelay-bench-reference": gatewayNode(0)}
	if server != srvFloor {
		want = map[string]int{"gamerelay-gateway": gatewayNode(0), "gamerelay-gateway-live": gatewayNode(0)}
		if server == srvGamerelay {
			want["gamerelay-sequencer"] = sequencerNode(0)
		}
	}
	for i, port := range c.natsHTTP {
		var connz struct{ Connections []struct{ Name string } }
		if err := getJSON("http://"+localproc.HostPort(port)+"/connz", &connz); err != nil {
			t.Fatal(err)
		}
		for _, cn := range connz.Connections {
			if n, ok := want[cn.Name]; ok {
				if n != i {
					t.Errorf("%s: %s connected to node %d, want %d", server, cn.Name, i, n)
				}
				delete(want, cn.Name)
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("%s: not connected to any node: %v", server, want)
	}
	nc, err := nats.Connect(c.natsURLs)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	placed := 0
	for _, prefix := range c.targets[server].streams {
		for name := range js.StreamNames(context.Background()).Name() {
			if !strings.HasPrefix(name, prefix) {
				continue
			}
			s, err := js.Stream(context.Background(), name)
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := info.Cluster.Leader, nodeName(leaderNode(name)); got != want {
				t.Errorf("%s: stream %s led by %s, want %s", server, name, got, want)
			}
			placed++
		}
	}
	// Two partition streams, and for gamerelay its buckets.
	if placed < c.shape.partitions {
		t.Errorf("%s: %d streams checked, want at least %d", server, placed, c.shape.partitions)
	}
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// The layout puts partition p's leader on node p mod 3 and the rest on
// node 0; gateways and sequencers on different nodes.
func TestClusterLayout(t *testing.T) {
	for name, want := range map[string]int{"gr_log_0": 0, "gr_log_1": 1, "gr_log_5": 2, "BENCH_REFERENCE_4": 1,
		"BENCH_REFERENCE": 0, "KV_gr_leases": 0, "KV_gr_embed_heads": 0} {
		if got := leaderNode(name); got != want {
			t.Errorf("leaderNode(%q) = %d, want %d", name, got, want)
		}
	}
	for i := range 4 {
		if gatewayNode(i) == sequencerNode(i) {
			t.Errorf("gateway %d and sequencer %d both on node %d", i, i, gatewayNode(i))
		}
	}
}

// An older binary's roles get only the flags it lists; a required flag
// it lacks is an error.
func TestRoleFlagsFromHelp(t *testing.T) {
	old := `Usage: gamerelay gateway [flags]

Flags (each also read from its environment variable):
  --admin  [$GAMERELAY_ADMIN]
        admin listener address (default ":9090")
  --embed-sequencer  [$GAMERELAY_EMBED_SEQUENCER]
  --listen  [$GAMERELAY_LISTEN]
  --nats  [$GAMERELAY_NATS]
        NATS server URL(s), comma-separated (default "nats://127.0.0.1:4222")
  --rate  [$GAMERELAY_RATE]
  --token-secret  [$GAMERELAY_TOKEN_SECRET]
`
	rf := roleFlags{"gateway": helpFlags(old)}
	args, err := rf.args("gateway", []flagArg{{name: "nats", value: "nats://a,nats://b"}, {name: "listen", value: "127.0.0.1:1"},
		{name: "rate", value: "0", optional: true}, {name: "join-rate", value: "0", optional: true}, {name: "embed-sequencer", value: "true"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(args, " "); got != "gateway --nats=nats://a,nats://b --listen=127.0.0.1:1 --rate=0 --embed-sequencer=true" {
		t.Fatalf("args %q", got)
	}
	if _, err := rf.args("gateway", []flagArg{{name: "nats-ping-interval", value: "1s"}}); err == nil || !strings.Contains(err.Error(), "--nats-ping-interval") {
		t.Fatalf("a required flag the binary lacks: %v", err)
	}
	// This binary's own help lists every flag the suite gives.
	var help strings.Builder
	for _, sub := range []string{"gateway", "sequencer"} {
		help.Reset()
		run([]string{sub, "--help"}, &help, &help)
		for _, f := range []string{"nats", "namespace", "partitions", "replicas", "admin", "log-level"} {
			if !helpFlags(help.String())[f] {
				t.Errorf("%s --help: no --%s found in\n%s", sub, f, help.String())
			}
		}
	}
	if !helpFlags(help.String())["instance"] {
		t.Error("sequencer --help: no --instance")
	}
}

// The cluster table sets gamerelay and its embedded shape against the
// floor on the same cluster, and this binary against the baseline; a
// server's CPU shows the NATS nodes' share.
func TestClusterTable(t *testing.T) {
	ms := time.Millisecond
	pp := bench.Config{Mode: "pingpong", Games: 10, Players: 1}
	fo := bench.Config{Mode: "fanout", Games: 10, Players: 1, Spectators: 3}
	big := bench.Config{Mode: "fanout", Games: 1, Players: 2, Spectators: 10_000}
	var runs []suiteRun
	for _, srv := range []string{srvFloor, srvGamerelay, srvBaseline, srvEmbed, srvBaselineEmbed, srvReference} {
		runs = append(runs, suiteRun{name: "pp", cfg: pp, server: srv})
	}
	for _, srv := range []string{srvFloor, srvGamerelay, srvBaseline, srvEmbed, srvBaselineEmbed, srvReference} {
		runs = append(runs, suiteRun{name: "fo", cfg: fo, server: srv})
	}
	runs = append(runs, suiteRun{name: "big", cfg: big, server: srvReference}, suiteRun{name: "big", cfg: big, server: srvGamerelay}, suiteRun{name: "big", cfg: big, server: srvEmbed})
	// The NATS nodes take three quarters of every server's CPU on the
	// cluster.
	rep := func(dels, cpu float64, p99 time.Duration, nats bool) *bench.Report {
		r := &bench.Report{Sends: 1, SendsPerSec: dels, DeliveriesSec: dels, ServerCPUPerDelivery: cpu, ServerCPUSeconds: 4,
			All: bench.Latency{Count: 1, P50: p99 / 2, P99: p99}}
		if nats {
			r.ServerCPUEach = []float64{1, 1, 1, 1}
		}
		return r
	}
	results := []*bench.Report{
		rep(4000, 400, 4*ms, true), rep(3200, 500, 6*ms, true), rep(1600, 1000, 9*ms, true), rep(3600, 440, 5*ms, true), rep(3000, 500, 6*ms, true), rep(10000, 40, ms, false),
		rep(2000, 300, 8*ms, true), rep(2000, 450, 15*ms, true), rep(2000, 450, 16*ms, true), rep(2000, 330, 10*ms, true), rep(2000, 330, 10*ms, true), rep(2000, 30, 4*ms, false),
		rep(400_000, 5, 10*ms, false), rep(390_000, 10, 20*ms, true), nil,
	}
	results[13].Drain = 3 * time.Second
	failed := make([]string, len(runs))
	failed[len(runs)-1] = "bench: 3 of 10000 spectators did not join: timeout=3"
	sh := clusterShape{baseline: "/tmp/gamerelay-2efb662", partitions: 4, replicas: 3, sequencers: 1, gateways: 1}
	got := clusterTable(runs, results, failed, clusterInfo{shape: sh, nats: "v2.15.2", at: time.Now(), short: true})
	tableHas(t, got,
		"nats-server v2.15.2.",
		"A short run (`--short`)",
		"- gamerelay: 1 `gamerelay sequencer` and 1 `gamerelay gateway`",
		"- baseline, baseline embed: the same two shapes run by `/tmp/gamerelay-2efb662`",
		"| pp | reference+checked | 4000 | 4000 | 2ms / 4ms | 400.0 (NATS 75 %) |  |  |",
		"| pp | reference | 10000 | 10000 | 500µs / 1ms | 40.0 |  |  |",
		"| big | gamerelay | 390000 | 390000 (+3s) | 10ms / 20ms | 10.0 (NATS 75 %) |  |  |",
		"| big | gamerelay embed | failed |",
		"- pp, against reference+checked: gamerelay 80 % of its throughput, 1.25× its CPU per delivery; gamerelay embed 90 % of its throughput, 1.10× its CPU per delivery (reference+checked: 40 % of the bare reference's throughput, 10.00× its CPU per delivery)",
		"- pp, this binary against the baseline: gamerelay 2.00× the throughput of baseline, 0.50× its CPU per delivery; gamerelay embed 1.20× the throughput of baseline embed, 0.88× its CPU per delivery",
		"- fo, against reference+checked: gamerelay 1.50× its CPU per delivery (p99 latency 15ms vs 8ms); gamerelay embed 1.10× its CPU per delivery (p99 latency 10ms vs 8ms) (reference+checked: 10.00× the bare reference's CPU per delivery)",
		"- fo, this binary against the baseline: gamerelay 1.00× the CPU per delivery of baseline; gamerelay embed 1.00× the CPU per delivery of baseline embed",
		"- big: gamerelay's CPU per delivery 2.00× the reference's (10.0 vs 5.0 µs); 390000 vs 400000 deliveries/s; p99 latency 20ms vs 10ms; last delivery 3s vs 0s after the last send",
		"- big against gamerelay embed: bench: 3 of 10000 spectators did not join: timeout=3",
	)
	for _, never := range []string{"BRIEF", "issue"} {
		if strings.Contains(got, never) {
			t.Errorf("table mentions %q:\n%s", never, got)
		}
	}
}

// Pingpong runs in rounds, every server once per round, back to back; the
// ratios give the median of the rounds' and each round's, a failed round
// left out.
// The runs of one case and round name their games alike on every
// server; no two cases or rounds share a name.
func TestRunIDs(t *testing.T) {
	runs := clusterSuiteRuns(true, true, 3)
	ids := runIDs(runs, "s")
	byLabel, labelOf := map[string]string{}, map[string]string{}
	for i, r := range runs {
		id := ids[i]
		if !strings.HasPrefix(id, "s") {
			t.Errorf("run %s: id %q lacks the stamp", r.label(), id)
		}
		if prev, ok := byLabel[r.label()]; ok && prev != id {
			t.Errorf("%s: ids %q and %q on different servers", r.label(), prev, id)
		}
		if l, ok := labelOf[id]; ok && l != r.label() {
			t.Errorf("%s and %s share id %q", l, r.label(), id)
		}
		byLabel[r.label()], labelOf[id] = id, r.label()
	}
	if len(byLabel) < 10 {
		t.Errorf("%d distinct runs, want the suite's cases and rounds", len(byLabel))
	}
}

func TestClusterRounds(t *testing.T) {
	runs := clusterSuiteRuns(true, true, 3)
	var order []string
	for _, r := range runs {
		if r.cfg.Mode == "pingpong" {
			order = append(order, fmt.Sprintf("%d/%s", r.round, r.server))
			if r.rounds != 3 {
				t.Fatalf("pingpong run %+v: rounds %d, want 3", r, r.rounds)
			}
		} else if r.rounds > 1 {
			t.Fatalf("%s runs in %d rounds; only pingpong should", r.name, r.rounds)
		}
	}
	servers := []string{srvFloor, srvGamerelay, srvBaseline, srvEmbed, srvBaselineEmbed, srvReference}
	var want []string
	for round := range 3 {
		for _, srv := range servers {
			want = append(want, fmt.Sprintf("%d/%s", round, srv))
		}
	}
	if !slices.Equal(order, want) {
		t.Fatalf("pingpong runs in order %v, want %v", order, want)
	}

	pp := bench.Config{Mode: "pingpong", Games: 10, Players: 1}
	runs = nil
	for round := range 3 {
		for _, srv := range []string{srvFloor, srvGamerelay, srvBaseline} {
			runs = append(runs, suiteRun{name: "pp", cfg: pp, server: srv, round: round, rounds: 3})
		}
	}
	rep := func(dels, cpu float64) *bench.Report {
		return &bench.Report{Sends: 1, SendsPerSec: dels, DeliveriesSec: dels, ServerCPUPerDelivery: cpu, All: bench.Latency{Count: 1, P50: time.Millisecond, P99: 2 * time.Millisecond}}
	}
	results := []*bench.Report{
		rep(1000, 500), rep(600, 800), rep(500, 800),
		rep(1000, 500), rep(900, 500), rep(600, 700),
		rep(1000, 500), rep(700, 600), nil,
	}
	failed := make([]string, len(runs))
	failed[8] = "bench: order violation"
	got := clusterTable(runs, results, failed, clusterInfo{shape: clusterShape{baseline: "/tmp/old", partitions: 4, replicas: 3, sequencers: 1, gateways: 1}, nats: "v2"})
	tableHas(t, got,
		"| pp, round 2 of 3 | gamerelay | 900 | 900 |",
		"| pp, round 3 of 3 | baseline | failed |",
		"- pp, against reference+checked: gamerelay 70 % (median of 3 rounds: 60 %, 90 %, 70 %) of its throughput, 1.20× (median of 3 rounds: 1.60×, 1.00×, 1.20×) its CPU per delivery",
		// Round 3's baseline failed: two pairs remain.
		"- pp, this binary against the baseline: gamerelay 1.35× (median of 2 rounds: 1.20×, 1.50×) the throughput of baseline, 0.86× (median of 2 rounds: 1.00×, 0.71×) its CPU per delivery",
		"- pp, round 3 of 3 against baseline: bench: order violation",
	)
}
