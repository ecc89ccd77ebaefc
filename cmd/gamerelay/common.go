package main

import (
	"flag"
	"io"
	"log/slog"
	"time"

	"github.com/gamerelay/gamerelay/sequencer"
)

// logFlags are the logging flags every subcommand has.
type logFlags struct{ format, level string }

func (l *logFlags) register(fs *flag.FlagSet, defFormat string) {
	fs.StringVar(&l.format, "log-format", defFormat, "log format: json or text")
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) { return newLogger(w, l.format, l.level) }

// logCfg are the flags shaping the ordered log; every role must agree on them.
type logCfg struct {
	namespace  string
	partitions int
	replicas   int
	maxAge     time.Duration
	maxPerGame int64
}

func (c *logCfg) register(fs *flag.FlagSet) {
	fs.StringVar(&c.namespace, "namespace", "gr", "prefix of every NATS subject, stream and bucket name")
	fs.IntVar(&c.partitions, "partitions", 1, "number of partition streams (all roles must agree; never change on a live installation)")
	fs.IntVar(&c.replicas, "replicas", 1, "replicas per partition stream and bucket (3 in production)")
	fs.DurationVar(&c.maxAge, "max-age", 7*24*time.Hour, "how long the streams keep messages (the archive keeps them after)")
	fs.Int64Var(&c.maxPerGame, "max-msgs-per-game", 1_000_000, "most messages the stream keeps per game (-1: unlimited)")
}

func (c *logCfg) config(log *slog.Logger, m *sequencer.Metrics) (sequencer.Config, error) {
	cfg := sequencer.Config{
		Namespace:      c.namespace,
		Partitions:     c.partitions,
		Replicas:       c.replicas,
		MaxAge:         c.maxAge,
		MaxMsgsPerGame: c.maxPerGame,
		Logger:         log,
		Metrics:        m,
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}
