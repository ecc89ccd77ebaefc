package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/cli"
	"github.com/gamerelay/gamerelay/internal/wire"
)

func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("token", "Mints a player or spectator token (a JWT signed with HS256, EdDSA, ES256 or\nRS256) for one game and prints it. Sign with exactly one of\n--token-secret, --token-secret-file or --key-file (flag or environment).", stderr)
	var (
		game, role, sub, kid, iss   string
		secret, secretFile, keyFile string
		aud                         cli.Repeated
		ttl, nbf                    time.Duration
	)
	fs.StringVar(&game, "game", "", "game id (required)")
	fs.StringVar(&role, "role", token.RolePlayer, "player or spectator")
	fs.StringVar(&sub, "sub", "", "user name carried into the player's messages as \"user\" (optional)")
	fs.DurationVar(&ttl, "ttl", 24*time.Hour, "token lifetime from now; keep it within the verifier's maximum lifetime (24h by default)")
	fs.DurationVar(&nbf, "nbf", 0, "the token becomes valid this long from now (0: at once)")
	fs.StringVar(&secret, "token-secret", "", "HS256 secret, the gateway's --token-secret (at least 32 bytes)")
	fs.StringVar(&secretFile, "token-secret-file", "", "file holding the HS256 secret (one trailing line break is ignored)")
	fs.StringVar(&keyFile, "key-file", "", "PEM private key (PKCS #8, SEC 1 or PKCS #1): Ed25519 signs EdDSA, P-256 ES256, RSA RS256")
	fs.StringVar(&kid, "kid", "", "key id written into the token's header, by which verifiers pick their key")
	fs.Var(&aud, "aud", "audience (repeatable or comma-separated; optional)")
	fs.StringVar(&iss, "iss", "", "issuer (optional)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := wire.ValidateGame(game); err != nil {
		return usageError{fmt.Errorf("--game: %w", err)}
	}
	if role != token.RolePlayer && role != token.RoleSpectator {
		return usageError{fmt.Errorf("--role %q: want player or spectator", role)}
	}
	if ttl <= 0 {
		return usageError{errors.New("--ttl: want a positive duration")}
	}
	if nbf < 0 || nbf >= ttl {
		return usageError{errors.New("--nbf: want from 0 to less than --ttl")}
	}
	s, err := tokenSigner(fs, secret, secretFile, keyFile, kid)
	if err != nil {
		return err
	}
	now := time.Now()
	c := token.Claims{Game: game, Role: role, Sub: sub, Exp: now.Add(ttl).Unix(), Iat: now.Unix(), Iss: iss, Aud: aud}
	if nbf > 0 {
		c.Nbf = now.Add(nbf).Unix()
	}
	tok, err := s.Mint(c)
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// tokenSigner builds the Signer of the one key source given (by flag or
// environment).
func tokenSigner(fs *flag.FlagSet, secret, secretFile, keyFile, kid string) (*token.Signer, error) {
	var set []string
	for _, name := range []string{"token-secret", "token-secret-file", "key-file"} {
		if f := fs.Lookup(name); f != nil && f.Value.String() != "" {
			set = append(set, "--"+name)
		}
	}
	switch len(set) {
	case 0:
		return nil, usageError{errors.New("no key: set --token-secret, --token-secret-file or --key-file (or their environment variables)")}
	case 1:
	default:
		return nil, usageError{fmt.Errorf("%s and %s: choose one key", set[0], set[1])}
	}
	switch {
	case keyFile != "":
		pemData, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--key-file: %w", err)}
		}
		key, err := token.ParsePrivateKeyPEM(pemData)
		if err != nil {
			return nil, usageError{fmt.Errorf("--key-file: %w", err)}
		}
		s, err := token.NewSigner(key, kid)
		if err != nil {
			return nil, usageError{fmt.Errorf("--key-file: %w", err)}
		}
		return s, nil
	case secretFile != "":
		sec, err := cli.ReadSecret("token-secret-file", secretFile)
		if err != nil {
			return nil, usageError{err}
		}
		return hmacSigner("--token-secret-file", []byte(sec), kid)
	}
	return hmacSigner("--token-secret (or GAMERELAY_TOKEN_SECRET)", []byte(secret), kid)
}

// hmacSigner is an HS256 Signer; errors never show the secret.
func hmacSigner(source string, secret []byte, kid string) (*token.Signer, error) {
	if len(secret) < token.MinSecretBytes {
		return nil, usageError{fmt.Errorf("%s: want at least %d bytes", source, token.MinSecretBytes)}
	}
	s, err := token.NewHMACSigner(secret, kid)
	if err != nil {
		return nil, usageError{fmt.Errorf("--kid: %w", err)}
	}
	return s, nil
}
