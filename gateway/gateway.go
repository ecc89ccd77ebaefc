package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/sequencer"
)

// Config configures a Gateway. The zero value is the documented default,
// except that a gateway without token keys and without AllowAnonymous
// admits no one.
type Config struct {
	// TokenSecret is an HS256 secret (at least 32 bytes): it verifies
	// tokens without a kid (or with TokenSecretID) and signs the tokens
	// create hands out.
	TokenSecret []byte
	// TokenSecretID is TokenSecret's key id: set, tokens create hands out
	// carry it as kid, and tokens must name it to be checked with
	// TokenSecret. Rotating keys needs ids (see Tokens).
	TokenSecretID string
	// Tokens adds to TokenSecret: more verification keys chosen by kid
	// (several at once, so a studio rolls keys without dropping players),
	// EdDSA/ES256/RS256 public keys, a JWKS URL, audience and issuer
	// checks, the longest token lifetime accepted (default 24h).
	Tokens token.Config
	// AllowAnonymous lets clients join without a token, as players, in
	// games not created with tokens (see Registry) whose id starts with
	// AnonymousPrefix.
	AllowAnonymous bool
	// AnonymousPrefix confines anonymous play to games whose id starts
	// with it. Default "": any game not created with tokens.
	AnonymousPrefix string
	// Registry records games created with tokens, which admit only token
	// holders. nil: none is recorded (anonymous clients may join any game
	// where AllowAnonymous is set).
	Registry Registry
	// AllowCreate enables {"type":"create"} (needs TokenSecret).
	AllowCreate bool
	// MaxConns bounds this gateway's connections, MaxConnsPerAddr those
	// from one source address. Beyond them the upgrade is answered 503
	// (counted in Metrics.Refused). 0: no limit.
	MaxConns        int
	MaxConnsPerAddr int
	// TrustedProxies are the networks of the proxies in front of the
	// gateway (ingress controllers, load balancers). A request from one of
	// them has its client address taken from X-Forwarded-For (the
	// right-most address not itself a trusted proxy); from anyone else the
	// header is ignored and the peer is the client. The per-address limits
	// count that client address.
	TrustedProxies []netip.Prefix
	// Origins, if not empty, is the allow-list of WebSocket Origin headers
	// ("*" allows all; requests without Origin, from non-browsers, pass).
	Origins []string
	// MaxMessageBytes bounds one client message. Default 64 KiB.
	MaxMessageBytes int
	// SendQueueBytes bounds what waits to be written to one client; beyond
	// it the client is closed with 1013. Default 1 MiB.
	SendQueueBytes int
	// Rate and Burst are the per-client token bucket for game messages
	// (messages/s). Rate 0 disables the limit.
	Rate  float64
	Burst int
	// MaxClientsPerGame bounds one game's clients on this gateway. Default 10,000.
	MaxClientsPerGame int
	// PingInterval is the keepalive period; a client silent for two
	// intervals is closed. Default 25s.
	PingInterval time.Duration
	// JoinTimeout is how long a new connection may stay without joining.
	// Default 30s.
	JoinTimeout time.Duration
	// WriteTimeout bounds one write to a client. Default 10s.
	WriteTimeout time.Duration
	// AppendTimeout is how long the gateway keeps trying to store one
	// client message (with the same idempotency key, through any
	// sequencer) before it answers outcome_unknown. It must stay well
	// within the log's duplicate window (2 minutes). Default 60s.
	AppendTimeout time.Duration
	// ReplayTimeout bounds a join's replay. Default 60s.
	ReplayTimeout time.Duration
	// TokenTTL is the lifetime of tokens minted by create. Default 24h.
	TokenTTL time.Duration
	// JoinRate and JoinBurst limit joins per second from one source
	// address (a token bucket per address). JoinRate 0 disables the limit.
	JoinRate  float64
	JoinBurst int
	// AudienceInterval is the shortest time between two audience frames
	// of one game, and between two counts this gateway publishes for it.
	// Default 500ms.
	AudienceInterval time.Duration
	// AudienceTTL is how long the counts of another gateway stay without a
	// sign of life from it. Default 3s.
	AudienceTTL time.Duration
	// Instance prefixes client ids; unique per gateway process. Default random.
	Instance string
	// Logger; default slog.Default(). Tokens are never logged.
	Logger *slog.Logger
	// Metrics; nil disables them.
	Metrics *Metrics

	// parkAfter is how long a joined connection stays idle before its
	// reader goroutine is parked (Linux). Default 2s; tests shorten it.
	parkAfter time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 10
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = 1 << 20
	}
	if c.Burst == 0 && c.Rate > 0 {
		c.Burst = max(1, int(c.Rate))
	}
	if c.MaxClientsPerGame == 0 {
		c.MaxClientsPerGame = 10_000
	}
	if c.PingInterval == 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = 30 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.AppendTimeout == 0 {
		c.AppendTimeout = 60 * time.Second
	}
	if c.ReplayTimeout == 0 {
		c.ReplayTimeout = 60 * time.Second
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = 24 * time.Hour
	}
	if c.JoinBurst == 0 && c.JoinRate > 0 {
		c.JoinBurst = max(1, int(c.JoinRate))
	}
	if c.AudienceInterval == 0 {
		c.AudienceInterval = 500 * time.Millisecond
	}
	if c.AudienceTTL == 0 {
		c.AudienceTTL = 3 * time.Second
	}
	if c.Instance == "" {
		var b [5]byte
		_, _ = rand.Read(b[:])
		c.Instance = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.parkAfter == 0 {
		c.parkAfter = 2 * time.Second
	}
	return c
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	c = c.withDefaults()
	maxLifetime := c.Tokens.MaxLifetime
	if maxLifetime == 0 {
		maxLifetime = 24 * time.Hour // token.Config's default
	}
	switch {
	case c.MaxMessageBytes < 256 || c.MaxMessageBytes > 1<<20-4096:
		return fmt.Errorf("gateway: MaxMessageBytes %d: want 256..%d", c.MaxMessageBytes, 1<<20-4096)
	case c.SendQueueBytes < c.MaxMessageBytes:
		return fmt.Errorf("gateway: SendQueueBytes %d: want at least MaxMessageBytes (%d)", c.SendQueueBytes, c.MaxMessageBytes)
	case c.Rate < 0 || c.Burst < 0:
		return fmt.Errorf("gateway: Rate %v / Burst %d: want ≥ 0", c.Rate, c.Burst)
	case c.JoinRate < 0 || c.JoinBurst < 0:
		return fmt.Errorf("gateway: JoinRate %v / JoinBurst %d: want ≥ 0", c.JoinRate, c.JoinBurst)
	case c.AudienceInterval < 10*time.Millisecond:
		return fmt.Errorf("gateway: AudienceInterval %s: want ≥ 10ms", c.AudienceInterval)
	case c.AudienceTTL < 2*time.Second:
		return fmt.Errorf("gateway: AudienceTTL %s: want ≥ 2s (gateways say they are alive every second)", c.AudienceTTL)
	case c.MaxClientsPerGame < 1:
		return fmt.Errorf("gateway: MaxClientsPerGame %d: want ≥ 1", c.MaxClientsPerGame)
	case c.PingInterval < 100*time.Millisecond:
		return fmt.Errorf("gateway: PingInterval %s: want ≥ 100ms", c.PingInterval)
	case c.AllowCreate && len(c.TokenSecret) == 0:
		return errors.New("gateway: AllowCreate needs TokenSecret (create hands out tokens)")
	case len(c.TokenSecret) > 0 && len(c.TokenSecret) < token.MinSecretBytes:
		return fmt.Errorf("gateway: TokenSecret: want at least %d bytes", token.MinSecretBytes)
	case c.AllowCreate && c.TokenTTL > maxLifetime:
		return fmt.Errorf("gateway: TokenTTL %s: longer than the tokens the gateway accepts (Tokens.MaxLifetime)", c.TokenTTL)
	case strings.ContainsAny(c.Instance, ".*> \t"):
		return fmt.Errorf("gateway: Instance %q: no dots, wildcards or spaces", c.Instance)
	}
	return nil
}

