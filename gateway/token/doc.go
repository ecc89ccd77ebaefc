// Package token mints and verifies gamerelay's join tokens: compact JWS
// JWTs signed with HS256, EdDSA, ES256 or RS256, whose claims name a game
// and a role (docs/protocol.md). A Signer is immutable, and a Verifier is
// immutable after NewVerifier; both are safe for concurrent use.
package token
