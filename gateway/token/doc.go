// Package token mints and verifies gamerelay's join tokens: compact JWS
// JWTs signed with HS256, EdDSA, ES256 or RS256, whose claims name a game
// and a role (docs/protocol.md). A Signer is immutable and a Verifier is
// safe for concurrent use; a Verifier with a JWKS URL refreshes its keys on
// its own goroutine until Close, which waits for it.
package token
