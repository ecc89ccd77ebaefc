package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/bench"
	"github.com/gamerelay/gamerelay/internal/cli"
	"github.com/gamerelay/gamerelay/internal/embednats"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("bench", "Load generator that verifies order: drives a gateway over WebSockets and\nreports throughput, latency, server CPU per delivery and memory per\nconnection; every client checks dense msg_id order and all clients of a\ngame must see the same sequence. --mode join measures joining: time,\nlatency, failures, deliveries and server memory per join. --mode\nreference serves the bare in-memory relay used as the reference.", stderr)
	var (
		cfg     bench.Config
		asJSON  bool
		listen  string
		lf      logFlags
		suite   bool
		ref     referenceFlags
		so      suiteOptions
		history optUint
	)
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080/ws", "gateway WebSocket URL; several, comma-separated: client i connects to the (i mod n)-th")
	fs.StringVar(&cfg.Mode, "mode", "pingpong", "pingpong | fanout | idle | rejoin | join | reference")
	fs.IntVar(&cfg.Games, "games", 1, "games")
	fs.IntVar(&cfg.Players, "players", 2, "players per game")
	fs.IntVar(&cfg.Spectators, "spectators", 0, "spectators per game (need --token-secret on a gateway without anonymous play)")
	fs.Float64Var(&cfg.Rate, "rate", 10, "fanout: messages per second per player")
	fs.DurationVar(&cfg.Duration, "duration", 10e9, "measured duration (idle: how long connections are held)")
	fs.IntVar(&cfg.Payload, "payload", 32, "padding bytes per message")
	fs.StringVar(&cfg.TokenSecret, "token-secret", "", "mint HS256 tokens with this secret, at least 32 bytes (spectators need them)")
	fs.Var((*pidList)(&cfg.ServerPIDs), "server-pid", "measure this process's CPU seconds and resident memory (rejoin: wait for it to go quiet after filling the stream); several, comma-separated or repeated: their sum (a server made of several processes)")
	fs.IntVar(&cfg.Conns, "conns", 1000, "idle: connections to open")
	fs.IntVar(&cfg.Sources, "sources", 0, "idle, join, and the spectators of pingpong and fanout: source addresses 127.0.0.1..N to spread connections over, for a server on the loopback (default: enough for the connections, 20,000 each)")
	fs.Var(&history, "history", "rejoin: messages in the replayed game (default 1000); join: send \"history\":N in every join frame, asking to replay only the last N messages (not sent unless given)")
	fs.IntVar(&cfg.Others, "others", 10000, "rejoin: messages of other games appended before")
	fs.IntVar(&cfg.Rejoins, "rejoins", 20, "rejoin: measured rejoins")
	fs.IntVar(&cfg.Clients, "clients", 1000, "join: clients that join, spread evenly over --games (each game is first created by one more player)")
	fs.IntVar(&cfg.Inflight, "inflight", 200, "join, and the spectators of pingpong and fanout: joins in flight at once (a client is in flight from connect until joined and its replay arrived)")
	fs.StringVar(&cfg.Role, "role", "player", "join: player or spectator (spectators need --token-secret)")
	fs.BoolVar(&cfg.SinceHead, "since-head", false, "join: join with since = the game's current head, a resume that replays nothing (default: since=0, replay everything)")
	fs.DurationVar(&cfg.Settle, "settle", 30e9, "join: how long after the last join the server's RSS is read (--server-pid; no GC is forced)")
	fs.DurationVar(&cfg.JoinTimeout, "join-timeout", 60e9, "join, and the spectators of pingpong and fanout: a join not complete this long after connect fails")
	fs.StringVar(&cfg.RunID, "run-id", "", "part of every game's name (games b<id>-<n>, ...): runs with one id on one server share games, runs on different servers with one id spread games over partitions alike; default: from the clock")
	fs.DurationVar(&cfg.Stall, "stall", 10e9, "pingpong, fanout: after the last send the run waits until every message sent came back to its sender and all clients are quiet; it gives up when deliveries pause this long")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.StringVar(&listen, "listen", "127.0.0.1:8090", "reference: listen address")
	fs.StringVar(&ref.dir, "persist", "", "reference: store every message in embedded JetStream (R1, file storage in this directory) before relaying it")
	fs.StringVar(&ref.nats, "persist-nats", "", "reference: store every message in the JetStream of these NATS servers (URLs, comma-separated) instead of an embedded one, in a stream of --persist-replicas replicas")
	fs.IntVar(&ref.replicas, "persist-replicas", 1, "reference with --persist-nats: replicas of the stream the messages are stored in")
	fs.IntVar(&ref.partitions, "persist-partitions", 1, "reference with --persist-checked: spread the games over this many streams, as gamerelay's partitions spread them")
	fs.BoolVar(&ref.group, "persist-group", false, "reference with --persist or --persist-nats: store the messages waiting at once, of any game, as one JetStream message (group commit) instead of one publish each")
	fs.BoolVar(&ref.checked, "persist-checked", false, "reference with --persist or --persist-nats: send each publish with the checks gamerelay's appends make (expected last sequence of the game's subject, a unique Nats-Msg-Id)")
	fs.BoolVar(&suite, "suite", false, "run the standard suite against `gamerelay dev` and the reference, both started here (with --cluster: the cluster suite)")
	fs.StringVar(&so.out, "out", "", "suite: write the table into this Markdown file (between its markers: bench-suite, or bench-cluster with --cluster)")
	fs.BoolVar(&so.short, "short", false, "suite: short durations and sizes (a smoke run)")
	fs.BoolVar(&so.cluster, "cluster", false, "suite: the cluster suite, production-shaped: a 3-node NATS cluster (--nats-server), R3 partition streams, sequencer and gateway processes, and the reference relay storing to the same cluster")
	fs.StringVar(&so.natsServer, "nats-server", "", "cluster suite: the nats-server binary its nodes run (make bench passes bin/tools/nats-server-<version in go.mod>)")
	fs.StringVar(&so.baseline, "baseline-bin", "", "cluster suite: another gamerelay binary whose sequencer and gateway run the traffic cases too, beside this one's")
	fs.IntVar(&so.partitions, "cluster-partitions", 4, "cluster suite: partition streams")
	fs.IntVar(&so.replicas, "cluster-replicas", 3, "cluster suite: replicas of the partition streams and of the reference's stream")
	fs.IntVar(&so.sequencers, "cluster-sequencers", 1, "cluster suite: sequencer processes (none where gateways embed the sequencer)")
	fs.IntVar(&so.gateways, "cluster-gateways", 1, "cluster suite: gateway processes; client i connects to gateway i mod N")
	fs.IntVar(&so.rounds, "cluster-rounds", 3, "cluster suite: rounds of pingpong, every server once per round; the ratios give the median of the rounds'")
	lf.register(fs, "text")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if suite {
		if so.cluster {
			return runClusterSuite(ctx, so, stdout)
		}
		return runSuite(ctx, so.out, so.short, stdout)
	}
	if history.set {
		cfg.History = int(min(history.v, math.MaxInt32))
		if cfg.Mode == "join" {
			cfg.JoinHistory = &history.v
		}
	}
	if cfg.Mode == "reference" {
		log, err := lf.logger(stderr)
		if err != nil {
			return err
		}
		return ref.serve(ctx, listen, log)
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	r, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		fmt.Fprint(stdout, r.String())
	}
	if !r.OK() {
		return errors.New(r.Failure())
	}
	if r.Join != nil && r.Join.Failed() > 0 {
		return fmt.Errorf("%d of %d joins failed: %v", r.Join.Failed(), r.Join.Clients, r.Join.Failures)
	}
	return nil
}

