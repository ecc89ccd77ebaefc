package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Key is one verification key. Set exactly one of Secret and Public; the
// key's type decides the one algorithm it verifies, whatever a token's
// header claims.
type Key struct {
	// ID is the kid that selects the key. The one key without ID is the
	// default, used for tokens that carry no kid; a token whose kid names
	// no key is refused.
	ID string
	// Secret is an HS256 secret of at least 32 bytes (RFC 7518 §3.2).
	Secret []byte
	// Public is an ed25519.PublicKey (EdDSA), an *ecdsa.PublicKey on P-256
	// (ES256) or an *rsa.PublicKey of 2048 to 8192 bits (RS256), as
	// ParsePublicKeyPEM returns them.
	Public crypto.PublicKey
}

// MinSecretBytes is the shortest HS256 secret accepted (RFC 7518 §3.2: a
// key of at least the hash's size).
const MinSecretBytes = 32

// RSA moduli accepted, in bits.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// vkey is a verification key bound to its algorithm.
type vkey struct {
	alg  alg
	hmac *hmacKey
	ed   ed25519.PublicKey
	ec   *ecdsa.PublicKey
	rsa  *rsa.PublicKey
}

// newVKey checks a configured key.
func newVKey(k Key) (*vkey, error) {
	switch {
	case k.Secret != nil && k.Public != nil:
		return nil, errors.New("set Secret or Public, not both")
	case k.Secret != nil:
		if len(k.Secret) < MinSecretBytes {
			return nil, fmt.Errorf("HS256 secret of %d bytes: want at least %d", len(k.Secret), MinSecretBytes)
		}
		return &vkey{alg: algHS256, hmac: newHMACKey(k.Secret)}, nil
	case k.Public != nil:
		return publicVKey(k.Public)
	}
	return nil, errors.New("no Secret and no Public")
}

// publicVKey checks a public key and binds it to its algorithm.
func publicVKey(pub crypto.PublicKey) (*vkey, error) {
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("Ed25519 public key of %d bytes", len(pub))
		}
		return &vkey{alg: algEdDSA, ed: pub}, nil
	case *ecdsa.PublicKey:
		if pub == nil || pub.Curve != elliptic.P256() {
			return nil, errors.New("ECDSA key: want the P-256 curve (ES256)")
		}
		return &vkey{alg: algES256, ec: pub}, nil
	case *rsa.PublicKey:
		if err := checkRSA(pub); err != nil {
			return nil, err
		}
		return &vkey{alg: algRS256, rsa: pub}, nil
	}
	return nil, fmt.Errorf("public key of type %T: want Ed25519, ECDSA P-256 or RSA", pub)
}

func checkRSA(pub *rsa.PublicKey) error {
	if pub == nil || pub.N == nil {
		return errors.New("RSA key: no modulus")
	}
	if n := pub.N.BitLen(); n < minRSABits || n > maxRSABits {
		return fmt.Errorf("RSA key of %d bits: want %d to %d", n, minRSABits, maxRSABits)
	}
	if pub.E < 3 || pub.E%2 == 0 || pub.E > 1<<31-1 {
		return errors.New("RSA key: bad public exponent")
	}
	return nil
}

// verify reports whether sig is k's signature of msg.
func (k *vkey) verify(msg, sig []byte) bool {
	switch k.alg {
	case algHS256:
		return k.hmac.verify(msg, sig)
	case algEdDSA:
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(k.ed, msg, sig)
	case algES256:
		if len(sig) != 64 {
			return false
		}
		sum := sha256.Sum256(msg)
		var der [72]byte
		return ecdsa.VerifyASN1(k.ec, sum[:], rawToDER(der[:0], sig))
	case algRS256:
		sum := sha256.Sum256(msg)
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, sum[:], sig) == nil
	}
	return false
}

// rawToDER appends the ASN.1 DER form of a JWS ECDSA signature (r and s,
// 32 bytes each, big-endian) to dst: SEQUENCE { INTEGER r, INTEGER s }.
func rawToDER(dst, sig []byte) []byte {
	r, s := derInt(sig[:32]), derInt(sig[32:])
	dst = append(dst, 0x30, byte(len(r)+len(s)+4))
	dst = append(append(dst, 0x02, byte(len(r))), r...)
	dst = append(append(dst, 0x02, byte(len(s))), s...)
	return dst
}

// derInt returns the content bytes of a DER INTEGER holding the unsigned
// big-endian b: no leading zeros, except one before a set high bit. It may
// return a slice of b or of a fresh array.
func derInt(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	if b[0]&0x80 == 0 {
		return b
	}
	return append([]byte{0}, b...)
}

// hmacKey verifies HS256 with pooled HMAC states.
type hmacKey struct {
	secret []byte
	pool   sync.Pool // of *hmacState
}

type hmacState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

func newHMACKey(secret []byte) *hmacKey {
	k := &hmacKey{secret: append([]byte(nil), secret...)}
	k.pool.New = func() any { return &hmacState{h: hmac.New(sha256.New, k.secret)} }
	return k
}

func (k *hmacKey) verify(msg, sig []byte) bool {
	if len(sig) != sha256.Size {
		return false
	}
	st := k.pool.Get().(*hmacState)
	defer k.pool.Put(st)
	st.h.Reset()
	st.h.Write(msg)
	return hmac.Equal(st.h.Sum(st.sum[:0]), sig)
}

// ParsePublicKeyPEM parses a verification key from PEM: the first block
// must be a PKIX "PUBLIC KEY" or a "CERTIFICATE" (whose key is used; its
// validity period and issuer are not checked). It returns the key as Key
// wants it: ed25519.PublicKey, *ecdsa.PublicKey (P-256) or *rsa.PublicKey.
func ParsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("token: no PEM block")
	}
	var pub crypto.PublicKey
	switch b.Type {
	case "PUBLIC KEY":
		var err error
		if pub, err = x509.ParsePKIXPublicKey(b.Bytes); err != nil {
			return nil, fmt.Errorf("token: PUBLIC KEY: %w", err)
		}
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("token: CERTIFICATE: %w", err)
		}
		pub = cert.PublicKey
	default:
		return nil, fmt.Errorf("token: PEM block %q: want PUBLIC KEY or CERTIFICATE", b.Type)
	}
	if _, err := publicVKey(pub); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return pub, nil
}
