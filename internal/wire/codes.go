package wire

// Stable error codes, shared by the WebSocket protocol, the HTTP API and the
// sequencer's NATS API. Append-only: never rename or reuse a code.
// docs/protocol.md documents each one.
const (
	CodeInvalidGame    = "invalid_game"    // game id empty, too long or with unsafe characters
	CodeInvalidMessage = "invalid_message" // body is not a JSON object with a string "type", or a field has the wrong type
	CodeReservedField  = "reserved_field"  // body sets a field only gamerelay may set
	CodeTooLarge       = "too_large"       // body larger than the configured limit
	CodeWrongPartition = "wrong_partition" // append sent to another partition's subject
	CodeUnavailable    = "unavailable"     // the message was not stored (the log could not take it now); send it again
	CodeOutcomeUnknown = "outcome_unknown" // no answer in time: the message may have been stored (it is in the log then); a resend with the same idempotency key is harmless
	CodeInternal       = "internal"        // unexpected server-side failure
	CodeHistoryGap     = "history_gap"     // the archive lacks a msg_id of the asked range (not archived yet, or lost)

	CodeInvalidJSON    = "invalid_json"    // frame is not valid JSON
	CodeNotObject      = "not_object"      // frame is JSON but not an object
	CodeMissingType    = "missing_type"    // object has no string "type"
	CodeReservedType   = "reserved_type"   // "type" is one only gamerelay sends
	CodeNotJoined      = "not_joined"      // game message before a successful join
	CodeAlreadyJoined  = "already_joined"  // join or create on a joined connection
	CodeUnknownGame    = "unknown_game"    // the game does not exist (nothing was ever appended to it)
	CodeAuthRequired   = "auth_required"   // join without a token where anonymous play is off
	CodeBadToken       = "bad_token"       // token malformed, forged, or for another game
	CodeTokenExpired   = "token_expired"   // token past its exp
	CodeForbidden      = "forbidden"       // spectators may not send
	CodeRateLimited    = "rate_limited"    // the client exceeded its message rate; the message was dropped
	CodeGameFull       = "game_full"       // the game has the most clients this gateway allows
	CodeCreateDisabled = "create_disabled" // create is off on this gateway
	CodeUnsupported    = "unsupported"     // binary frames are not part of the protocol
	CodeProtocol       = "protocol"        // broken WebSocket framing (closes with 1002)

	// HTTP API only (docs/api.md).
	CodeUnauthorized     = "unauthorized"       // missing or unknown API key
	CodeGameExists       = "game_exists"        // create with a requested id that already has messages
	CodeNotFound         = "not_found"          // no such API route
	CodeMethodNotAllowed = "method_not_allowed" // the route exists, not with this HTTP method
)

// WebSocket close codes gamerelay uses (RFC 6455 §7.4.1 and IANA registry).
const (
	CloseNormal      = 1000 // client asked to close
	CloseGoingAway   = 1001 // gateway draining (SIGTERM): reconnect to another pod with since
	CloseProtocol    = 1002 // broken WebSocket framing
	CloseUnsupported = 1003 // binary frame
	ClosePolicy      = 1008 // no join within the join timeout, or no pong in time
	CloseTooBig      = 1009 // frame larger than the message size limit
	CloseInternal    = 1011 // unexpected server error
	CloseTryLater    = 1013 // slow consumer: the send queue overflowed; reconnect with since
)
