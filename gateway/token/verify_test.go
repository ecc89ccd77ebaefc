package token_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
)

// Headers and claims of the table; now is 1,800,000,000.
const (
	hHS = `{"alg":"HS256","typ":"JWT"}`
	// valid claims: an hour left, issued 1000 s ago.
	cValid = `{"game":"g1","role":"player","sub":"ana","exp":1800003600,"iat":1799999000}`
)

func hKid(alg, kid string) string { return `{"alg":"` + alg + `","kid":"` + kid + `","typ":"JWT"}` }

// TestVerify: one case per rule. Cases marked "accepted by HS256-only
// code" are tokens that a verifier decoding with encoding/json, ignoring
// kid, nbf, aud, iss and lifetime, and the base64 decoder's leniency would
// let in.
func TestVerify(t *testing.T) {
	rsaPEM := publicPEM(t, keys().rsa.Public())
	valid := forge(hHS, cValid, hs(secretDefault))
	validParts := strings.Split(valid, ".")
	// sigWith returns a valid token whose signature's encoding holds one
	// of chars, by varying sub.
	sigWith := func(chars string) string {
		for i := range 1000 {
			tok := forge(hHS, `{"game":"g1","role":"player","sub":"u`+strings.Repeat("x", i)+`","exp":1800003600,"iat":1799999000}`, hs(secretDefault))
			if strings.ContainsAny(tok[strings.LastIndexByte(tok, '.'):], chars) {
				return tok
			}
		}
		t.Fatal("no signature with " + chars)
		return ""
	}

	base := token.Config{Keys: allKeys()}
	audIss := token.Config{Keys: allKeys(), Audience: "castle", Issuer: "https://studio.example"}
	leeway := token.Config{Keys: allKeys(), Leeway: time.Minute}
	hour := token.Config{Keys: allKeys(), MaxLifetime: time.Hour}
	rsaDefault := token.Config{Keys: []token.Key{{Public: keys().rsa.Public()}}}

	for name, tc := range map[string]struct {
		cfg  token.Config
		tok  string
		want error // nil: accepted
	}{
		// Algorithms and keys.
		"HS256 default key":            {base, valid, nil},
		"EdDSA by kid":                 {base, forge(hKid("EdDSA", "ed"), cValid, edSign), nil},
		"ES256 by kid":                 {base, forge(hKid("ES256", "es"), cValid, esSign), nil},
		"RS256 by kid":                 {base, forge(hKid("RS256", "rs"), cValid, rsSign), nil},
		"rotation: old kid":            {base, forge(hKid("HS256", "hs-old"), cValid, hs(secretOld)), nil},
		"rotation: new kid":            {base, forge(hKid("HS256", "hs-new"), cValid, hs(secretNew)), nil},
		"kid of another key":           {base, forge(hKid("HS256", "hs-new"), cValid, hs(secretOld)), token.ErrBadToken},       // accepted by HS256-only code
		"unknown kid, no fallback":     {base, forge(hKid("HS256", "nope"), cValid, hs(secretDefault)), token.ErrBadToken},     // accepted by HS256-only code
		"empty kid":                    {base, forge(hKid("HS256", ""), cValid, hs(secretDefault)), token.ErrBadToken},         // accepted by HS256-only code
		"kid not a string":             {base, forge(`{"alg":"HS256","kid":7}`, cValid, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"no kid, no default key":       {rsaDefault, forge(hHS, cValid, hs(secretDefault)), token.ErrBadToken},                 // accepted by HS256-only code
		"alg none":                     {base, forge(`{"alg":"none","typ":"JWT"}`, cValid, none), token.ErrBadToken},
		"alg in lower case":            {base, forge(`{"alg":"hs256","typ":"JWT"}`, cValid, hs(secretDefault)), token.ErrBadToken},
		"alg HS512":                    {base, forge(`{"alg":"HS512","typ":"JWT"}`, cValid, hs(secretDefault)), token.ErrBadToken},
		"HS256 with RSA PEM as secret": {base, forge(hKid("HS256", "rs"), cValid, hs(rsaPEM)), token.ErrBadToken}, // accepted by HS256-only code
		"HS256 on default RSA key":     {rsaDefault, forge(hHS, cValid, hs(rsaPEM)), token.ErrBadToken},           // accepted by HS256-only code
		"ES256 header on HS256 key":    {base, forge(hKid("ES256", "hs-new"), cValid, esSign), token.ErrBadToken},
		"EdDSA signature, RS256 kid":   {base, forge(hKid("EdDSA", "rs"), cValid, edSign), token.ErrBadToken},
		"RS256 header on EdDSA key":    {base, forge(hKid("RS256", "ed"), cValid, rsSign), token.ErrBadToken},
		"ES256 signature in DER":       {base, forge(hKid("ES256", "es"), cValid, esSignDER), token.ErrBadToken},
		"signature of other claims":    {base, validParts[0] + "." + enc([]byte(`{"game":"g2","role":"player","exp":1800003600}`)) + "." + validParts[2], token.ErrBadToken},
		"empty signature":              {base, validParts[0] + "." + validParts[1] + ".", token.ErrBadToken},

		// Header parsing.
		"header ALG":                 {base, forge(`{"ALG":"HS256","typ":"JWT"}`, cValid, hs(secretDefault)), token.ErrBadToken},   // accepted by HS256-only code
		"header Alg beside alg":      {base, forge(`{"Alg":"none","alg":"HS256"}`, cValid, hs(secretDefault)), nil},                // an unknown member, ignored
		"duplicate alg":              {base, forge(`{"alg":"HS256","alg":"HS256"}`, cValid, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"duplicate alg, none first":  {base, forge(`{"alg":"none","alg":"HS256"}`, cValid, hs(secretDefault)), token.ErrBadToken},  // accepted by HS256-only code
		"duplicate alg, escaped":     {base, forge(`{"alg":"HS256","\u0061lg":"none"}`, cValid, hs(secretDefault)), token.ErrBadToken},
		"duplicate unknown header":   {base, forge(`{"alg":"HS256","x":1,"x":2}`, cValid, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"escaped header name":        {base, forge(`{"\u0061lg":"HS256"}`, cValid, hs(secretDefault)), nil},
		"crit header":                {base, forge(`{"alg":"HS256","crit":["exp"]}`, cValid, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"typ not a string":           {base, forge(`{"alg":"HS256","typ":1}`, cValid, hs(secretDefault)), token.ErrBadToken},        // accepted by HS256-only code
		"jku ignored":                {base, forge(`{"alg":"HS256","jku":"https://evil.example/jwks"}`, cValid, hs(secretDefault)), nil},
		"header not an object":       {base, forge(`["HS256"]`, cValid, hs(secretDefault)), token.ErrBadToken},
		"header with trailing data":  {base, forge(hHS+`x`, cValid, hs(secretDefault)), token.ErrBadToken},
		"header alg null":            {base, forge(`{"alg":null}`, cValid, hs(secretDefault)), token.ErrBadToken},
		"header with invalid UTF-8":  {base, forge(`{"alg":"HS256","x":"`+"\xff"+`"}`, cValid, hs(secretDefault)), token.ErrBadToken},                             // accepted by HS256-only code
		"claims ROLE only":           {base, forge(hHS, `{"game":"g1","ROLE":"player","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"claims GAME":                {base, forge(hHS, `{"GAME":"g1","role":"player","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"claims Exp":                 {base, forge(hHS, `{"game":"g1","role":"player","Exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"claims Sub beside sub":      {base, forge(hHS, `{"game":"g1","role":"player","sub":"ana","Sub":"bo","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), nil},
		"duplicate role":             {base, forge(hHS, `{"game":"g1","role":"spectator","role":"player","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},      // accepted by HS256-only code
		"duplicate role, escaped":    {base, forge(hHS, `{"game":"g1","role":"player","\u0072ole":"spectator","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"duplicate exp":              {base, forge(hHS, `{"game":"g1","role":"player","exp":1,"exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},                 // accepted by HS256-only code
		"duplicate unknown claim":    {base, forge(hHS, `{"game":"g1","role":"player","jti":"a","jti":"b","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},     // accepted by HS256-only code
		"unknown claims ignored":     {base, forge(hHS, `{"game":"g1","role":"player","jti":"a","scope":["x"],"exp":1800003600,"iat":1799999000}`, hs(secretDefault)), nil},
		"sub null":                   {base, forge(hHS, `{"game":"g1","role":"player","sub":null,"exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"game null":                  {base, forge(hHS, `{"game":null,"role":"player","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"sub a number":               {base, forge(hHS, `{"game":"g1","role":"player","sub":7,"exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"exp a string":               {base, forge(hHS, `{"game":"g1","role":"player","exp":"1800003600","iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"exp with fraction":          {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600.5,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"exp with exponent":          {base, forge(hHS, `{"game":"g1","role":"player","exp":18000036e2,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"iat negative":               {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":-1}`, hs(secretDefault)), token.ErrBadToken},                          // accepted by HS256-only code
		"nbf a boolean":              {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"nbf":true}`, hs(secretDefault)), token.ErrBadToken},       // accepted by HS256-only code
		"aud a number":               {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":1}`, hs(secretDefault)), token.ErrBadToken},          // accepted by HS256-only code
		"aud array with null":        {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":["a",null]}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"iss an array":               {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"iss":["a"]}`, hs(secretDefault)), token.ErrBadToken},      // accepted by HS256-only code
		"role Player":                {base, forge(hHS, `{"game":"g1","role":"Player","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"no game":                    {base, forge(hHS, `{"role":"player","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"empty game":                 {base, forge(hHS, `{"game":"","role":"player","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"no role":                    {base, forge(hHS, `{"game":"g1","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"no exp":                     {base, forge(hHS, `{"game":"g1","role":"player","iat":1799999000}`, hs(secretDefault)), token.ErrBadToken},
		"claims not an object":       {base, forge(hHS, `["g1"]`, hs(secretDefault)), token.ErrBadToken},
		"claims with invalid UTF-8":  {base, forge(hHS, `{"game":"g1","role":"player","sub":"`+"a\xffb"+`","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"claims with trailing comma": {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,}`, hs(secretDefault)), token.ErrBadToken},
		"escaped claim names":        {base, forge(hHS, `{"\u0067ame":"g1","role":"player","exp":1800003600,"iat":1799999000}`, hs(secretDefault)), nil},

		// Encoding.
		"two parts":                      {base, validParts[0] + "." + validParts[1], token.ErrBadToken},
		"four parts":                     {base, valid + ".", token.ErrBadToken},
		"padding on the header":          {base, padded(`{"alg":"HS256"}`, cValid, 0), token.ErrBadToken},
		"padding on the signature":       {base, valid + "=", token.ErrBadToken},
		"padding on the claims":          {base, padded(hHS, cValid, 1), token.ErrBadToken},
		"standard alphabet":              {base, toStd(sigWith("-_")), token.ErrBadToken},
		"non-canonical trailing bits":    {base, flipLowBit(valid), token.ErrBadToken},                                                                                                                      // accepted by HS256-only code
		"line break in the claims":       {base, signText(validParts[0] + "." + validParts[1][:10] + "\n" + validParts[1][10:]), token.ErrBadToken},                                                         // accepted by HS256-only code
		"CR in the signature":            {base, validParts[0] + "." + validParts[1] + "." + validParts[2][:5] + "\r" + validParts[2][5:], token.ErrBadToken},                                               // accepted by HS256-only code
		"longer than 8 KiB":              {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"pad":"`+strings.Repeat("x", 6200)+`"}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"space in the claims":            {base, signText(validParts[0] + "." + validParts[1][:10] + " " + validParts[1][10:]), token.ErrBadToken},
		"header that decodes to nothing": {base, "." + validParts[1] + "." + validParts[2], token.ErrBadToken},

		// Time.
		"expired":                      {base, forge(hHS, `{"game":"g1","role":"player","exp":1799999999,"iat":1799990000}`, hs(secretDefault)), token.ErrExpired},
		"exp is now":                   {base, forge(hHS, `{"game":"g1","role":"player","exp":1800000000,"iat":1799990000}`, hs(secretDefault)), token.ErrExpired},
		"exp within leeway":            {leeway, forge(hHS, `{"game":"g1","role":"player","exp":1799999970,"iat":1799990000}`, hs(secretDefault)), nil},
		"exp beyond leeway":            {leeway, forge(hHS, `{"game":"g1","role":"player","exp":1799999940,"iat":1799990000}`, hs(secretDefault)), token.ErrExpired},
		"nbf ahead":                    {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"nbf":1800000001}`, hs(secretDefault)), token.ErrNotYetValid}, // accepted by HS256-only code
		"nbf is now":                   {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"nbf":1800000000}`, hs(secretDefault)), nil},
		"nbf ahead within leeway":      {leeway, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"nbf":1800000060}`, hs(secretDefault)), nil},
		"nbf ahead beyond leeway":      {leeway, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"nbf":1800000061}`, hs(secretDefault)), token.ErrNotYetValid}, // accepted by HS256-only code
		"lifetime 24h":                 {base, forge(hHS, `{"game":"g1","role":"player","exp":1800080000,"iat":1799993600}`, hs(secretDefault)), nil},
		"lifetime 24h and 1s":          {base, forge(hHS, `{"game":"g1","role":"player","exp":1800080001,"iat":1799993600}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"lifetime of a year":           {base, forge(hHS, `{"game":"g1","role":"player","exp":1831536000,"iat":1800000000}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"no iat, exp 24h ahead":        {base, forge(hHS, `{"game":"g1","role":"player","exp":1800086400}`, hs(secretDefault)), nil},
		"no iat, exp 24h and 1s ahead": {base, forge(hHS, `{"game":"g1","role":"player","exp":1800086401}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"no iat, within leeway":        {leeway, forge(hHS, `{"game":"g1","role":"player","exp":1800086460}`, hs(secretDefault)), nil},
		"iat 0":                        {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":0}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"MaxLifetime 1h: 1h":           {hour, forge(hHS, `{"game":"g1","role":"player","exp":1800003000,"iat":1799999400}`, hs(secretDefault)), nil},
		"MaxLifetime 1h: 2h":           {hour, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799996400}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code

		// Audience and issuer.
		"aud and iss match":          {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":"castle","iss":"https://studio.example"}`, hs(secretDefault)), nil},
		"aud in an array":            {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":["lobby","castle"],"iss":"https://studio.example"}`, hs(secretDefault)), nil},
		"aud missing":                {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"iss":"https://studio.example"}`, hs(secretDefault)), token.ErrBadToken},                // accepted by HS256-only code
		"aud another":                {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":"lobby","iss":"https://studio.example"}`, hs(secretDefault)), token.ErrBadToken},  // accepted by HS256-only code
		"aud empty array":            {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":[],"iss":"https://studio.example"}`, hs(secretDefault)), token.ErrBadToken},       // accepted by HS256-only code
		"aud in another case":        {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":"Castle","iss":"https://studio.example"}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"iss missing":                {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":"castle"}`, hs(secretDefault)), token.ErrBadToken},                                // accepted by HS256-only code
		"iss another":                {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":"castle","iss":"https://evil.example"}`, hs(secretDefault)), token.ErrBadToken},   // accepted by HS256-only code
		"aud, iss not configured":    {base, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":"lobby","iss":"x"}`, hs(secretDefault)), nil},
		"ISS instead of iss":         {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":"castle","ISS":"https://studio.example"}`, hs(secretDefault)), token.ErrBadToken},               // accepted by HS256-only code
		"duplicate aud":              {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":"lobby","aud":"castle","iss":"https://studio.example"}`, hs(secretDefault)), token.ErrBadToken}, // accepted by HS256-only code
		"aud spelled with escapes":   {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":"c\u0061stle","iss":"https://studio.example"}`, hs(secretDefault)), nil},
		"aud array, spaces, escapes": {audIss, forge(hHS, `{"game":"g1","role":"player","exp":1800003600,"iat":1799999000,"aud":[ "c\"astle" , "castle" ],"iss":"https://studio.example"}`, hs(secretDefault)), nil},
	} {
		t.Run(name, func(t *testing.T) {
			v := newVerifier(t, tc.cfg)
			c, err := v.Verify(tc.tok, now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Game == "" || (c.Role != token.RolePlayer && c.Role != token.RoleSpectator) || c.Exp == 0 {
					t.Fatalf("accepted with claims %+v", c)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			for _, s := range []error{token.ErrBadToken, token.ErrExpired, token.ErrNotYetValid} {
				if s != tc.want && errors.Is(err, s) {
					t.Fatalf("error %v also wraps %v", err, s)
				}
			}
			if c.Game != "" || c.Role != "" || c.Exp != 0 {
				t.Fatalf("refused, yet claims %+v", c)
			}
			for _, part := range strings.Split(tc.tok, ".") {
				if len(part) >= 8 && strings.Contains(err.Error(), part) {
					t.Fatalf("error %q shows the token", err)
				}
			}
		})
	}
}

// padded returns a token whose header (part 0) or claims (part 1) carry
// base64 padding, signed over the padded text.
func padded(header, claims string, part int) string {
	p := []string{header, claims}
	for len(enc([]byte(p[part])))%4 == 0 {
		p[part] += " "
	}
	e := []string{enc([]byte(p[0])), enc([]byte(p[1]))}
	e[part] += strings.Repeat("=", 4-len(e[part])%4)
	s := e[0] + "." + e[1]
	return s + "." + enc(hs(secretDefault)([]byte(s)))
}

// signText signs a token's first two parts as they are written.
func signText(s string) string { return s + "." + enc(hs(secretDefault)([]byte(s))) }

// toStd rewrites a token in the standard base64 alphabet.
func toStd(tok string) string {
	return strings.NewReplacer("-", "+", "_", "/").Replace(tok)
}

// flipLowBit changes the last character of the signature in a bit the
// decoder drops (a 32-byte signature leaves two unused bits), so the token
// decodes to the same bytes.
func flipLowBit(tok string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(alphabet[last^1])
}
