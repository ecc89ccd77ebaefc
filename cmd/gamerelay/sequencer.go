package main

import (
	"context"
	"errors"
	"io"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gamerelay/gamerelay/internal/admin"
	"github.com/gamerelay/gamerelay/internal/cli"
	"github.com/gamerelay/gamerelay/sequencer"
)

func runSequencer(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("sequencer", "Runs the sequencer service: holds partition leases and appends game\nmessages with dense per-game msg_id on NATS JetStream.", stderr)
	var (
		lf    logFlags
		lc    logCfg
		nf    natsFlags
		adm   string
		inst  string
		drain time.Duration
		ttl   time.Duration
	)
	lf.register(fs, "json")
	lc.register(fs)
	nf.register(fs)
	fs.StringVar(&adm, "admin", ":9091", "admin listener address (/metrics, /healthz, /readyz)")
	fs.StringVar(&inst, "instance", "", "instance name in leases (default: random)")
	fs.DurationVar(&drain, "drain-timeout", 20*time.Second, "on SIGTERM, how long to finish queued appends")
	fs.DurationVar(&ttl, "lease-ttl", 10*time.Second, "partition lease lifetime: a dead sequencer's partitions move after about this long")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := nf.resolve(fs); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	reg := admin.NewRegistry()
	cfg, err := lc.config(log, sequencer.NewMetrics(reg))
	if err != nil {
		return err
	}
	cfg.Instance, cfg.LeaseTTL = inst, ttl
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	nc, err := connect(ctx, nf, "gamerelay-sequencer", log, nil)
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
	g.Go(func() error { return svc.Run(gctx, drain) })
	return g.Wait()
}
