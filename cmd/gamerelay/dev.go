package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/gateway"
	"github.com/gamerelay/gamerelay/internal/admin"
	"github.com/gamerelay/gamerelay/internal/cli"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/sequencer"
)

// The listeners of `gamerelay dev`: on this machine only, unless --expose
// or explicit addresses say otherwise. Its embedded NATS server has no
// authentication, nor has its MongoDB-wire server.
const (
	devListenAddr = "127.0.0.1:8080"
	devAdminAddr  = "127.0.0.1:9090"
)

// exposeDefaults widens the addresses of the flags not set (by argument or
// environment) from their loopback host to every interface.
func exposeDefaults(fs *flag.FlagSet, addrs map[string]*string) {
	for name, addr := range addrs {
		if cli.IsSet(fs, name) {
			continue
		}
		if _, port, err := net.SplitHostPort(*addr); err == nil {
			*addr = ":" + port
		}
	}
}

func runDev(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("dev", "Runs gamerelay in one process for development: an embedded NATS JetStream\nserver (reachable by other gamerelay processes at --nats-listen), the\nsequencer service, a gateway with anonymous play and create enabled, and the\narchiver into an embedded MongoDB-wire server (FerretDB) for analysts.", stderr)
	var (
		lf     logFlags
		lc     logCfg
		gf     gatewayFlags
		adm    string
		data   string
		nl     string
		ml     string
		arch   bool
		expose bool
	)
	lf.register(fs, "text")
	lc.register(fs)
	gf.register(fs, devRole)
	fs.StringVar(&adm, "admin", devAdminAddr, "admin listener address (/metrics, /healthz, /readyz)")
	fs.BoolVar(&expose, "expose", false, "listen on every interface: --listen and --admin default to :8080 and :9090 (the embedded NATS and MongoDB-wire servers stay on --nats-listen and --mongo-listen)")
	fs.StringVar(&data, "data", ".gamerelay-dev", "directory for the embedded servers' data")
	fs.StringVar(&nl, "nats-listen", "127.0.0.1:4222", "address of the embedded NATS server")
	fs.StringVar(&ml, mongoListenFlag, mongoListenDefault, mongoListenUsage)
	fs.BoolVar(&arch, "archive", true, "run the archiver into the embedded FerretDB (false: no archive, e.g. to benchmark the message path alone)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := gf.resolve(fs); err != nil {
		return err
	}
	if expose {
		exposeDefaults(fs, map[string]*string{"listen": &gf.listen, "admin": &adm})
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(nl)
	if err != nil {
		return usageError{fmt.Errorf("--nats-listen %q: %w", nl, err)}
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return usageError{fmt.Errorf("--nats-listen %q: bad port", nl)}
	}
	gf.anonymous, gf.create, gf.embedSequencer = true, true, true
	gf.leaseTTL = 10 * time.Second
	if gf.secret == "" {
		// Tokens from create then work until this process exits; pass
		// --token-secret to keep them valid across restarts.
		var b [24]byte
		_, _ = rand.Read(b[:])
		gf.secret = hex.EncodeToString(b[:])
	}
	reg := admin.NewRegistry()
	seqCfg, err := lc.config(log, sequencer.NewMetrics(reg))
	if err != nil {
		return err
	}
	gcfg, err := gf.config(log, gateway.NewMetrics(reg))
	if err != nil {
		return err
	}
	if _, err := gf.keys(); err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}

	ns, err := embednats.Run(embednats.Options{Host: host, Port: port, StoreDir: filepath.Join(data, "nats"), Name: "gamerelay-dev"})
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	log.Info("embedded NATS JetStream listening", "url", redactURL(ns.ClientURL()), "data", filepath.Join(data, "nats"))

	// In-process connections: no sockets between the parts of dev. With no
	// network in between, writes need no deadline (nats.go sets one per
	// flush by default, which on an in-process pipe costs a timer each).
	nc, err := connect(ctx, natsDefaults(ns.ClientURL()), "gamerelay-dev", log, nil, nats.InProcessServer(ns), nats.FlusherTimeout(0))
	if err != nil {
		return err
	}
	defer nc.Close()
	live, err := connect(ctx, natsDefaults(ns.ClientURL()), "gamerelay-dev-live", log, nil, nats.InProcessServer(ns), nats.FlusherTimeout(0), nats.NoEcho())
	if err != nil {
		return err
	}
	defer live.Close()
	var extra []func(context.Context) error
	if arch {
		runArchive, mongoURI, err := devArchive(ctx, data, ml, ns.ClientURL(), seqCfg, reg, log)
		if err != nil {
			return err
		}
		log.Info("archive: MongoDB wire protocol (embedded FerretDB)", "uri", redactURL(mongoURI), "db", "gamerelay")
		extra = append(extra, runArchive)
	}
	return serveGateway(ctx, nc, live, seqCfg, gcfg, gf, adm, reg, log, embeddedSequencer, extra)
}
