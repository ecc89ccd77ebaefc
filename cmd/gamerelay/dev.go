package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gamerelay/gamerelay/internal/admin"
	"github.com/gamerelay/gamerelay/internal/cli"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/sequencer"
)

func runDev(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("dev", "Runs gamerelay in one process for development: an embedded NATS JetStream\nserver (reachable by other gamerelay processes at --nats-listen) and the\nsequencer service.", stderr)
	var (
		lf   logFlags
		lc   logCfg
		adm  string
		data string
		nl   string
	)
	lf.register(fs, "text")
	lc.register(fs)
	fs.StringVar(&adm, "admin", ":9090", "admin listener address (/metrics, /healthz, /readyz)")
	fs.StringVar(&data, "data", ".gamerelay-dev", "directory for the embedded servers' data")
	fs.StringVar(&nl, "nats-listen", "127.0.0.1:4222", "address of the embedded NATS server")
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
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
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	reg := admin.NewRegistry()
	cfg, err := lc.config(log, sequencer.NewMetrics(reg))
	if err != nil {
		return err
	}

	ns, err := embednats.Run(embednats.Options{Host: host, Port: port, StoreDir: filepath.Join(data, "nats"), Name: "gamerelay-dev"})
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	log.Info("embedded NATS JetStream listening", "url", ns.ClientURL(), "data", filepath.Join(data, "nats"))

	nc, err := connect(ctx, ns.ClientURL(), "", "gamerelay-dev", log, nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := sequencer.NewService(nc, cfg)
	if err != nil {
		return usageError{err}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return admin.Serve(gctx, adm, admin.Handler(reg, func() error {
			if !svc.Ready() {
				return errors.New("sequencer not started")
			}
			return nil
		}), log)
	})
	g.Go(func() error { return svc.Run(gctx, 10*time.Second) })
	return g.Wait()
}
