// Package token verifies gamerelay's join tokens: compact JWS
// JWTs signed with HS256, EdDSA, ES256 or RS256, whose claims name a game
// and a role (docs/protocol.md). A Verifier is immutable after
// NewVerifier and safe for concurrent use.
package token
