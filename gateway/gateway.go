package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/wire"
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

// ServeHTTP upgrades the request to a WebSocket and serves it.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.draining.Load() {
		http.Error(w, "gateway draining: connect to another instance", http.StatusServiceUnavailable)
		return
	}
	if !g.originAllowed(r.Header.Get("Origin")) {
		g.m.closed("origin")
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	addr := clientAddr(r, g.cfg.TrustedProxies)
	if reason := g.admit(addr); reason != "" {
		g.m.refused(reason)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many connections: try again later", http.StatusServiceUnavailable)
		return
	}
	nc, rw, _, err := ws.HTTPUpgrader{Timeout: 10 * time.Second}.Upgrade(r, w)
	if err != nil {
		g.log.Debug("gateway: upgrade", "remote", r.RemoteAddr, "err", err)
		g.leave(addr)
		if nc != nil {
			_ = nc.Close()
		}
		return
	}
	// Bytes the client sent right after the handshake may sit in the
	// server's read buffer: hand them to the frame reader first.
	var src = net.Conn(nc)
	if n := rw.Reader.Buffered(); n > 0 {
		pre := make([]byte, n)
		_, _ = rw.Reader.Read(pre)
		src = &prefixConn{Conn: nc, pre: pre}
	}
	n := g.nextID.Add(1)
	c := &conn{
		g:      g,
		nc:     src,
		raw:    rawConn(src),
		id:     g.cfg.Instance + "-" + strconv.FormatUint(n, 36),
		addr:   addr,
		bucket: uint8(n % pingBuckets),
	}
	c.fr = frameReader{r: src, max: min(preJoinMaxBytes, g.cfg.MaxMessageBytes)}
	_ = c.nc.SetReadDeadline(time.Now().Add(g.cfg.JoinTimeout))
	g.mu.Lock()
	if g.draining.Load() {
		g.mu.Unlock()
		g.leave(addr)
		_ = nc.Close()
		return
	}
	g.conns[c] = struct{}{}
	g.wg.Add(1)
	if g.kaStop == nil {
		g.kaStop, g.kaDone = make(chan struct{}), make(chan struct{})
		go g.keepalive(g.kaStop, g.kaDone)
	}
	g.mu.Unlock()
	g.m.connections(1)
	go g.serve(c)
}

func (g *Gateway) originAllowed(origin string) bool {
	if len(g.cfg.Origins) == 0 || origin == "" {
		return true
	}
	for _, o := range g.cfg.Origins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// prefixConn reads pre before the connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

// socket returns the connection under nc's prefixConn, if it has one.
func socket(nc net.Conn) net.Conn {
	if p, ok := nc.(*prefixConn); ok {
		return p.Conn
	}
	return nc
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		if len(p.pre) == 0 {
			p.pre = nil
		}
		return n, nil
	}
	return p.Conn.Read(b)
}

// serve is the connection's reader goroutine. It runs from the upgrade to
// the end of the connection, except while the connection is parked: then
// it returns and the poller starts serve again when the client sends
// something. The connection's count in g.wg passes from one to the next.
func (g *Gateway) serve(c *conn) {
	if g.read(c) {
		return // parked
	}
	defer g.wg.Done()
	c.fr.release()
	g.finish(c)
}

// read reads and handles frames until the connection ends (false) or is
// parked (true).
func (g *Gateway) read(c *conn) (parked bool) {
	for {
		if c.hub != nil {
			c.fr.max = g.cfg.MaxMessageBytes // joined: no longer preJoinMaxBytes
			g.armReadDeadline(c)
		}
		op, p, err := c.fr.next()
		if err != nil {
			if err == errIdle && c.hub != nil && !c.graced {
				if g.park(c) {
					return true
				}
				if g.now()-c.lastRead.Load() < int64(2*g.cfg.PingInterval) {
					continue
				}
			}
			g.readFailed(c, err)
			return false
		}
		t := g.now()
		switch op {
		case ws.OpClose:
			// next lets through only what RFC 6455 allows (checkClose):
			// empty, or a code that may be echoed.
			code, _ := ws.ParseCloseFrameData(p)
			if code == 0 {
				code = wire.CloseNormal
			}
			c.closeWith(int(code), "", "client")
			return false
		case ws.OpPing:
			c.enqueue(item{kind: itemFrame, frame: ws.MustCompileFrame(ws.NewPongFrame(p))})
		case ws.OpPong:
		case ws.OpBinary:
			c.sendError(wire.CodeUnsupported, "binary frames are not supported: send JSON text frames")
			c.closeWith(wire.CloseUnsupported, "binary frames not supported", "unsupported")
			return false
		case ws.OpText:
			if !g.handle(c, p) {
				return false
			}
		}
		if c.hub != nil {
			c.lastRead.Store(t)
		}
	}
}