// Appender appends a game message to the ordered log; sequencer.Client and
// *sequencer.Appender implement it.
type Appender interface {
	Append(ctx context.Context, game string, body []byte, idem string) (sequencer.Result, error)
}

// timedAppender is an Appender that also takes its time limit as a
// duration (sequencer.LocalFirst, sequencer.Appender): a client message
// appended inline then costs no context and timer, which profiles showed
// on every message.
type timedAppender interface {
	AppendWithin(ctx context.Context, d time.Duration, game string, body []byte, idem string) (sequencer.Result, error)
}

// History serves messages the stream no longer holds; archiver's
// HistoryClient implements it.
type History interface {
	Range(ctx context.Context, game string, since, upto uint64, fn func(msgID uint64, frame []byte) error) error
}

var (
	_ Appender = (*sequencer.Client)(nil)
	_ Appender = (*sequencer.Appender)(nil)
)

// Gateway serves the WebSocket protocol (docs/protocol.md) at the handler
// returned by Handler.
type Gateway struct {
	// Static after construction.
	cfg     Config
	app     Appender
	timed   timedAppender   // app, if it takes a duration; nil otherwise
	tokens  *token.Verifier // nil: no keys, tokens refused
	signer  *token.Signer   // signs create's tokens; nil without TokenSecret
	feeds   *sequencer.Feeds
	history History // nil: no archive
	log     *slog.Logger
	m       *Metrics
	ctx     context.Context // cancelled when draining runs out of time
	cancel  context.CancelFunc
	epoch   time.Time // origin of now

	nextID      atomic.Uint64
	presenceSeq atomic.Uint64 // presence messages appended, for their idempotency keys
	draining    atomic.Bool
	drainCh     chan struct{}  // closed when draining starts
	wg          sync.WaitGroup // connection goroutines and presence loops
	poll        poller         // parked connections
	aud         *audience
	joins       *addrLimiter // nil: joins are not limited per address

	presMu sync.Mutex
	// Guarded by presMu.
	presence map[string]*presenceQueue // games with player events to append

	mu sync.Mutex
	// Guarded by mu.
	hubs  map[string]*hub
	conns map[*conn]struct{}
	// Guarded by addrMu.
	addrMu  sync.Mutex
	total   int            // connections admitted (by admit) and not yet left
	perAddr map[string]int // of total, by client address
	kaStop  chan struct{}  // closes to stop keepalive; nil until it starts
	kaDone  chan struct{}  // closed when keepalive returns
}

