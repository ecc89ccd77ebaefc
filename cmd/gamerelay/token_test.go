package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
)

// tokenSecret is the HS256 secret of the command tests.
const tokenSecret = "cli-test-secret-0123456789abcdef-0123"

// TestTokenCommand: `gamerelay token` with each key source signs tokens
// that a Verifier with the matching key accepts, with the claims the flags
// ask for.
func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edDER, _ := x509.MarshalPKCS8PrivateKey(ed)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	edFile := write("ed.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER}))
	ecFile := write("ec.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}))
	rsaFile := write("rsa.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}))
	secretFile := write("secret", []byte(tokenSecret+"\n"))

	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		key  token.Key // verifies the token
		want token.Claims
		alg  string
	}{
		"HS256 from --token-secret": {
			[]string{"--game", "g1", "--sub", "ana"}, nil,
			token.Key{Secret: []byte(tokenSecret)}, token.Claims{Game: "g1", Role: token.RolePlayer, Sub: "ana"}, "HS256"},
		"HS256 from the environment": {
			[]string{"--game", "g1", "--role", "spectator"}, map[string]string{"GAMERELAY_TOKEN_SECRET": tokenSecret},
			token.Key{Secret: []byte(tokenSecret)}, token.Claims{Game: "g1", Role: token.RoleSpectator}, "HS256"},
		"HS256 from --token-secret-file, kid": {
			[]string{"--game", "g1", "--token-secret-file", secretFile, "--kid", "2026-01"}, nil,
			token.Key{ID: "2026-01", Secret: []byte(tokenSecret)}, token.Claims{Game: "g1", Role: token.RolePlayer}, "HS256"},
		"EdDSA": {
			[]string{"--game", "g1", "--key-file", edFile, "--kid", "ed-1"}, nil,
			token.Key{ID: "ed-1", Public: ed.Public()}, token.Claims{Game: "g1", Role: token.RolePlayer}, "EdDSA"},
		"ES256, aud, iss": {
			[]string{"--game", "g1", "--key-file", ecFile, "--aud", "castle,lobby", "--iss", "studio", "--ttl", "1h"}, nil,
			token.Key{Public: ec.Public()}, token.Claims{Game: "g1", Role: token.RolePlayer, Aud: []string{"castle", "lobby"}, Iss: "studio"}, "ES256"},
		"RS256, nbf": {
			[]string{"--game", "g1", "--key-file", rsaFile, "--aud", "castle", "--nbf", "10m", "--ttl", "2h"}, nil,
			token.Key{Public: rk.Public()}, token.Claims{Game: "g1", Role: token.RolePlayer, Aud: []string{"castle"}}, "RS256"},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append([]string{"token"}, tc.args...)
			if !strings.Contains(strings.Join(tc.args, " "), "-file") && tc.env == nil {
				args = append(args, "--token-secret", tokenSecret)
			}
			var out, errOut bytes.Buffer
			start := time.Now().Unix()
			if code := run(args, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			tok := strings.TrimSpace(out.String())
			h, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
			if !strings.Contains(string(h), `"alg":"`+tc.alg+`"`) || (tc.key.ID != "" && !strings.Contains(string(h), `"kid":"`+tc.key.ID+`"`)) {
				t.Fatalf("header %s, want alg %s kid %q", h, tc.alg, tc.key.ID)
			}
			cfg := token.Config{Keys: []token.Key{tc.key}}
			if len(tc.want.Aud) > 0 {
				cfg.Audience = "castle"
			}
			v, err := token.NewVerifier(cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(tok, time.Now().Add(11*time.Minute)) // after any nbf
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Iat < start || got.Iat > time.Now().Unix() {
				t.Fatalf("iat %d, want now", got.Iat)
			}
			ttl := int64(24 * 3600)
			if i := indexOf(tc.args, "--ttl"); i >= 0 {
				d, _ := time.ParseDuration(tc.args[i+1])
				ttl = int64(d.Seconds())
			}
			if got.Exp-got.Iat != ttl {
				t.Fatalf("lifetime %ds, want %ds", got.Exp-got.Iat, ttl)
			}
			if i := indexOf(tc.args, "--nbf"); i >= 0 && got.Nbf != got.Iat+600 {
				t.Fatalf("nbf %d, want iat + 10m", got.Nbf)
			}
			got.Exp, got.Iat, got.Nbf = 0, 0, 0
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("claims %+v, want %+v", got, tc.want)
			}
		})
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestTokenCommandHidesSecrets: refusals never print the secret.
func TestTokenCommandHidesSecrets(t *testing.T) {
	short := tokenSecret[:31]
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(short), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"short --token-secret":      {"token", "--game", "g", "--token-secret", short},
		"short --token-secret-file": {"token", "--game", "g", "--token-secret-file", file},
		"secret as key file":        {"token", "--game", "g", "--key-file", file},
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run(args, &out, &out); code != 2 {
				t.Fatalf("exit %d, want 2: %s", code, out.String())
			}
			if strings.Contains(out.String(), short[:16]) {
				t.Fatalf("output shows the secret: %s", out.String())
			}
		})
	}
}
