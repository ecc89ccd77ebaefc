package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/gamerelay/gamerelay/archiver"
	"github.com/gamerelay/gamerelay/gateway"
	"github.com/gamerelay/gamerelay/gateway/httpapi"
	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/admin"
	"github.com/gamerelay/gamerelay/internal/cli"
	"github.com/gamerelay/gamerelay/sequencer"
	"github.com/gamerelay/gamerelay/web"
)

// gatewayFlags are the flags of the WebSocket gateway, shared by gateway and dev.
type gatewayFlags struct {
	listen         string
	secret         string
	anonymous      bool
	create         bool
	origins        cli.Repeated
	maxMsg         int
	queueBytes     int
	rate           float64
	burst          int
	joinRate       float64
	joinBurst      int
	maxPerGame     int
	ping           time.Duration
	drain          time.Duration
	embedSequencer bool
	leaseTTL       time.Duration
	apiKeys        cli.Repeated
	secretFile     string
	apiKeysFile    string
	// Tokens beyond --token-secret.
	secretID      string
	tokenKeysFile string
	publicKeys    cli.Repeated
	jwksURL       string
	audience      string
	issuer        string
	maxLifetime   time.Duration
	leeway        time.Duration
	tokenTTL      time.Duration
	// Who may come in.
	anonPrefix      string
	maxConns        int
	maxConnsPerAddr int
	trustedProxies  cli.Repeated
	// limits bound the public listener's HTTP clients; the zero value
	// means admin's defaults, which the admin listener has too.
	limits admin.Limits
}

// subcommand is what a gateway's flags are registered for.
type subcommand uint8

const (
	gatewayRole subcommand = iota // gamerelay gateway
	devRole                       // gamerelay dev: loopback, no rate limits, anonymous play and create on
)

