package wire

// Stable error codes, shared by the WebSocket protocol, the HTTP API and the
// sequencer's NATS API. Append-only: never rename or reuse a code.
const (
	CodeInvalidGame    = "invalid_game"    // game id empty, too long or with unsafe characters
	CodeInvalidMessage = "invalid_message" // body is not a JSON object with a string "type"
	CodeReservedField  = "reserved_field"  // body sets a field only gamerelay may set
	CodeTooLarge       = "too_large"       // body larger than the configured limit
	CodeWrongPartition = "wrong_partition" // append sent to another partition's subject
	CodeUnavailable    = "unavailable"     // the log could not take the message now; retry with the same idempotency key
	CodeInternal       = "internal"        // unexpected server-side failure
)
