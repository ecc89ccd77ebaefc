package token_test

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
)

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8(t testing.TB, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PRIVATE KEY", der)
}

func sec1(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// As `openssl ecparam -genkey` writes it: parameters first.
	return append(pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}), pemBlock("EC PRIVATE KEY", der)...)
}

// TestMintVerify: tokens of every Signer verify with the matching Key, with
// the claims they were minted with.
func TestMintVerify(t *testing.T) {
	k := keys()
	parse := func(pemData []byte) crypto.Signer {
		key, err := token.ParsePrivateKeyPEM(pemData)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	sign := func(key crypto.Signer, kid string) *token.Signer {
		s, err := token.NewSigner(key, kid)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hmacSigner := func(secret []byte, kid string) *token.Signer {
		s, err := token.NewHMACSigner(secret, kid)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	v := newVerifier(t, token.Config{Keys: append(allKeys(), token.Key{ID: `k"\u00e9`, Secret: secretOld}), MaxLifetime: 48 * time.Hour})
	claims := token.Claims{Game: "g1", Role: token.RoleSpectator, Sub: "ana", Exp: now.Unix() + 3600, Iat: now.Unix() - 60, Nbf: now.Unix() - 60, Iss: "studio", Aud: []string{"castle"}}
	for name, tc := range map[string]struct {
		s *token.Signer
		c token.Claims
	}{
		"HS256 default":       {hmacSigner(secretDefault, ""), claims},
		"HS256 kid":           {hmacSigner(secretNew, "hs-new"), claims},
		"HS256 odd kid":       {hmacSigner(secretOld, `k"\u00e9`), claims},
		"EdDSA PKCS#8":        {sign(parse(pkcs8(t, k.ed)), "ed"), claims},
		"ES256 PKCS#8":        {sign(parse(pkcs8(t, k.ec)), "es"), claims},
		"ES256 SEC1":          {sign(parse(sec1(t, k.ec)), "es"), claims},
		"RS256 PKCS#8":        {sign(parse(pkcs8(t, k.rsa)), "rs"), claims},
		"RS256 PKCS#1":        {sign(parse(pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k.rsa))), "rs"), claims},
		"EdDSA crypto.Signer": {sign(k.ed, "ed"), claims},
		"two audiences":       {hmacSigner(secretDefault, ""), token.Claims{Game: "g1", Role: token.RolePlayer, Exp: now.Unix() + 60, Iat: now.Unix(), Aud: []string{"a", "b"}}},
		"awkward strings":     {hmacSigner(secretDefault, ""), token.Claims{Game: "g<1>&", Role: token.RolePlayer, Sub: "\u2028\"\\é\x00", Exp: now.Unix() + 60, Iat: now.Unix()}},
		"minimal":             {hmacSigner(secretDefault, ""), token.Claims{Game: "g1", Role: token.RolePlayer, Exp: now.Unix() + 60, Iat: now.Unix()}},
	} {
		t.Run(name, func(t *testing.T) {
			for range 3 { // ECDSA signatures differ each time
				tok, err := tc.s.Mint(tc.c)
				if err != nil {
					t.Fatal(err)
				}
				got, err := v.Verify(tok, now)
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !reflect.DeepEqual(got, tc.c) {
					t.Fatalf("claims %+v, want %+v", got, tc.c)
				}
			}
		})
	}
}

// TestMintFormat: an HS256 token without kid is what the gateway has always
// minted and accepted: the same header and claim order. Iat defaults to now.
func TestMintFormat(t *testing.T) {
	s, err := token.NewHMACSigner(secretDefault, "")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Unix()
	tok, err := s.Mint(token.Claims{Game: "g1", Role: token.RolePlayer, Sub: "ana", Exp: before + 60})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	c, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if string(h) != `{"alg":"HS256","typ":"JWT"}` {
		t.Fatalf("header %s", h)
	}
	cl, err := newVerifier(t, token.Config{Keys: []token.Key{{Secret: secretDefault}}}).Verify(tok, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if cl.Iat < before || cl.Iat > time.Now().Unix() {
		t.Fatalf("iat %d, want now", cl.Iat)
	}
	want := `{"game":"g1","role":"player","sub":"ana","exp":` + itoa(before+60) + `,"iat":` + itoa(cl.Iat) + `}`
	if string(c) != want {
		t.Fatalf("claims %s, want %s", c, want)
	}
	ks, err := token.NewHMACSigner(secretDefault, "2026-01")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ = ks.Mint(token.Claims{Game: "g1", Role: token.RolePlayer, Exp: before + 60})
	if h, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0]); string(h) != `{"alg":"HS256","kid":"2026-01","typ":"JWT"}` {
		t.Fatalf("header %s", h)
	}
}

func itoa(n int64) string { return big.NewInt(n).String() }

// TestSignerRefuses: keys and claims a Signer will not sign with.
func TestSignerRefuses(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	hmacS, _ := token.NewHMACSigner(secretDefault, "")
	for name, f := range map[string]func() error{
		"HS256 secret of 31 bytes": func() error { _, err := token.NewHMACSigner(secretDefault[:31], ""); return err },
		"no HS256 secret":          func() error { _, err := token.NewHMACSigner(nil, ""); return err },
		"ECDSA P-384":              func() error { _, err := token.NewSigner(p384, ""); return err },
		"RSA 1024":                 func() error { _, err := token.NewSigner(rsa1024, ""); return err },
		"no key":                   func() error { _, err := token.NewSigner(nil, ""); return err },
		"kid not UTF-8":            func() error { _, err := token.NewHMACSigner(secretDefault, "\xff"); return err },
		"no game":                  func() error { _, err := hmacS.Mint(token.Claims{Role: token.RolePlayer, Exp: 1}); return err },
		"role king":                func() error { _, err := hmacS.Mint(token.Claims{Game: "g", Role: "king", Exp: 1}); return err },
		"no exp":                   func() error { _, err := hmacS.Mint(token.Claims{Game: "g", Role: token.RolePlayer}); return err },
		"negative nbf": func() error {
			_, err := hmacS.Mint(token.Claims{Game: "g", Role: token.RolePlayer, Exp: 1, Nbf: -1})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := f()
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), string(secretDefault[:16])) {
				t.Fatalf("error %q shows the secret", err)
			}
		})
	}
}

