package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Roles a token can grant.
const (
	RolePlayer    = "player"
	RoleSpectator = "spectator"
)

// Claims are what a gamerelay token asserts.
type Claims struct {
	Game string `json:"game"`
	Role string `json:"role"`
	Sub  string `json:"sub,omitempty"`
	Exp  int64  `json:"exp"`
	Iat  int64  `json:"iat,omitempty"`
}

// Token errors; the gateway answers them with bad_token or token_expired.
var (
	ErrBadToken     = errors.New("gateway: bad token")
	ErrTokenExpired = errors.New("gateway: token expired")
)

var b64 = base64.RawURLEncoding

// jwtHeader is the only header gamerelay mints and accepts.
const jwtHeader = `{"alg":"HS256","typ":"JWT"}`

// MintToken returns an HS256 JWT for c signed with secret.
func MintToken(secret []byte, c Claims) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("gateway: no token secret configured")
	}
	if c.Role != RolePlayer && c.Role != RoleSpectator {
		return "", fmt.Errorf("gateway: role %q: want player or spectator", c.Role)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := b64.EncodeToString([]byte(jwtHeader)) + "." + b64.EncodeToString(payload)
	return signing + "." + b64.EncodeToString(sign(secret, signing)), nil
}

func sign(secret []byte, s string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// VerifyToken checks an HS256 JWT's signature and expiry and returns its
// claims. Any other algorithm, including "none", is refused.
func VerifyToken(secret []byte, token string, now time.Time) (Claims, error) {
	var c Claims
	if len(secret) == 0 {
		return c, fmt.Errorf("%w: tokens are not enabled on this gateway", ErrBadToken)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("%w: not a JWT", ErrBadToken)
	}
	hb, err := b64.DecodeString(parts[0])
	if err != nil {
		return c, fmt.Errorf("%w: header encoding", ErrBadToken)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &h); err != nil || h.Alg != "HS256" {
		return c, fmt.Errorf("%w: algorithm must be HS256", ErrBadToken)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, sign(secret, parts[0]+"."+parts[1])) {
		return c, fmt.Errorf("%w: signature does not match", ErrBadToken)
	}
	pb, err := b64.DecodeString(parts[1])
	if err != nil {
		return c, fmt.Errorf("%w: payload encoding", ErrBadToken)
	}
	if err := json.Unmarshal(pb, &c); err != nil {
		return c, fmt.Errorf("%w: payload", ErrBadToken)
	}
	if c.Role != RolePlayer && c.Role != RoleSpectator {
		return c, fmt.Errorf("%w: role %q", ErrBadToken, c.Role)
	}
	if c.Game == "" {
		return c, fmt.Errorf("%w: no game claim", ErrBadToken)
	}
	if c.Exp == 0 {
		return c, fmt.Errorf("%w: no exp claim", ErrBadToken)
	}
	if now.Unix() >= c.Exp {
		return c, ErrTokenExpired
	}
	return c, nil
}
