package token

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// Config configures a Verifier. The zero value of every optional field is
// the documented default; a Config needs Keys, a JWKSURL or both.
type Config struct {
	// Keys are the verification keys. Their IDs are distinct; at most one
	// has no ID (the default key, for tokens without kid).
	Keys []Key

	// JWKSURL, if set, is an http or https URL serving a JSON Web Key Set
	// of public keys, selected by kid; an entry of Keys wins over a JWKS
	// key with the same kid. Only keys with a kid and without a use other
	// than "sig" count (none becomes the default key); kty "oct" (secrets)
	// and kinds other than those of Key are ignored. The set is fetched by
	// NewVerifier, every JWKSRefresh, and when a token's kid names no known
	// key, at most once per JWKSMinInterval; Verify waits for such a fetch,
	// at most JWKSTimeout. A response larger than 1 MiB, with more than 100
	// keys or without a usable key is a failed fetch: the last good set
	// stays, and the failure is logged.
	JWKSURL string
	// JWKSRefresh is the period of the background refresh. Default 5m.
	JWKSRefresh time.Duration
	// JWKSMinInterval is the least time between a fetch and one triggered
	// by an unknown kid. Default 30s.
	JWKSMinInterval time.Duration
	// JWKSTimeout bounds one fetch. Default 5s.
	JWKSTimeout time.Duration
	// HTTPClient fetches the JWKS; default a client of its own.
	HTTPClient *http.Client

	// Audience, if set, must be one of a token's aud values.
	Audience string
	// Issuer, if set, must be a token's iss.
	Issuer string
	// MaxLifetime is the longest a token may be valid, at least 1s:
	// refused are tokens whose exp - iat exceeds it, or, without iat, whose
	// exp lies further than MaxLifetime (plus Leeway) ahead. iat is taken
	// as written. Default 24h.
	MaxLifetime time.Duration
	// Leeway is the clock skew tolerated on exp, nbf and the lifetime of
	// tokens without iat, in whole seconds, at most 5m. Default 0.
	Leeway time.Duration

	// Logger receives failed JWKS fetches (warn); default slog.Default().
	// Tokens are never logged.
	Logger *slog.Logger
}

// Limits on a JWKS response.
const (
	maxJWKSBytes = 1 << 20
	maxJWKSKeys  = 100
)

