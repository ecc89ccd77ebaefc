package token_test

import (
	"crypto"
	"testing"

	"github.com/gamerelay/gamerelay/gateway/token"
)

// BenchmarkVerify: one join's token check, per algorithm.
func BenchmarkVerify(b *testing.B) {
	k := keys()
	v := newVerifier(b, token.Config{Keys: allKeys()})
	claims := token.Claims{Game: "castle-17", Role: token.RolePlayer, Sub: "ana", Exp: now.Unix() + 3600, Iat: now.Unix()}
	for _, bc := range []struct {
		name string
		key  crypto.Signer // nil: HS256
		kid  string
	}{
		{"HS256", nil, ""},
		{"EdDSA", k.ed, "ed"},
		{"ES256", k.ec, "es"},
		{"RS256", k.rsa, "rs"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := token.NewHMACSigner(secretDefault, bc.kid)
			if bc.key != nil {
				s, err = token.NewSigner(bc.key, bc.kid)
			}
			if err != nil {
				b.Fatal(err)
			}
			tok, err := s.Mint(claims)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(tok, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
