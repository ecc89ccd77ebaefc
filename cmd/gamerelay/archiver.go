package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/gamerelay/gamerelay/archiver"
	"github.com/gamerelay/gamerelay/internal/admin"
	"github.com/gamerelay/gamerelay/internal/cli"
)

func runArchiver(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("archiver", "Copies every stored game message from the JetStream log into MongoDB,\nexactly once in effect, and serves archived history to gateways. Any\nnumber of replicas may run; they share the work.", stderr)
	var (
		lf      logFlags
		nf      natsFlags
		mf      mongoFlags
		ns      string
		parts   int
		adm     string
		batch   int
		wait    time.Duration
		durable string
	)
	lf.register(fs, "json")
	nf.register(fs)
	mf.register(fs)
	fs.StringVar(&ns, "namespace", "gr", "prefix of every NATS subject and stream name (as the sequencers')")
	fs.IntVar(&parts, "partitions", 1, "number of partition streams (as the sequencers')")
	fs.StringVar(&adm, "admin", ":9092", "admin listener address (/metrics, /healthz, /readyz)")
	fs.IntVar(&batch, "batch-size", 500, "most messages fetched and written at once")
	fs.DurationVar(&wait, "batch-wait", 500*time.Millisecond, "longest wait for a full batch before writing what arrived")
	fs.StringVar(&durable, "durable", "archiver", "name of the shared JetStream consumer on each partition stream")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := nf.resolve(fs); err != nil {
		return err
	}
	if err := mf.resolve(fs); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	reg := admin.NewRegistry()
	cfg := archiver.Config{
		Namespace:  ns,
		Partitions: parts,
		Database:   mf.db,
		BatchSize:  batch,
		BatchWait:  wait,
		Durable:    durable,
		Logger:     log,
		Metrics:    archiver.NewMetrics(reg),
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	client, err := mf.connect("gamerelay-archiver")
	if err != nil {
		return err
	}
	defer disconnect(client)
	nc, err := connect(ctx, nf, "gamerelay-archiver", log, nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	a, err := archiver.New(nc, client, cfg)
	if err != nil {
		return usageError{err}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return admin.Serve(gctx, adm, admin.Handler(reg, func() error {
			if !a.Ready() {
				return errors.New("archiver not started (MongoDB or the streams not reachable yet)")
			}
			return nil
		}), log)
	})
	g.Go(func() error { return a.Run(gctx) })
	return g.Wait()
}

// mongoFlags are how a role reaches the archive.
type mongoFlags struct {
	uri, uriFile, db string
	tlsCA            string
	cas              *x509.CertPool // of tlsCA
}

func (m *mongoFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.uri, "mongo", "", "MongoDB connection string (required, or --mongo-uri-file), e.g. mongodb://mongo-0,mongo-1,mongo-2/?replicaSet=rs0")
	fs.StringVar(&m.uriFile, "mongo-uri-file", "", "file holding --mongo, for URIs with passwords (keeps them out of argv and the environment)")
	fs.StringVar(&m.db, "db", "gamerelay", "MongoDB database of the archive")
	fs.StringVar(&m.tlsCA, "mongo-tls-ca", "", "PEM file of the CA(s) that signed the MongoDB servers' certificates; turns TLS on (other TLS settings go into the URI)")
}

// resolve takes --mongo from --mongo-uri-file if that is set and reads
// --mongo-tls-ca.
func (m *mongoFlags) resolve(fs *flag.FlagSet) error {
	uri, ok, err := cli.SecretFile(fs, "mongo", "mongo-uri-file")
	if err != nil {
		return usageError{err}
	}
	if ok {
		m.uri = uri
	}
	if m.tlsCA != "" {
		if m.cas, err = loadCAs("mongo-tls-ca", m.tlsCA); err != nil {
			return err
		}
	}
	return nil
}

// clientOptions are the driver's options: the URI's, and TLS verified
// against --mongo-tls-ca if given (kept with the URI's other TLS
// settings, a client certificate for one).
func (m *mongoFlags) clientOptions(app string) *options.ClientOptions {
	o := options.Client().ApplyURI(m.uri).SetAppName(app)
	if m.cas != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.TLSConfig != nil {
			cfg = o.TLSConfig.Clone()
		}
		cfg.RootCAs = m.cas
		o.SetTLSConfig(cfg)
	}
	return o
}

// connect returns a client for the URI; it does not wait for the server.
func (m *mongoFlags) connect(app string) (*mongo.Client, error) {
	if m.uri == "" {
		return nil, usageError{errors.New("--mongo or --mongo-uri-file (or GAMERELAY_MONGO, GAMERELAY_MONGO_URI_FILE) is required")}
	}
	client, err := mongo.Connect(m.clientOptions(app))
	if err != nil {
		return nil, usageError{fmt.Errorf("--mongo %s: %s", redactURL(m.uri), mongoURIError(err))}
	}
	return client, nil
}

// mongoURIError is the text of the driver's error about a URI, redacted:
// a bad percent-escape would otherwise quote part of the password.
func mongoURIError(err error) string {
	if errors.As(err, new(url.EscapeError)) {
		return "invalid percent-escape in the URI"
	}
	return redactURL(err.Error())
}

func disconnect(c *mongo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Disconnect(ctx)
}