// referenceFlags say whether and where the reference relay stores the
// messages it relays.
type referenceFlags struct {
	dir, nats      string // embedded JetStream's directory, or external NATS URLs
	replicas       int
	partitions     int
	group, checked bool
}

// serve runs the reference relay on listen until ctx ends.
func (f referenceFlags) serve(ctx context.Context, listen string, log *slog.Logger) error {
	switch {
	case (f.group || f.checked) && f.dir == "" && f.nats == "":
		return usageError{errors.New("bench: --persist-group and --persist-checked need --persist DIR or --persist-nats URLS")}
	case f.group && f.checked:
		return usageError{errors.New("bench: --persist-group and --persist-checked are different floors: choose one")}
	case f.dir != "" && f.nats != "":
		return usageError{errors.New("bench: --persist and --persist-nats: choose one store")}
	case f.replicas < 1 || f.replicas > 5:
		return usageError{fmt.Errorf("bench: --persist-replicas %d: want 1 to 5", f.replicas)}
	case f.replicas > 1 && f.nats == "":
		return usageError{errors.New("bench: --persist-replicas needs --persist-nats (the embedded store is one node)")}
	case f.partitions < 1 || f.partitions > 1024:
		return usageError{fmt.Errorf("bench: --persist-partitions %d: want 1 to 1024", f.partitions)}
	case f.partitions > 1 && !f.checked:
		return usageError{errors.New("bench: --persist-partitions needs --persist-checked")}
	}
	rf := bench.NewReference(log)
	var nc *nats.Conn
	switch {
	case f.dir != "":
		ns, err := embednats.Run(embednats.Options{StoreDir: f.dir, Name: "gamerelay-bench-reference"})
		if err != nil {
			return fmt.Errorf("embedded NATS: %w", err)
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		if nc, err = nats.Connect(ns.ClientURL(), nats.InProcessServer(ns), nats.FlusherTimeout(0)); err != nil {
			return err
		}
	case f.nats != "":
		var err error
		nc, err = nats.Connect(f.nats, nats.Name("gamerelay-bench-reference"), nats.MaxReconnects(-1),
			nats.ReconnectWait(100*time.Millisecond), nats.Timeout(5*time.Second))
		if err != nil {
			return fmt.Errorf("bench: --persist-nats %s: %w", redactURL(f.nats), err)
		}
	}
	if nc != nil {
		defer nc.Close()
		var err error
		switch {
		case f.group:
			rf.Persist, err = bench.NewJetStreamGroupPersist(ctx, nc, f.replicas)
		case f.checked:
			rf.Persist, err = bench.NewJetStreamCheckedPersist(ctx, nc, f.replicas, f.partitions)
		default:
			rf.Persist, err = bench.NewJetStreamPersist(ctx, nc, f.replicas)
		}
		if err != nil {
			return err
		}
	}
	return rf.Serve(ctx, listen)
}

// pidList is a flag of process ids, comma-separated or repeated.
type pidList []int

func (p *pidList) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, pid := range *p {
		s[i] = strconv.Itoa(pid)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return errors.New("want process ids, comma-separated")
		}
		*p = append(*p, pid)
	}
	return nil
}

// optUint is a flag whose absence differs from any value.
type optUint struct {
	v   uint64
	set bool
}

func (o *optUint) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatUint(o.v, 10)
}

func (o *optUint) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("want a non-negative integer")
	}
	o.v, o.set = v, true
	return nil
}