// TestParsePEM: the PEM forms keys are read from.
func TestParsePEM(t *testing.T) {
	k := keys()
	x25519, _ := ecdh.X25519().GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tokens"}, NotBefore: now, NotAfter: now.Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.ec.Public(), k.ec)
	if err != nil {
		t.Fatal(err)
	}
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})

	for name, tc := range map[string]struct {
		data    []byte
		public  bool // ParsePublicKeyPEM, else ParsePrivateKeyPEM
		wantErr bool
	}{
		"PKCS#8 Ed25519":           {pkcs8(t, k.ed), false, false},
		"PKCS#8 ECDSA":             {pkcs8(t, k.ec), false, false},
		"PKCS#8 RSA":               {pkcs8(t, k.rsa), false, false},
		"SEC1 after EC PARAMETERS": {sec1(t, k.ec), false, false},
		"PKCS#1":                   {pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k.rsa)), false, false},
		"PKCS#8 X25519":            {pkcs8(t, x25519), false, true},
		"encrypted":                {encrypted, false, true},
		"public key as private":    {publicPEM(t, k.ed.Public()), false, true},
		"private not PEM":          {[]byte("-----BEGIN"), false, true},
		"PKCS#8 garbage":           {pemBlock("PRIVATE KEY", []byte{1, 2, 3}), false, true},
		"PUBLIC KEY Ed25519":       {publicPEM(t, k.ed.Public()), true, false},
		"PUBLIC KEY ECDSA":         {publicPEM(t, k.ec.Public()), true, false},
		"PUBLIC KEY RSA":           {publicPEM(t, k.rsa.Public()), true, false},
		"CERTIFICATE":              {pemBlock("CERTIFICATE", cert), true, false},
		"PUBLIC KEY P-384":         {publicPEM(t, p384.Public()), true, true},
		"PUBLIC KEY RSA 1024":      {publicPEM(t, rsa1024.Public()), true, true},
		"RSA PUBLIC KEY":           {pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)), true, true},
		"private key as public":    {pkcs8(t, k.ed), true, true},
		"public not PEM":           {[]byte("ssh-ed25519 AAAA"), true, true},
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			if tc.public {
				var pub crypto.PublicKey
				if pub, err = token.ParsePublicKeyPEM(tc.data); err == nil {
					_, err = token.NewVerifier(token.Config{Keys: []token.Key{{Public: pub}}})
				}
			} else {
				var key crypto.Signer
				if key, err = token.ParsePrivateKeyPEM(tc.data); err == nil {
					_, err = token.NewSigner(key, "")
				}
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// TestConfigValidate: the zero Config and every invalid field are refused
// with the field's name, and no secret is shown.
func TestConfigValidate(t *testing.T) {
	k := keys()
	for name, tc := range map[string]struct {
		cfg  token.Config
		want string
	}{
		"zero value":               {token.Config{}, "Keys, JWKSURL"},
		"HS256 secret of 31 bytes": {token.Config{Keys: []token.Key{{Secret: secretDefault[:31]}}}, "Keys[0]"},
		"empty key":                {token.Config{Keys: []token.Key{{ID: "a"}}}, "Keys[0]"},
		"secret and public":        {token.Config{Keys: []token.Key{{Secret: secretDefault, Public: k.ed.Public()}}}, "Keys[0]"},
		"private key as public":    {token.Config{Keys: []token.Key{{Public: k.ed}}}, "Keys[0]"},
		"two default keys":         {token.Config{Keys: []token.Key{{Secret: secretDefault}, {Public: k.ed.Public()}}}, "Keys[1]"},
		"kid twice":                {token.Config{Keys: []token.Key{{ID: "a", Secret: secretDefault}, {ID: "a", Secret: secretNew}}}, "Keys[1]"},
		"JWKS URL not http":        {token.Config{JWKSURL: "file:///etc/jwks.json"}, "JWKSURL"},
		"JWKS URL without host":    {token.Config{JWKSURL: "https://"}, "JWKSURL"},
		"negative refresh":         {token.Config{JWKSURL: "https://idp.example/jwks", JWKSRefresh: -time.Second}, "JWKSRefresh"},
		"negative min interval":    {token.Config{JWKSURL: "https://idp.example/jwks", JWKSMinInterval: -time.Second}, "JWKSMinInterval"},
		"negative timeout":         {token.Config{JWKSURL: "https://idp.example/jwks", JWKSTimeout: -time.Second}, "JWKSTimeout"},
		"MaxLifetime below 1s":     {token.Config{Keys: allKeys(), MaxLifetime: time.Millisecond}, "MaxLifetime"},
		"negative Leeway":          {token.Config{Keys: allKeys(), Leeway: -time.Second}, "Leeway"},
		"Leeway above 5m":          {token.Config{Keys: allKeys(), Leeway: 6 * time.Minute}, "Leeway"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
			if _, err2 := token.NewVerifier(tc.cfg); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("NewVerifier: %v, want %v", err2, err)
			}
			if strings.Contains(err.Error(), string(secretDefault[:16])) {
				t.Fatalf("error %q shows a secret", err)
			}
		})
	}
	if err := (token.Config{Keys: allKeys()}).Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}