func (f *gatewayFlags) register(fs *flag.FlagSet, r subcommand) {
	listen, rate, burst := ":8080", 1000.0, 1000
	if r == devRole {
		listen, rate, burst = devListenAddr, 0, 0
	}
	fs.StringVar(&f.listen, "listen", listen, "address of the public listener (WebSocket at /ws)")
	fs.StringVar(&f.secret, "token-secret", "", "HS256 secret for player and spectator tokens (at least 32 bytes); it also signs the tokens create hands out")
	fs.StringVar(&f.secretFile, "token-secret-file", "", "file holding --token-secret (keeps it out of argv and the environment)")
	fs.StringVar(&f.secretID, "token-secret-id", "", "key id (kid) of --token-secret: tokens must name it, and create's tokens carry it (needed to rotate keys)")
	fs.StringVar(&f.tokenKeysFile, "token-keys-file", "", "file of KID=SECRET lines: more HS256 keys tokens may name by kid, e.g. the previous or next key during a rotation (blank lines and # comments allowed)")
	fs.Var(&f.publicKeys, "token-public-key", "KID=PATH of a PEM public key (Ed25519: EdDSA, P-256: ES256, RSA: RS256) tokens may name by kid; repeatable; PATH alone: the key of tokens without kid")
	fs.StringVar(&f.jwksURL, "token-jwks-url", "", "URL of a JSON Web Key Set (an identity provider's public keys, by kid), fetched at start and refreshed every 5 minutes")
	fs.StringVar(&f.audience, "token-audience", "", "if set, tokens must list it in aud")
	fs.StringVar(&f.issuer, "token-issuer", "", "if set, tokens must have it as iss")
	fs.DurationVar(&f.maxLifetime, "token-max-lifetime", 24*time.Hour, "longest lifetime a token may have (exp - iat, or exp - now without iat); longer ones are refused")
	fs.DurationVar(&f.leeway, "token-leeway", 0, "clock skew tolerated on exp and nbf (at most 5m)")
	fs.DurationVar(&f.tokenTTL, "token-ttl", 24*time.Hour, "lifetime of the tokens create and the API hand out (at most --token-max-lifetime)")
	fs.IntVar(&f.maxConns, "max-conns", 0, "most WebSocket connections on this gateway; beyond, 503 (0: no limit)")
	fs.IntVar(&f.maxConnsPerAddr, "max-conns-per-addr", 0, "most connections from one client address (see --trusted-proxies); beyond, 503 (0: no limit)")
	fs.Var(&f.trustedProxies, "trusted-proxies", "CIDRs of the proxies in front of the gateway (ingress, load balancer): from them, X-Forwarded-For names the client; comma-separated or repeated")
	fs.Var(&f.origins, "origins", "allowed WebSocket Origin values, comma-separated or repeated (empty: any)")
	fs.IntVar(&f.maxMsg, "max-message-bytes", 64<<10, "largest client message; larger ones close the connection with 1009")
	fs.IntVar(&f.queueBytes, "send-queue-bytes", 1<<20, "per-client send queue; a client behind by more is closed with 1013")
	fs.Float64Var(&f.rate, "rate", rate, "per-client game messages per second (0: no limit)")
	fs.IntVar(&f.burst, "burst", burst, "per-client burst above --rate")
	fs.IntVar(&f.maxPerGame, "max-clients-per-game", 10_000, "most clients of one game on this gateway")
	fs.DurationVar(&f.ping, "ping-interval", 25*time.Second, "keepalive ping period; silent clients are closed after two")
	fs.DurationVar(&f.drain, "drain-timeout", 20*time.Second, "on SIGTERM, time to close clients (1001) and finish in-flight appends")
	fs.Var(&f.apiKeys, "api-key", "NAME=KEY for the backend HTTP API at /v1 (repeatable; also $GAMERELAY_API_KEYS=NAME=KEY,NAME2=KEY2); no key: no API")
	fs.StringVar(&f.apiKeysFile, "api-keys-file", "", "file of NAME=KEY lines for the backend HTTP API, instead of --api-key (blank lines and # comments allowed; commas separate entries too)")
	if r == gatewayRole {
		fs.Float64Var(&f.joinRate, "join-rate", 20, "joins per second from one source address (0: no limit)")
		fs.IntVar(&f.joinBurst, "join-burst", 100, "joins one source address may make at once above --join-rate")
		fs.BoolVar(&f.anonymous, "allow-anonymous", false, "let clients join without a token (as players), except into games created with tokens")
		fs.StringVar(&f.anonPrefix, "anonymous-prefix", "", "with --allow-anonymous: only games whose id starts with this admit anonymous players")
		fs.BoolVar(&f.create, "allow-create", false, `enable {"type":"create"} (needs --token-secret)`)
		fs.BoolVar(&f.embedSequencer, "embed-sequencer", false, "also run the sequencer service in this process")
		fs.DurationVar(&f.leaseTTL, "lease-ttl", 10*time.Second, "with --embed-sequencer: partition lease lifetime")
	}
}

// resolve takes --token-secret from --token-secret-file and the API
// keys from --api-keys-file, if they are set.
func (f *gatewayFlags) resolve(fs *flag.FlagSet) error {
	secret, ok, err := cli.SecretFile(fs, "token-secret", "token-secret-file")
	if err != nil {
		return usageError{err}
	}
	if ok {
		f.secret = secret
	}
	keys, ok, err := cli.SecretFile(fs, "api-key", "api-keys-file")
	if err != nil {
		return usageError{err}
	}
	if !ok {
		return nil
	}
	if os.Getenv("GAMERELAY_API_KEYS") != "" {
		return usageError{errors.New("--api-keys-file and $GAMERELAY_API_KEYS both set: use one")}
	}
	for _, line := range strings.Split(keys, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// Commas separate entries too, as in $GAMERELAY_API_KEYS: a key
		// file written for it must not turn into one long key.
		for _, kv := range strings.Split(line, ",") {
			kv = strings.TrimSpace(kv)
			if name, key, ok := strings.Cut(kv, "="); !ok || name == "" || key == "" {
				// Never echo the entry: it may be a key.
				return usageError{fmt.Errorf("--api-keys-file %s: entry %d (not counting blank lines and comments): want NAME=KEY", f.apiKeysFile, len(f.apiKeys)+1)}
			}
			f.apiKeys = append(f.apiKeys, kv)
		}
	}
	if len(f.apiKeys) == 0 {
		return usageError{fmt.Errorf("--api-keys-file %s: no NAME=KEY line", f.apiKeysFile)}
	}
	return nil
}