// armReadDeadline sets the deadline for the next frame of a joined
// connection: parkAfter, when it passes before the frame starts the
// connection is parked; two ping intervals if it cannot be parked. Once a
// close is under way it is closeGrace, set once.
func (g *Gateway) armReadDeadline(c *conn) {
	c.fr.stall = 2 * g.cfg.PingInterval
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	d := 2 * g.cfg.PingInterval
	switch {
	case closing && c.graced:
		return
	case closing:
		c.graced = true
		d = closeGrace
	case !c.noPark:
		d = min(d, g.cfg.parkAfter)
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
}

// park hands an idle joined connection to the poller; true means the
// reader goroutine must return without touching c again.
func (g *Gateway) park(c *conn) bool {
	if c.noPark || c.fr.pending() {
		return false
	}
	// The poller wakes the connection only for bytes still in the socket:
	// nothing may wait in the read buffer, which goes back to its pool.
	c.fr.release()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	if !c.writing && len(c.queue) == 0 {
		c.queue = nil // the writer keeps its array for the next round
	}
	if !g.poll.park(c) {
		c.noPark = true
		return false
	}
	return true
}

// now is the monotonic time since the gateway started, in nanoseconds.
func (g *Gateway) now() int64 {
	return max(1, int64(time.Since(g.epoch)))
}

// readFailed closes the connection after the reader stopped on err.
func (g *Gateway) readFailed(c *conn, err error) {
	g.log.Debug("gateway: read ended", "client", c.id, "err", err)
	var pe *protoError
	switch {
	case errors.As(err, &pe):
		c.sendError(pe.code, pe.msg)
		c.closeWith(pe.closeCode, pe.msg, pe.code)
	case errors.Is(err, os.ErrDeadlineExceeded):
		if c.hub == nil {
			c.sendError("join_timeout", "no join within "+g.cfg.JoinTimeout.String())
			c.closeWith(wire.ClosePolicy, "join timeout", "join_timeout")
		} else {
			c.closeWith(wire.ClosePolicy, "ping timeout", "ping_timeout")
		}
	default:
		c.closeWith(wire.CloseNormal, "", "disconnect")
	}
}

// finish cleans up after the reader goroutine ends: lets the writer send
// what it has (a close frame, normally), then drops the socket.
func (g *Gateway) finish(c *conn) {
	c.waitWriter(closeGrace)
	lingerClose(c.nc)
	if h := c.hub; h != nil {
		h.mu.Lock()
		delete(h.clients, c)
		if c.role == token.RolePlayer {
			h.players--
		} else {
			h.spectators--
		}
		h.mu.Unlock()
		g.aud.mark(h)
		if c.role == token.RolePlayer {
			g.playerEvent(h.game, presenceEvent{event: "leave", client: c.id, user: c.user})
		}
		g.releaseHub(h)
	}
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
	g.leave(c.addr)
	g.m.connections(-1)
}

// lingerMax bounds what lingerClose reads and drops.
const lingerMax = 1 << 20

// lingerClose ends a connection without losing what was just written to
// it. Closing a socket with unread bytes in it (a payload refused as too
// large, frames sent after a protocol error) makes the kernel answer with
// a reset, and a reset can make the client's kernel drop the error and
// close frames before the client reads them, or fail the client's write
// of the rest of its frame. So the gateway first sends FIN, then reads and
// drops what the client still sends, up to lingerMax bytes and closeGrace,
// and only then closes.
func lingerClose(nc net.Conn) {
	if cw, ok := socket(nc).(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = nc.SetReadDeadline(time.Now().Add(closeGrace))
		buf := readBufPool.Get().(*[readBufSize]byte)
		for n := 0; n < lingerMax; {
			k, err := nc.Read(buf[:])
			n += k
			if err != nil {
				break
			}
		}
		readBufPool.Put(buf)
	}
	_ = nc.Close()
}

// handle acts on one text message; false ends the connection.
func (g *Gateway) handle(c *conn, p []byte) bool {
	req, pe := decodeRequest(p)
	if pe != nil {
		c.sendErrorFor(pe.code, pe.msg, pe.idem)
		return true
	}
	switch req.kind {
	case kindJoin:
		if c.hub != nil {
			c.sendError(wire.CodeAlreadyJoined, "this connection already joined "+c.hub.game)
			return true
		}
		if !g.allowJoin(c) {
			return true
		}
		g.onSideStack(func() { g.join(c, req, nil) })
	case kindCreate:
		if c.hub != nil {
			c.sendError(wire.CodeAlreadyJoined, "this connection already joined "+c.hub.game)
			return true
		}
		if !g.cfg.AllowCreate {
			c.sendError(wire.CodeCreateDisabled, "creating games is disabled on this server")
			return true
		}
		if !g.allowJoin(c) {
			return true
		}
		g.onSideStack(func() { g.create(c) })
	case kindRefresh:
		g.refresh(c, req)
	case kindGame:
		g.gameMessage(c, req.body, req.idem)
	}
	return true
}

// allowJoin takes a join from the connection's source address's budget
// (Config.JoinRate); if it is spent, the client is told so.
func (g *Gateway) allowJoin(c *conn) bool {
	if g.joins == nil || g.joins.allow(c.addr, time.Now()) {
		return true
	}
	g.m.refused("join_rate")
	c.sendError(wire.CodeRateLimited, "too many joins from your address; try again shortly")
	return false
}

// onSideStack runs f on a short-lived goroutine and waits for it. Joins
// go through NATS requests with deep call stacks; run on the reader
// goroutine they would grow its stack for as long as the connection lives
// (idle connections are most of a gateway's memory).
func (g *Gateway) onSideStack(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// gameMessage appends a player's message and waits until its outcome is
// known: stored (it comes back through the feed), refused, or — after
// AppendTimeout of retries with the same idempotency key — unknown. The
// client's messages are appended one at a time, in the order it sent them.
func (g *Gateway) gameMessage(c *conn, body []byte, idem string) {
	switch {
	case c.hub == nil:
		c.sendErrorFor(wire.CodeNotJoined, "join a game first", idem)
		return
	case c.role != token.RolePlayer:
		c.sendErrorFor(wire.CodeForbidden, "spectators cannot send messages", idem)
		return
	case g.cfg.Rate > 0 && !c.allow():
		c.sendErrorFor(wire.CodeRateLimited, "too many messages; this one was dropped", idem)
		return
	}
	c.appending.Store(true)
	defer c.appending.Store(false)
	if b := c.joinPresence; b != nil {
		// The player's join goes into the log before its first message.
		ctx, cancel := context.WithTimeout(g.ctx, g.cfg.AppendTimeout)
		g.awaitPresence(ctx, c.hub.game, b)
		cancel()
		c.joinPresence = nil
	}
	c.seq++
	// A player that sends reads through a buffer from now on (see
	// frameReader); listeners never take one.
	c.fr.buffered = true
	key := messageKey(c, idem)
	start := time.Now()
	var err error
	if g.timed != nil {
		_, err = g.timed.AppendWithin(g.ctx, g.cfg.AppendTimeout, c.hub.game, gameBody(body, c.id, c.user), key)
	} else {
		ctx, cancel := context.WithTimeout(g.ctx, g.cfg.AppendTimeout)
		_, err = g.app.Append(ctx, c.hub.game, gameBody(body, c.id, c.user), key)
		cancel()
	}
	g.m.appended(time.Since(start), err == nil)
	if err == nil {
		return
	}
	var se *sequencer.Error
	switch {
	case errors.As(err, &se) && se.Code == wire.CodeUnavailable:
		g.log.Warn("gateway: append refused", "game", c.hub.game, "client", c.id, "err", err)
		c.sendErrorFor(wire.CodeUnavailable, "the message was not stored; send it again", idem)
	case errors.As(err, &se) && se.Code != wire.CodeOutcomeUnknown:
		c.sendErrorFor(se.Code, se.Msg, idem)
	default:
		g.log.Warn("gateway: append outcome unknown", "game", c.hub.game, "client", c.id, "err", err)
		c.sendErrorFor(wire.CodeOutcomeUnknown, "no answer in time: the message may have been stored, and then appears in the game; sending it again with the same idem is harmless", idem)
	}
}

// messageKey is the idempotency key of a client's message: its own idem,
// scoped by the token's user (or to anonymous players), so that a resend
// after any close — on any connection, any gateway — appends it at most
// once; without one, a key of this connection's.
func messageKey(c *conn, idem string) string {
	if idem == "" {
		return c.id + ":" + strconv.FormatUint(c.seq, 36)
	}
	if c.user != "" {
		// A user name may hold any character: a digest keeps the key a
		// safe header value.
		sum := sha256.Sum256([]byte(c.user))
		return "u:" + hex.EncodeToString(sum[:12]) + ":" + idem
	}
	return "a:" + idem
}

// allow takes a token from c's rate limiter, made full on first use (as it
// would be at connect time): connections that never send cost no limiter.
func (c *conn) allow() bool {
	if c.limiter == nil {
		c.limiter = rate.NewLimiter(rate.Limit(c.g.cfg.Rate), c.g.cfg.Burst)
	}
	return c.limiter.Allow()
}

// join authorises req and attaches c to the game: joined, replay, live.
// created, if not nil, is sent before joined.
func (g *Gateway) join(c *conn, req request, created []byte) {
	cl, ok := g.authorize(c, req)
	if !ok {
		return
	}
	role, user := cl.Role, cl.Sub
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.AppendTimeout)
	defer cancel()
	h, err := g.acquireHub(ctx, req.game)
	if err != nil {
		g.log.Warn("gateway: open game", "game", req.game, "err", err)
		c.sendError(wire.CodeUnavailable, "the game cannot be opened now; try again")
		return
	}
	h.mu.Lock()
	switch {
	case h.last == 0 && role == token.RoleSpectator:
		h.mu.Unlock()
		g.releaseHub(h)
		c.sendError(wire.CodeUnknownGame, "game "+req.game+" does not exist")
		return
	case len(h.clients) >= g.cfg.MaxClientsPerGame:
		h.mu.Unlock()
		g.releaseHub(h)
		c.sendError(wire.CodeGameFull, "the game has the most clients allowed")
		return
	}
	if created != nil {
		// A created game exists once its first message is stored: the
		// creator's join goes into the log before anyone learns the
		// game's id.
		h.mu.Unlock()
		b := g.playerEvent(req.game, presenceEvent{event: "join", client: c.id, user: user})
		actx, acancel := context.WithTimeout(g.ctx, g.cfg.AppendTimeout)
		g.awaitPresence(actx, req.game, b)
		acancel()
		select {
		case <-b.done:
		default:
			g.releaseHub(h)
			g.log.Warn("gateway: create: the game's first message was not stored in time", "game", req.game)
			c.sendError(wire.CodeUnavailable, "the game could not be created; try again")
			return
		}
		h.mu.Lock()
	}
	since := req.since
	if req.history >= 0 && h.last > uint64(req.history) {
		since = max(since, h.last-uint64(req.history))
	}
	c.hub, c.role, c.user = h, role, user
	c.exp.Store(cl.Exp) // 0 for anonymous players: never expires
	h.clients[c] = struct{}{}
	if role == token.RolePlayer {
		h.players++
	} else {
		h.spectators++
	}
	c.mu.Lock()
	if created != nil {
		c.enqueueLocked(item{kind: itemFrame, frame: textFrame(created)})
	}
	c.enqueueLocked(item{kind: itemJoin, join: &joinJob{
		since:  since,
		head:   h.last,
		joined: joinedFrame(req.game, c.id, role, h.last, since),
		feed:   h.feed,
		game:   req.game,
	}})
	c.mu.Unlock()
	h.mu.Unlock()
	g.aud.mark(h)
	if role == token.RolePlayer && created == nil {
		c.joinPresence = g.playerEvent(req.game, presenceEvent{event: "join", client: c.id, user: user})
	}
}

// create makes a new game, records it as created with tokens, hands out
// its tokens and joins c as a player.
func (g *Gateway) create(c *conn) {
	var b [10]byte
	_, _ = rand.Read(b[:])
	game := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	now := time.Now()
	claims := token.Claims{Game: game, Role: token.RolePlayer, Exp: now.Add(g.cfg.TokenTTL).Unix(), Iat: now.Unix()}
	join, err1 := g.signer.Mint(claims)
	claims.Role = token.RoleSpectator
	watch, err2 := g.signer.Mint(claims)
	if err := errors.Join(err1, err2); err != nil {
		g.log.Error("gateway: mint tokens", "err", err)
		c.sendError(wire.CodeInternal, "could not create a game")
		return
	}
	if r := g.cfg.Registry; r != nil {
		ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
		err := r.MarkCreated(ctx, game)
		cancel()
		if err != nil {
			g.log.Warn("gateway: create: record the game", "game", game, "err", err)
			c.sendError(wire.CodeUnavailable, "the game could not be created; try again")
			return
		}
	}
	g.join(c, request{kind: kindJoin, game: game, token: join}, createdFrame(game, join, watch))
}

// Shutdown drains the gateway: new connections are refused, every client is
// closed with 1001 so it resumes on another instance, in-flight appends
// finish. If ctx ends first, what is left is cut off. Shutdown returns when
// every connection goroutine, the keepalive and the poller have exited.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if !g.draining.Swap(true) {
		close(g.drainCh)
	}
	conns := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	kaStop, kaDone := g.kaStop, g.kaDone
	g.mu.Unlock()
	for _, c := range conns {
		// Wakes parked connections; none parks once closing.
		c.closeWith(wire.CloseGoingAway, "server shutting down: reconnect with since", "going_away")
	}
	// Every connection is closing: nothing left to ping or park.
	if kaStop != nil {
		close(kaStop)
		<-kaDone
	}
	g.poll.stop()
	done := make(chan struct{})
	defer g.aud.close()
	if g.tokens != nil {
		defer g.tokens.Close()
	}
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		g.cancel()
		return nil
	case <-ctx.Done():
	}
	g.cancel()
	g.mu.Lock()
	for c := range g.conns {
		_ = c.nc.Close()
	}
	g.mu.Unlock()
	<-done
	return ctx.Err()
}
