// Package gateway serves gamerelay's WebSocket protocol (docs/protocol.md):
// joins with tokens, replay then live delivery in msg_id order, and game
// messages appended through the sequencer. Each connection has at most one
// reader goroutine (none while parked idle, Linux) and at most one writer
// goroutine; games hosted here share one feed each. Gateway methods are
// safe for concurrent use.
package gateway