// keys returns the API keys by owner, from --api-key or $GAMERELAY_API_KEYS.
func (f *gatewayFlags) keys() (map[string]string, error) {
	list := []string(f.apiKeys)
	if len(list) == 0 {
		var env cli.Repeated
		_ = env.Set(os.Getenv("GAMERELAY_API_KEYS"))
		list = env
	}
	keys := make(map[string]string, len(list))
	for _, kv := range list {
		name, key, ok := strings.Cut(kv, "=")
		if !ok || name == "" || key == "" {
			// Never echo the entry: it may be a key.
			return nil, usageError{errors.New("--api-key / $GAMERELAY_API_KEYS: want NAME=KEY entries")}
		}
		if _, dup := keys[name]; dup {
			return nil, usageError{fmt.Errorf("--api-key: owner %q given twice", name)}
		}
		keys[name] = key
	}
	return keys, nil
}

func (f *gatewayFlags) config(log *slog.Logger, m *gateway.Metrics) (gateway.Config, error) {
	tc, err := f.tokenConfig()
	if err != nil {
		return gateway.Config{}, err
	}
	proxies, err := parsePrefixes(f.trustedProxies)
	if err != nil {
		return gateway.Config{}, err
	}
	cfg := gateway.Config{
		TokenSecret:       []byte(f.secret),
		TokenSecretID:     f.secretID,
		Tokens:            tc,
		TokenTTL:          f.tokenTTL,
		AnonymousPrefix:   f.anonPrefix,
		MaxConns:          f.maxConns,
		MaxConnsPerAddr:   f.maxConnsPerAddr,
		TrustedProxies:    proxies,
		AllowAnonymous:    f.anonymous,
		AllowCreate:       f.create,
		Origins:           f.origins,
		MaxMessageBytes:   f.maxMsg,
		SendQueueBytes:    f.queueBytes,
		Rate:              f.rate,
		Burst:             f.burst,
		JoinRate:          f.joinRate,
		JoinBurst:         f.joinBurst,
		MaxClientsPerGame: f.maxPerGame,
		PingInterval:      f.ping,
		Logger:            log,
		Metrics:           m,
	}
	if f.secret == "" {
		cfg.TokenSecret = nil
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	if len(cfg.TokenSecret) == 0 && len(tc.Keys) == 0 && tc.JWKSURL == "" && !cfg.AllowAnonymous {
		return cfg, usageError{errors.New("no one could join: set --token-secret or --token-secret-file (or GAMERELAY_TOKEN_SECRET, GAMERELAY_TOKEN_SECRET_FILE), other token keys, or --allow-anonymous")}
	}
	return cfg, nil
}

// tokenConfig reads the token flags beyond --token-secret.
func (f *gatewayFlags) tokenConfig() (token.Config, error) {
	tc := token.Config{JWKSURL: f.jwksURL, Audience: f.audience, Issuer: f.issuer, MaxLifetime: f.maxLifetime, Leeway: f.leeway}
	if f.tokenKeysFile != "" {
		text, err := cli.ReadSecret("token-keys-file", f.tokenKeysFile)
		if err != nil {
			return tc, usageError{err}
		}
		n := 0
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			n++
			kid, secret, ok := strings.Cut(line, "=")
			if !ok || kid == "" || secret == "" {
				// Never echo the line: it holds a key.
				return tc, usageError{fmt.Errorf("--token-keys-file %s: entry %d: want KID=SECRET", f.tokenKeysFile, n)}
			}
			tc.Keys = append(tc.Keys, token.Key{ID: kid, Secret: []byte(secret)})
		}
	}
	for _, kv := range f.publicKeys {
		kid, path, ok := strings.Cut(kv, "=")
		if !ok {
			kid, path = "", kv
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return tc, usageError{fmt.Errorf("--token-public-key: %w", err)}
		}
		pub, err := token.ParsePublicKeyPEM(b)
		if err != nil {
			return tc, usageError{fmt.Errorf("--token-public-key %s: %w", path, err)}
		}
		tc.Keys = append(tc.Keys, token.Key{ID: kid, Public: pub})
	}
	return tc, nil
}