// New returns a Gateway appending through app and delivering from feeds.
// history may be nil.
func New(app Appender, feeds *sequencer.Feeds, history History, cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	g := &Gateway{
		cfg:      cfg,
		app:      app,
		feeds:    feeds,
		history:  history,
		log:      cfg.Logger,
		m:        cfg.Metrics,
		hubs:     make(map[string]*hub),
		conns:    make(map[*conn]struct{}),
		presence: make(map[string]*presenceQueue),
		perAddr:  make(map[string]int),
		drainCh:  make(chan struct{}),
		epoch:    time.Now(),
	}
	g.timed, _ = app.(timedAppender)
	var err error
	if g.tokens, err = newVerifier(cfg); err != nil {
		return nil, fmt.Errorf("gateway: tokens: %w", err)
	}
	if len(cfg.TokenSecret) > 0 {
		if g.signer, err = token.NewHMACSigner(cfg.TokenSecret, cfg.TokenSecretID); err != nil {
			return nil, fmt.Errorf("gateway: TokenSecret: %w", err)
		}
	}
	g.aud = newAudience(g)
	if cfg.JoinRate > 0 {
		g.joins = newAddrLimiter(cfg.JoinRate, cfg.JoinBurst)
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g, nil
}

// Ready reports nil while the gateway accepts connections.
func (g *Gateway) Ready() error {
	if g.draining.Load() {
		return errors.New("draining")
	}
	return nil
}

// now is the monotonic time since the gateway started, in nanoseconds.
func (g *Gateway) now() int64 {
	return max(1, int64(time.Since(g.epoch)))
}
