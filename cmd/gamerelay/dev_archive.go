package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/gamerelay/gamerelay/archiver"
	"github.com/gamerelay/gamerelay/internal/embedmongo"
	"github.com/gamerelay/gamerelay/sequencer"
)

// The flag of `gamerelay dev` for the embedded archive store.
const (
	mongoListenFlag    = "mongo-listen"
	mongoListenDefault = "127.0.0.1:27017"
	mongoListenUsage   = "address of the embedded MongoDB-wire server (FerretDB, data under --data/ferretdb) holding the archive; point mongosh or pymongo at it"
)

// devArchive starts the archive of `gamerelay dev`: an embedded FerretDB
// (SQLite files under data/ferretdb) listening on mongoListen, and an
// archiver reading the log of cfg from natsURL into it, its metrics on
// reg. run archives until its ctx ends, then stops FerretDB and returns;
// mongoURI is where analysts connect. If err is not nil, nothing is left
// running. This is the only place besides tests that starts FerretDB.
func devArchive(ctx context.Context, data, mongoListen, natsURL string, cfg sequencer.Config, reg *prometheus.Registry, log *slog.Logger) (run func(context.Context) error, mongoURI string, err error) {
	srv, err := embedmongo.Start(embedmongo.Options{
		Dir:    filepath.Join(data, "ferretdb"),
		Listen: mongoListen,
		Logger: slog.New(minLevel{log.With("component", "ferretdb").Handler(), slog.LevelWarn}),
	})
	if err != nil {
		return nil, "", fmt.Errorf("embedded FerretDB on --%s %s: %w", mongoListenFlag, mongoListen, err)
	}
	client, err := mongo.Connect(options.Client().ApplyURI(srv.URI()).SetAppName("gamerelay-dev-archiver"))
	if err != nil {
		srv.Stop()
		return nil, "", err
	}
	nc, err := connect(ctx, natsDefaults(natsURL), "gamerelay-dev-archiver", log, nil)
	if err != nil {
		disconnect(client)
		srv.Stop()
		return nil, "", err
	}
	a, err := archiver.New(nc, client, archiver.Config{
		Namespace:  cfg.Namespace,
		Partitions: cfg.Partitions,
		// FerretDB (SQLite) answers every query with a pass over the
		// collection: a redelivered batch's look-up of duplicates takes
		// about a minute at 150,000 archived messages here.
		WriteTimeout: 5 * time.Minute,
		Logger:       log,
		Metrics:      archiver.NewMetrics(reg),
	})
	if err != nil {
		nc.Close()
		disconnect(client)
		srv.Stop()
		return nil, "", err
	}
	log.Info("embedded FerretDB (archive) listening", "uri", redactURL(srv.URI()), "database", "gamerelay", "data", filepath.Join(data, "ferretdb"))
	return func(ctx context.Context) error {
		defer srv.Stop()
		defer disconnect(client)
		defer nc.Close()
		return a.Run(ctx)
	}, srv.URI(), nil
}

// minLevel drops records below min: FerretDB is chatty at info level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