func (c Config) withDefaults() Config {
	if c.JWKSRefresh == 0 {
		c.JWKSRefresh = 5 * time.Minute
	}
	if c.JWKSMinInterval == 0 {
		c.JWKSMinInterval = 30 * time.Second
	}
	if c.JWKSTimeout == 0 {
		c.JWKSTimeout = 5 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.MaxLifetime == 0 {
		c.MaxLifetime = 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field. Messages never show secrets.
func (c Config) Validate() error {
	_, _, err := c.keys()
	return err
}

// keys validates c and returns its static keys by kid and the default key.
func (c Config) keys() (map[string]*vkey, *vkey, error) {
	c = c.withDefaults()
	switch {
	case len(c.Keys) == 0 && c.JWKSURL == "":
		return nil, nil, errors.New("token: Keys, JWKSURL: want at least one key or a JWKS URL")
	case c.JWKSRefresh < 0:
		return nil, nil, fmt.Errorf("token: JWKSRefresh %s: want > 0", c.JWKSRefresh)
	case c.JWKSMinInterval < 0:
		return nil, nil, fmt.Errorf("token: JWKSMinInterval %s: want > 0", c.JWKSMinInterval)
	case c.JWKSTimeout < 0:
		return nil, nil, fmt.Errorf("token: JWKSTimeout %s: want > 0", c.JWKSTimeout)
	case c.MaxLifetime < time.Second:
		return nil, nil, fmt.Errorf("token: MaxLifetime %s: want at least 1s", c.MaxLifetime)
	case c.Leeway < 0 || c.Leeway > 5*time.Minute:
		return nil, nil, fmt.Errorf("token: Leeway %s: want 0 to 5m", c.Leeway)
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, nil, errors.New("token: JWKSURL: want an http or https URL")
		}
	}
	keys := make(map[string]*vkey, len(c.Keys))
	var def *vkey
	for i, k := range c.Keys {
		vk, err := newVKey(k)
		if err != nil {
			return nil, nil, fmt.Errorf("token: Keys[%d]: %w", i, err)
		}
		if k.ID == "" {
			if def != nil {
				return nil, nil, fmt.Errorf("token: Keys[%d]: a second key without ID (only one can be the default)", i)
			}
			def = vk
			continue
		}
		if _, dup := keys[k.ID]; dup {
			return nil, nil, fmt.Errorf("token: Keys[%d]: ID %q given twice", i, k.ID)
		}
		keys[k.ID] = vk
	}
	return keys, def, nil
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	// Static after construction.
	audience, issuer string
	maxLife, leeway  int64 // seconds
	keys             map[string]*vkey
	def              *vkey
	jwks             *jwksSet // nil without JWKSURL
}

// NewVerifier returns a Verifier for cfg. With a JWKSURL it fetches the set
// once before returning, waiting at most JWKSTimeout (a failure is logged,
// not returned: the set is fetched again when a token needs it), and
// refreshes it in the background until Close.
func NewVerifier(cfg Config) (*Verifier, error) {
	keys, def, err := cfg.keys()
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	v := &Verifier{
		audience: cfg.Audience,
		issuer:   cfg.Issuer,
		maxLife:  int64(cfg.MaxLifetime / time.Second),
		leeway:   int64(cfg.Leeway / time.Second),
		keys:     keys,
		def:      def,
	}
	if cfg.JWKSURL != "" {
		v.jwks = newJWKSSet(cfg)
	}
	return v, nil
}

// Close stops the background JWKS refresh and waits for it to end. Verify
// keeps working afterwards with the keys it has. Close may be called more
// than once.
func (v *Verifier) Close() {
	if v.jwks != nil {
		v.jwks.close()
	}
}

// Verify checks token's signature and claims at time now and returns the
// claims. Every error wraps ErrBadToken, ErrExpired or ErrNotYetValid.
//
// A token is a compact JWS of at most 8 KiB in exactly three canonical
// base64url parts (no padding). Header and claims are JSON objects whose
// member names match exactly and appear once, with the types of the JWT
// specification (times as non-negative integers); crit is refused. The header's alg must be the one of the key its kid selects
// (the default key without kid), and game, role and exp must be present.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	if len(token) > maxTokenBytes {
		return Claims{}, badf("longer than %d bytes", maxTokenBytes)
	}
	tok := []byte(token)
	i := bytes.IndexByte(tok, '.')
	j := bytes.LastIndexByte(tok, '.')
	if i < 0 || j == i || bytes.IndexByte(tok[i+1:j], '.') >= 0 {
		return Claims{}, badf("want three dot-separated parts")
	}
	buf := make([]byte, 0, b64.DecodedLen(len(tok)))
	hb, err := decodePart(buf, tok[:i])
	if err != nil {
		return Claims{}, badf("header encoding")
	}
	h, err := parseHeader(hb)
	if err != nil {
		return Claims{}, err
	}
	k, err := v.key(h)
	if err != nil {
		return Claims{}, err
	}
	if k.alg != h.alg {
		return Claims{}, badf("algorithm %s does not match the key's %s", h.alg, k.alg)
	}
	sig, err := decodePart(hb[len(hb):], tok[j+1:])
	if err != nil {
		return Claims{}, badf("signature encoding")
	}
	if !k.verify(tok[:j], sig) {
		return Claims{}, badf("signature does not match")
	}
	pb, err := decodePart(sig[len(sig):], tok[i+1:j])
	if err != nil {
		return Claims{}, badf("claims encoding")
	}
	c, seen, err := parseClaims(pb)
	if err != nil {
		return Claims{}, err
	}
	if err := v.check(c, seen, now.Unix()); err != nil {
		return Claims{}, err
	}
	return c, nil
}

// key returns the key a header selects: by kid, or the default key.
func (v *Verifier) key(h header) (*vkey, error) {
	if !h.hasKid {
		if v.def == nil {
			return nil, badf("no kid, and no default key")
		}
		return v.def, nil
	}
	if k := v.keys[h.kid]; k != nil {
		return k, nil
	}
	if v.jwks != nil {
		if k := v.jwks.key(h.kid); k != nil {
			return k, nil
		}
	}
	return nil, badf("kid names no key")
}

// check applies the claim rules that need configuration or time.
func (v *Verifier) check(c Claims, seen int, now int64) error {
	if v.issuer != "" && c.Iss != v.issuer {
		return badf("issuer does not match")
	}
	if v.audience != "" && !slices.Contains(c.Aud, v.audience) {
		return badf("audience does not match")
	}
	if seen&cIat != 0 {
		if c.Exp-c.Iat > v.maxLife {
			return badf("lifetime exp - iat exceeds %ds", v.maxLife)
		}
	} else if c.Exp-now > v.maxLife+v.leeway {
		return badf("without iat, exp lies more than %ds ahead", v.maxLife)
	}
	if seen&cNbf != 0 && now < c.Nbf-v.leeway {
		return fmt.Errorf("%w: nbf is %ds ahead", ErrNotYetValid, c.Nbf-now)
	}
	if now >= c.Exp+v.leeway {
		return fmt.Errorf("%w: %ds ago", ErrExpired, now-c.Exp)
	}
	return nil
}
