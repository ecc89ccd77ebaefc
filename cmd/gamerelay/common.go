package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/cli"
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

// natsFlags are how a role reaches NATS.
type natsFlags struct{ url, urlFile, creds string }

func (n *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.url, "nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	fs.StringVar(&n.urlFile, "nats-url-file", "", "file holding --nats, for URLs with passwords or tokens (keeps them out of argv and the environment)")
	fs.StringVar(&n.creds, "nats-creds", "", "NATS credentials file (optional)")
}

// readFiles takes --nats from --nats-url-file if that is set.
func (n *natsFlags) readFiles(fs *flag.FlagSet) error {
	url, ok, err := cli.SecretFile(fs, "nats", "nats-url-file")
	if err != nil {
		return usageError{err}
	}
	if ok {
		n.url = url
	}
	return nil
}

// connect dials NATS with endless reconnects; reconnected, if set, runs after
// every reconnection.
func connect(ctx context.Context, url, creds, name string, log *slog.Logger, reconnected func(), extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
			if reconnected != nil {
				reconnected()
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	opts = append(opts, extra...)
	if err := checkNATSURLs(url); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %s", redactURL(url), redactURL(err.Error()))
	}
	// Wait for the first connection so start-up errors are visible.
	deadline := time.Now().Add(30 * time.Second)
	for !nc.IsConnected() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			nc.Close()
			return nil, fmt.Errorf("connect to NATS %s: not reachable", redactURL(url))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nc, nil
}

// checkNATSURLs parses the URLs of a comma-separated NATS list as nats.go
// does, so a malformed one is a usage error that names it redacted
// instead of a parse error quoting it whole.
func checkNATSURLs(list string) error {
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		if _, err := neturl.Parse(u); err != nil {
			return usageError{fmt.Errorf("--nats: %s is not a valid URL (percent-encode special characters in user names, passwords and tokens)", redactURL(u))}
		}
	}
	return nil
}
