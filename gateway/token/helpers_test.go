package token_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"sync"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
)

// now is the verification time of the table tests: Unix 1,800,000,000.
var now = time.Unix(1_800_000_000, 0)

// Test secrets, all at least 32 bytes.
var (
	secretDefault = []byte("token-test-default-secret-0123456789")
	secretOld     = []byte("token-test-rotated-out-secret-0123456789")
	secretNew     = []byte("token-test-rotated-in-secret-0123456789")
)

// testKeys are private keys of every kind, generated once per test binary.
type testKeys struct {
	ed  ed25519.PrivateKey
	ec  *ecdsa.PrivateKey
	rsa *rsa.PrivateKey
}

var keys = sync.OnceValue(func() testKeys {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return testKeys{ed: ed, ec: ec, rsa: rk}
})

// allKeys is a key ring with one key of every kind: a default HS256 key,
// two HS256 keys of a rotation, and public keys by kid.
func allKeys() []token.Key {
	k := keys()
	return []token.Key{
		{Secret: secretDefault},
		{ID: "hs-old", Secret: secretOld},
		{ID: "hs-new", Secret: secretNew},
		{ID: "ed", Public: k.ed.Public()},
		{ID: "es", Public: k.ec.Public()},
		{ID: "rs", Public: k.rsa.Public()},
	}
}

func newVerifier(t testing.TB, cfg token.Config) *token.Verifier {
	t.Helper()
	v, err := token.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// forge builds a token from raw header and claims JSON, signing it with
// sign; it checks nothing, so tests can build any token.
func forge(header, claims string, sign func(msg []byte) []byte) string {
	s := enc([]byte(header)) + "." + enc([]byte(claims))
	return s + "." + enc(sign([]byte(s)))
}

func hs(secret []byte) func([]byte) []byte {
	return func(msg []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(msg)
		return m.Sum(nil)
	}
}

func edSign(msg []byte) []byte { return ed25519.Sign(keys().ed, msg) }

func esSign(msg []byte) []byte {
	sum := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, keys().ec, sum[:])
	if err != nil {
		panic(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig
}

// esSignDER signs ES256 in ASN.1 DER, the form JWS does not use.
func esSignDER(msg []byte) []byte {
	sum := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, keys().ec, sum[:])
	if err != nil {
		panic(err)
	}
	return sig
}

func rsSign(msg []byte) []byte {
	sum := sha256.Sum256(msg)
	sig, err := rsa.SignPKCS1v15(nil, keys().rsa, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	return sig
}

func none([]byte) []byte { return nil }

// publicPEM is the PKIX PEM form of a public key.
func publicPEM(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
