package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// Config configures an API. The zero value of every optional field is the
// documented default.
type Config struct {
	// Keys maps each API key's owner to the key. Owners are 1-64 of
	// [A-Za-z0-9_-] and become "source" on the messages their key appends;
	// keys are at least 16 bytes without whitespace. Required.
	Keys map[string]string
	// Appender appends to the ordered log (a sequencer.Client). Required.
	Appender Appender
	// Reader reads stored messages (unknown-game checks, history). Required.
	Reader *sequencer.Reader
	// History serves messages retention removed from the stream; nil means
	// none (such history pages answer 410 history_gap).
	History History
	// TokenSecret signs the tokens POST /v1/games hands out (HS256, the
	// gateway's secret, at least 32 bytes). Without it creating games
	// answers 501 create_disabled.
	TokenSecret []byte
	// TokenSecretID is TokenSecret's key id, written as kid into minted
	// tokens (the gateway's TokenSecretID).
	TokenSecretID string
	// TokenTTL is the default lifetime of minted tokens. Default 24h.
	TokenTTL time.Duration
	// MaxTokenLifetime is the longest lifetime a create may ask for: the
	// longest the gateways accept (their token MaxLifetime). Default 24h.
	MaxTokenLifetime time.Duration
	// Registry records created games, which admit only token holders;
	// nil: not recorded.
	Registry Registry
	// MaxBodyBytes bounds a request body. Default 64 KiB.
	MaxBodyBytes int
	// Timeout bounds one request's work on the log and the archive.
	// Default 10s.
	Timeout time.Duration
	// Logger; default slog.Default(). Keys and tokens are never logged.
	Logger *slog.Logger
	// Metrics; nil disables them.
	Metrics *Metrics
}

// maxTokenTTL bounds the "ttl" of a create request.
const maxTokenTTL = 366 * 24 * time.Hour

func (c Config) withDefaults() Config {
	if c.TokenTTL == 0 {
		c.TokenTTL = 24 * time.Hour
	}
	if c.MaxTokenLifetime == 0 {
		c.MaxTokenLifetime = 24 * time.Hour
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field. Messages name owners, never keys.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case len(c.Keys) == 0:
		return errors.New("httpapi: Keys: want at least one API key")
	case c.Appender == nil:
		return errors.New("httpapi: Appender is required")
	case c.Reader == nil:
		return errors.New("httpapi: Reader is required")
	case len(c.TokenSecret) > 0 && len(c.TokenSecret) < token.MinSecretBytes:
		return fmt.Errorf("httpapi: TokenSecret: want at least %d bytes", token.MinSecretBytes)
	case c.MaxTokenLifetime < time.Second || c.MaxTokenLifetime > maxTokenTTL:
		return fmt.Errorf("httpapi: MaxTokenLifetime %s: want 1s..%s", c.MaxTokenLifetime, maxTokenTTL)
	case c.TokenTTL < time.Second || c.TokenTTL > c.MaxTokenLifetime:
		return fmt.Errorf("httpapi: TokenTTL %s: want 1s..MaxTokenLifetime (%s)", c.TokenTTL, c.MaxTokenLifetime)
	case c.MaxBodyBytes < 256 || c.MaxBodyBytes > 1<<20-4096:
		return fmt.Errorf("httpapi: MaxBodyBytes %d: want 256..%d", c.MaxBodyBytes, 1<<20-4096)
	case c.Timeout < 0:
		return fmt.Errorf("httpapi: Timeout %s: want ≥ 0", c.Timeout)
	}
	seen := make(map[string]string, len(c.Keys))
	for _, owner := range sortedOwners(c.Keys) {
		key := c.Keys[owner]
		if err := wire.ValidateGame(owner); err != nil {
			return fmt.Errorf("httpapi: Keys: owner %q: want 1-64 of [A-Za-z0-9_-]", owner)
		}
		if len(key) < 16 || strings.ContainsAny(key, " \t\r\n") {
			return fmt.Errorf("httpapi: Keys: the key of %s: want at least 16 bytes, no whitespace", owner)
		}
		if other, dup := seen[key]; dup {
			return fmt.Errorf("httpapi: Keys: %s and %s have the same key", other, owner)
		}
		seen[key] = owner
	}
	return nil
}