// parsePrefixes reads CIDRs (a bare address is one host).
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, usageError{fmt.Errorf("--trusted-proxies %q: want a CIDR such as 10.0.0.0/8", s)}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func runGateway(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("gateway", "Runs a WebSocket gateway: players and spectators connect at /ws; game\nmessages are appended through the sequencer and delivered in msg_id order.", stderr)
	var (
		lf  logFlags
		lc  logCfg
		nf  natsFlags
		gf  gatewayFlags
		adm string
	)
	lf.register(fs, "json")
	lc.register(fs)
	nf.register(fs)
	gf.register(fs, gatewayRole)
	fs.StringVar(&adm, "admin", ":9090", "admin listener address (/metrics, /healthz, /readyz)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := nf.resolve(fs); err != nil {
		return err
	}
	if err := gf.resolve(fs); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	reg := admin.NewRegistry()
	seqCfg, err := lc.config(log, sequencer.NewMetrics(reg))
	if err != nil {
		return err
	}
	seqCfg.LeaseTTL = gf.leaseTTL
	gcfg, err := gf.config(log, gateway.NewMetrics(reg))
	if err != nil {
		return err
	}
	if _, err := gf.keys(); err != nil {
		return err
	}
	nc, err := connect(ctx, nf, "gamerelay-gateway", log, nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	live, err := connect(ctx, nf, "gamerelay-gateway-live", log, nil, nats.NoEcho())
	if err != nil {
		return err
	}
	defer live.Close()
	seq := remoteSequencers
	if gf.embedSequencer {
		seq = embeddedSequencer
	}
	return serveGateway(ctx, nc, live, seqCfg, gcfg, gf, adm, reg, log, seq, nil)
}

// sequencing says where a gateway's messages are numbered.
type sequencing uint8

const (
	remoteSequencers  sequencing = iota // sequencer deployments, over NATS
	embeddedSequencer                   // also a sequencer service in this process
)

// serveGateway runs the gateway's public and admin listeners (and, with
// embeddedSequencer, a sequencer service) until ctx ends, then drains. extra runs
// alongside and is cancelled after the drain. The game feeds use live, a
// connection made with nats.NoEcho: an embedded sequencer hands its
// messages to the feeds in process and publishes their live copies on
// live, so the feeds do not receive them twice.
func serveGateway(ctx context.Context, nc, live *nats.Conn, seqCfg sequencer.Config, gcfg gateway.Config, gf gatewayFlags,
	adm string, reg *prometheus.Registry, log *slog.Logger, seq sequencing, extra []func(context.Context) error) error {
	feeds, err := sequencer.NewFeeds(live, seqCfg, sequencer.FeedConfig{})
	if err != nil {
		return err
	}
	defer feeds.Close()
	var (
		app gateway.Appender = sequencer.NewClient(nc, seqCfg, sequencer.WithLiveAcks(feeds))
		svc *sequencer.Service
	)
	if seq == embeddedSequencer {
		if svc, err = sequencer.NewService(nc, seqCfg, sequencer.WithLocalFeeds(feeds)); err != nil {
			return usageError{err}
		}
		// Partitions this process owns are appended without a NATS hop.
		app = sequencer.NewLocalFirst(svc, sequencer.NewClient(nc, seqCfg, sequencer.WithLiveAcks(feeds)))
	}
	// Replays older than the streams' retention come from the archive.
	history := archiver.NewHistoryClient(nc, seqCfg.Namespace)
	games, err := sequencer.NewGames(nc, seqCfg)
	if err != nil {
		return err
	}
	gcfg.Registry = games
	gw, err := gateway.New(app, feeds, history, gcfg)
	if err != nil {
		return usageError{err}
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", gw)
	mux.Handle("/", web.Handler()) // the Connect Four demo and /gamerelay.js
	keys, err := gf.keys()
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		api, err := httpapi.New(httpapi.Config{
			Keys:             keys,
			Appender:         app,
			Reader:           feeds.Reader(),
			History:          history,
			TokenSecret:      gcfg.TokenSecret,
			TokenSecretID:    gcfg.TokenSecretID,
			TokenTTL:         gcfg.TokenTTL,
			MaxTokenLifetime: gcfg.Tokens.MaxLifetime,
			Registry:         games,
			Logger:           log,
			Metrics:          httpapi.NewMetrics(reg),
		})
		if err != nil {
			return usageError{err}
		}
		mux.Handle("/v1/", api)
		log.Info("backend API enabled at /v1", "keys", len(keys))
	}
	ln, err := net.Listen("tcp", gf.listen)
	if err != nil {
		return err
	}
	srv := gf.limits.Server(mux)

	// Background parts (sequencer, archiver, ...) outlive the drain, so
	// in-flight appends can finish.
	bgCtx, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	bg, _ := errgroup.WithContext(bgCtx)
	if svc != nil {
		bg.Go(func() error { return svc.Run(bgCtx, gf.drain) })
	}
	for _, f := range extra {
		bg.Go(func() error { return f(bgCtx) })
	}
	// bgDone reports when the background parts end; with none, never.
	var bgDone chan error
	if seq == embeddedSequencer || len(extra) > 0 {
		bgDone = make(chan error, 1)
		go func() { bgDone <- bg.Wait() }()
	}

	ready := func() error {
		if err := gw.Ready(); err != nil {
			return err
		}
		if !nc.IsConnected() || !live.IsConnected() {
			return errors.New("NATS not connected")
		}
		if svc != nil && !svc.Ready() {
			return errors.New("sequencer not started")
		}
		return nil
	}
	admCtx, stopAdm := context.WithCancel(context.Background())
	defer stopAdm()
	admDone := make(chan error, 1)
	go func() { admDone <- admin.Serve(admCtx, adm, admin.Handler(reg, ready), log) }()

	log.Info("gateway listening", "addr", ln.Addr().String(), "anonymous", gcfg.AllowAnonymous, "create", gcfg.AllowCreate)
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(ln) }()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-srvDone:
		runErr = fmt.Errorf("public listener: %w", err)
	case err := <-admDone:
		runErr = fmt.Errorf("admin listener: %w", err)
	case err := <-bgDone:
		runErr = fmt.Errorf("background service stopped: %w", err)
		bgDone <- err
	}
	log.Info("gateway draining", "timeout", gf.drain)
	drainCtx, cancel := context.WithTimeout(context.Background(), gf.drain)
	defer cancel()
	_ = srv.Shutdown(drainCtx) // stop accepting; WebSockets are the gateway's to close
	if err := gw.Shutdown(drainCtx); err != nil {
		log.Warn("gateway drain incomplete", "err", err)
	}
	stopBG()
	if bgDone != nil {
		if err := <-bgDone; err != nil && runErr == nil && !errors.Is(err, context.Canceled) {
			runErr = err
		}
	}
	stopAdm()
	<-admDone
	log.Info("gateway stopped")
	return runErr
}
