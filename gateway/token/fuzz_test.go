package token_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
)

// FuzzVerify verifies a raw token, and a token made of raw header and
// claims bytes signed with the default key (to reach the JSON parsers).
// Whatever the input: no panic; a refusal wraps exactly one sentinel and
// does not show the token; an accepted token has three canonical parts, a
// genuine signature, claims that encoding/json reads the same (it keeps
// map keys as written), and passes every claim rule.
func FuzzVerify(f *testing.F) {
	f.Add(forge(hHS, cValid, hs(secretDefault)), []byte(hHS), []byte(cValid))
	f.Add(forge(hKid("HS256", "k"), cValid, hs(secretNew)), []byte(`{"alg":"HS256","ALG":"none"}`), []byte(`{"game":"g","ROLE":"player","role":"spectator","exp":1800000001}`))
	f.Add("e30.e30.", []byte(`{"alg":"HS256","crit":[]}`), []byte(`{"game":"g","role":"player","exp":1800000001,"aud":["a","b"],"nbf":1799999999}`))
	f.Add("..", []byte(`{"\u0061lg":"HS256"}`), []byte(`{"game":"g","role":"player","exp":1800000001,"role":"player"}`))

	v, err := token.NewVerifier(token.Config{Keys: []token.Key{{Secret: secretDefault}, {ID: "k", Secret: secretNew}}, Audience: "", Leeway: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(v.Close)
	f.Fuzz(func(t *testing.T, tok string, header, claims []byte) {
		checkVerify(t, v, tok)
		s := enc(header) + "." + enc(claims)
		checkVerify(t, v, s+"."+enc(hs(secretDefault)([]byte(s))))
	})
}

func checkVerify(t *testing.T, v *token.Verifier, tok string) {
	c, err := v.Verify(tok, now)
	if err != nil {
		n := 0
		for _, s := range []error{token.ErrBadToken, token.ErrExpired, token.ErrNotYetValid} {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %v wraps %d sentinels", err, n)
		}
		for _, p := range strings.Split(tok, ".") {
			if len(p) >= 24 && strings.Contains(err.Error(), p) {
				t.Fatalf("error %q shows the token", err)
			}
		}
		return
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("accepted %d parts", len(parts))
	}
	var dec [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil || base64.RawURLEncoding.EncodeToString(b) != p {
			t.Fatalf("accepted part %d %q, not canonical base64url", i, p)
		}
		dec[i] = b
	}
	signing := []byte(parts[0] + "." + parts[1])
	if !bytes.Equal(dec[2], hs(secretDefault)(signing)) && !bytes.Equal(dec[2], hs(secretNew)(signing)) {
		t.Fatal("accepted a signature of neither key")
	}
	var h, m map[string]any
	if json.Unmarshal(dec[0], &h) != nil || json.Unmarshal(dec[1], &m) != nil {
		t.Fatalf("accepted header %q claims %q that encoding/json refuses", dec[0], dec[1])
	}
	if h["alg"] != "HS256" {
		t.Fatalf("accepted alg %v", h["alg"])
	}
	num := func(k string) int64 {
		f, _ := m[k].(float64)
		return int64(f)
	}
	str := func(k string) string {
		s, _ := m[k].(string)
		return s
	}
	if c.Game != str("game") || c.Game == "" || c.Role != str("role") || c.Sub != str("sub") || c.Iss != str("iss") ||
		c.Exp != num("exp") || c.Iat != num("iat") || c.Nbf != num("nbf") {
		t.Fatalf("claims %+v, encoding/json reads %v", c, m)
	}
	if c.Role != token.RolePlayer && c.Role != token.RoleSpectator {
		t.Fatalf("accepted role %q", c.Role)
	}
	n := now.Unix()
	if c.Exp+1 <= n || c.Nbf-1 > n {
		t.Fatalf("accepted exp %d nbf %d at %d", c.Exp, c.Nbf, n)
	}
	if _, ok := m["iat"]; ok && c.Exp-c.Iat > 24*3600 || !ok && c.Exp-n > 24*3600+1 {
		t.Fatalf("accepted lifetime: exp %d iat %d at %d", c.Exp, c.Iat, n)
	}
}