func sortedOwners(keys map[string]string) []string {
	out := make([]string, 0, len(keys))
	for o := range keys {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// Appender appends to a game's log: a sequencer.Client or, in a process
// that runs the sequencer, a sequencer.Appender.
type Appender interface {
	Append(ctx context.Context, game string, body []byte, idem string) (sequencer.Result, error)
}

// History serves messages the stream no longer holds (archiver.History);
// fn gets each message's id and its stored JSON.
type History interface {
	Range(ctx context.Context, game string, since, upto uint64, fn func(msgID uint64, frame []byte) error) error
}

// Registry records the games created with tokens (sequencer.Games).
type Registry interface {
	Created(ctx context.Context, game string) (bool, error)
	MarkCreated(ctx context.Context, game string) error
}

// API serves the HTTP API under /v1/. Mount it on the gateway's public
// listener with mux.Handle("/v1/", api); it serves full paths (no prefix
// stripping).
type API struct {
	// Static after construction.
	cfg     Config
	app     Appender
	reader  *sequencer.Reader
	history History
	keys    []apiKey
	signer  *token.Signer // nil without TokenSecret
	mux     *http.ServeMux
	log     *slog.Logger
	m       *Metrics
}

// apiKey is a configured key, kept only as its SHA-256 so that comparing
// takes the same time whatever the presented key's length.
type apiKey struct {
	owner string
	sum   [sha256.Size]byte
}

// route is one operation of the API. docs/api.md and openapi.json list the
// same ones (a test checks the document).
type route struct {
	method, path string
	auth         bool
	h            func(a *API, r *http.Request, owner string) (int, any, error)
}

var routes = []route{
	{http.MethodPost, "/v1/games", true, (*API).createGame},
	{http.MethodPost, "/v1/games/{id}/messages", true, (*API).publish},
	{http.MethodGet, "/v1/games/{id}/messages", true, (*API).messages},
	{http.MethodPost, "/v1/games/{id}/end", true, (*API).end},
	{http.MethodGet, "/v1/openapi.json", false, (*API).openapi},
}

// New returns an API for cfg.
func New(cfg Config) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &API{
		cfg:     cfg,
		app:     cfg.Appender,
		reader:  cfg.Reader,
		history: cfg.History,
		mux:     http.NewServeMux(),
		log:     cfg.Logger,
		m:       cfg.Metrics,
	}
	for _, owner := range sortedOwners(cfg.Keys) {
		a.keys = append(a.keys, apiKey{owner: owner, sum: sha256.Sum256([]byte(cfg.Keys[owner]))})
	}
	if len(cfg.TokenSecret) > 0 {
		s, err := token.NewHMACSigner(cfg.TokenSecret, cfg.TokenSecretID)
		if err != nil {
			return nil, fmt.Errorf("httpapi: TokenSecret: %w", err)
		}
		a.signer = s
	}
	allow := make(map[string][]string)
	var paths []string
	for _, rt := range routes {
		a.handle(rt.method+" "+rt.path, rt)
		if allow[rt.path] == nil {
			paths = append(paths, rt.path)
		}
		allow[rt.path] = append(allow[rt.path], rt.method)
		if rt.method == http.MethodGet {
			allow[rt.path] = append(allow[rt.path], http.MethodHead)
		}
	}
	// ServeMux would answer a wrong method or an unknown path in plain
	// text; the API answers in JSON with its stable codes.
	for _, p := range paths {
		methods := strings.Join(allow[p], ", ")
		a.handle(p, route{path: p, h: func(_ *API, r *http.Request, _ string) (int, any, error) {
			return 0, nil, &apiError{status: http.StatusMethodNotAllowed, code: wire.CodeMethodNotAllowed,
				msg: r.Method + " is not allowed here; allowed: " + methods, allow: methods}
		}})
	}
	a.handle("/", route{path: "unmatched", h: func(_ *API, r *http.Request, _ string) (int, any, error) {
		return 0, nil, errorf(http.StatusNotFound, wire.CodeNotFound, "no API route %s", r.URL.Path)
	}})
	return a, nil
}

// ServeHTTP serves one API request.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// handle registers rt's handler under pattern, wrapped with
// authentication, the request timeout, error replies, logs and metrics.
func (a *API) handle(pattern string, rt route) {
	label := pattern
	if rt.method == "" {
		label = rt.path
	}
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status := a.serve(w, r, label, rt)
		a.m.observe(label, status, time.Since(start))
	})
}

func (a *API) serve(w http.ResponseWriter, r *http.Request, label string, rt route) int {
	owner := ""
	if rt.auth {
		var ok bool
		if owner, ok = a.authenticate(r); !ok {
			return a.fail(w, r, label, "", errorf(http.StatusUnauthorized, wire.CodeUnauthorized,
				"missing or unknown API key: send Authorization: Bearer <key>"))
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	status, body, err := rt.h(a, r.WithContext(ctx), owner)
	if err != nil {
		return a.fail(w, r, label, owner, err)
	}
	if raw, ok := body.([]byte); ok {
		writeRaw(w, status, raw)
	} else {
		writeJSON(w, status, body)
	}
	a.log.Debug("httpapi: request", "route", label, "owner", owner, "game", r.PathValue("id"), "status", status)
	return status
}

// authenticate returns the owner of the request's bearer key. It compares
// the key with every configured key, in constant time.
func (a *API) authenticate(r *http.Request) (string, bool) {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(key)))
	owner := ""
	for _, k := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], k.sum[:]) == 1 {
			owner = k.owner
		}
	}
	return owner, owner != ""
}

// apiError is a refused or failed request: its status and stable code go
// to the caller, cause (5xx only) to the log.
type apiError struct {
	status int
	code   string
	msg    string
	allow  string // Allow header of a 405
	cause  error
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// unavailable is a 503 whose cause is logged, not sent.
func unavailable(msg string, cause error) *apiError {
	return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeUnavailable, msg: msg, cause: cause}
}

// errorBody is the JSON of every error reply.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, label, owner string, err error) int {
	var e *apiError
	if !errors.As(err, &e) {
		e = &apiError{status: http.StatusInternalServerError, code: wire.CodeInternal, msg: "unexpected server error", cause: err}
	}
	switch e.status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="gamerelay"`)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", e.allow)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	var b errorBody
	b.Error.Code, b.Error.Message = e.code, e.msg
	writeJSON(w, e.status, b)
	if e.status >= 500 {
		a.log.Warn("httpapi: request failed", "route", label, "owner", owner, "game", r.PathValue("id"),
			"status", e.status, "code", e.code, "err", e.cause)
	} else {
		a.log.Debug("httpapi: request refused", "route", label, "owner", owner, "game", r.PathValue("id"),
			"status", e.status, "code", e.code)
	}
	return e.status
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encoding the reply failed"}}`)
	}
	writeRaw(w, status, append(b, '\n'))
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

//go:embed openapi.json
var openapiDoc []byte

func (a *API) openapi(*http.Request, string) (int, any, error) {
	return http.StatusOK, openapiDoc, nil
}
