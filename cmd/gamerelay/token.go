package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gamerelay/gamerelay/gateway"
	"github.com/gamerelay/gamerelay/internal/cli"
	"github.com/gamerelay/gamerelay/internal/wire"
)

func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("token", "Mints a player or spectator token (HS256 JWT) for one game and prints it.", stderr)
	var (
		game, role, sub, secret string
		secretFile              string
		ttl                     time.Duration
	)
	fs.StringVar(&game, "game", "", "game id (required)")
	fs.StringVar(&role, "role", gateway.RolePlayer, "player or spectator")
	fs.StringVar(&sub, "sub", "", "user name carried into the player's messages as \"user\" (optional)")
	fs.DurationVar(&ttl, "ttl", 24*time.Hour, "token lifetime")
	fs.StringVar(&secret, "token-secret", "", "HS256 secret, the gateway's --token-secret")
	fs.StringVar(&secretFile, "token-secret-file", "", "file holding --token-secret (keeps it out of argv and the environment)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if s, ok, err := cli.SecretFile(fs, "token-secret", "token-secret-file"); err != nil {
		return usageError{err}
	} else if ok {
		secret = s
	}
	if err := wire.ValidateGame(game); err != nil {
		return usageError{fmt.Errorf("--game: %w", err)}
	}
	if len(secret) < 16 {
		return usageError{errors.New("--token-secret or --token-secret-file (or GAMERELAY_TOKEN_SECRET, GAMERELAY_TOKEN_SECRET_FILE): want at least 16 bytes")}
	}
	if ttl <= 0 {
		return usageError{errors.New("--ttl: want a positive duration")}
	}
	now := time.Now()
	tok, err := gateway.MintToken([]byte(secret), gateway.Claims{Game: game, Role: role, Sub: sub, Exp: now.Add(ttl).Unix(), Iat: now.Unix()})
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
