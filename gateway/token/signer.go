package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
	"unicode/utf8"
)

// Signer mints tokens with one key. It is immutable and safe for
// concurrent use.
type Signer struct {
	// Static after construction.
	alg    alg
	header string // the encoded JOSE header and the dot after it
	secret []byte // HS256
	key    crypto.Signer
}

// NewHMACSigner returns an HS256 Signer. secret must have at least
// MinSecretBytes; kid, if not empty, is written into the header.
func NewHMACSigner(secret []byte, kid string) (*Signer, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("token: HS256 secret of %d bytes: want at least %d", len(secret), MinSecretBytes)
	}
	s := &Signer{alg: algHS256, secret: append([]byte(nil), secret...)}
	return s, s.setHeader(kid)
}

// NewSigner returns a Signer for a private key: ed25519.PrivateKey (EdDSA),
// *ecdsa.PrivateKey on P-256 (ES256), *rsa.PrivateKey of 2048 to 8192 bits
// (RS256), or any crypto.Signer with such a public key. kid, if not empty,
// is written into the header.
func NewSigner(key crypto.Signer, kid string) (*Signer, error) {
	if key == nil {
		return nil, errors.New("token: no key")
	}
	vk, err := publicVKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	s := &Signer{alg: vk.alg, key: key}
	return s, s.setHeader(kid)
}

func (s *Signer) setHeader(kid string) error {
	if !utf8.ValidString(kid) {
		return errors.New("token: kid is not valid UTF-8")
	}
	h := `{"alg":"` + s.alg.String() + `","typ":"JWT"}`
	if kid != "" {
		k, _ := json.Marshal(kid)
		h = `{"alg":"` + s.alg.String() + `","kid":` + string(k) + `,"typ":"JWT"}`
	}
	s.header = b64.EncodeToString([]byte(h)) + "."
	return nil
}

// mintClaims is the JSON form of Claims.
type mintClaims struct {
	Game string `json:"game"`
	Role string `json:"role"`
	Sub  string `json:"sub,omitempty"`
	Exp  int64  `json:"exp"`
	Iat  int64  `json:"iat,omitempty"`
	Nbf  int64  `json:"nbf,omitempty"`
	Iss  string `json:"iss,omitempty"`
	Aud  any    `json:"aud,omitempty"`
}

// Mint returns a token asserting c. Game, Role and Exp are required; Iat,
// when zero, becomes the current time.
func (s *Signer) Mint(c Claims) (string, error) {
	switch {
	case c.Game == "":
		return "", errors.New("token: Game is required")
	case c.Role != RolePlayer && c.Role != RoleSpectator:
		return "", fmt.Errorf("token: role %q: want player or spectator", c.Role)
	case c.Exp <= 0:
		return "", errors.New("token: Exp is required")
	case c.Iat < 0 || c.Nbf < 0:
		return "", errors.New("token: Iat and Nbf: want Unix seconds ≥ 0")
	}
	if c.Iat == 0 {
		c.Iat = time.Now().Unix()
	}
	mc := mintClaims{Game: c.Game, Role: c.Role, Sub: c.Sub, Exp: c.Exp, Iat: c.Iat, Nbf: c.Nbf, Iss: c.Iss}
	switch len(c.Aud) {
	case 0:
	case 1:
		mc.Aud = c.Aud[0]
	default:
		mc.Aud = c.Aud
	}
	payload, err := json.Marshal(mc)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	signing := s.header + b64.EncodeToString(payload)
	sig, err := s.sign([]byte(signing))
	if err != nil {
		return "", fmt.Errorf("token: signing: %w", err)
	}
	return signing + "." + b64.EncodeToString(sig), nil
}

func (s *Signer) sign(msg []byte) ([]byte, error) {
	switch s.alg {
	case algHS256:
		m := hmac.New(sha256.New, s.secret)
		m.Write(msg)
		return m.Sum(nil), nil
	case algEdDSA:
		return s.key.Sign(rand.Reader, msg, crypto.Hash(0))
	case algRS256:
		sum := sha256.Sum256(msg)
		return s.key.Sign(rand.Reader, sum[:], crypto.SHA256)
	case algES256:
		sum := sha256.Sum256(msg)
		der, err := s.key.Sign(rand.Reader, sum[:], crypto.SHA256)
		if err != nil {
			return nil, err
		}
		var rs struct{ R, S *big.Int }
		if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) > 0 {
			return nil, errors.New("ECDSA signature is not ASN.1")
		}
		sig := make([]byte, 64)
		rs.R.FillBytes(sig[:32])
		rs.S.FillBytes(sig[32:])
		return sig, nil
	}
	return nil, errors.New("no algorithm")
}

// ParsePrivateKeyPEM parses a signing key from PEM: a PKCS #8 "PRIVATE KEY"
// (Ed25519, ECDSA or RSA), a SEC 1 "EC PRIVATE KEY" or a PKCS #1 "RSA
// PRIVATE KEY" block. "EC PARAMETERS" blocks are skipped; encrypted keys
// are refused. NewSigner then checks the kind and size of the key.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		b, rest := pem.Decode(data)
		if b == nil {
			return nil, errors.New("token: no private key PEM block")
		}
		data = rest
		if _, enc := b.Headers["Proc-Type"]; enc {
			return nil, errors.New("token: encrypted PEM keys are not supported")
		}
		var key any
		var err error
		switch b.Type {
		case "EC PARAMETERS":
			continue
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			return nil, fmt.Errorf("token: PEM block %q: want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("token: %s: %w", b.Type, err)
		}
		switch k := key.(type) {
		case ed25519.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("token: private key of type %T: want Ed25519, ECDSA or RSA", key)
	}
}
