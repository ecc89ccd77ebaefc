// Package gateway serves gamerelay's WebSocket protocol (docs/protocol.md):
// joins with tokens, replay then live delivery in msg_id order, and game
// messages appended through the sequencer. Each connection has at most one
// reader goroutine (none while parked idle, Linux) and at most one writer
// goroutine; games hosted here share one feed each. Gateway methods are
// safe for concurrent use.
//
// Lock order: Gateway.mu, then hub.mu, then conn.mu, then poller.mu; a
// goroutine holding one of them takes only those after it. Gateway.presMu,
// Gateway.addrMu and audience.mu are taken alone. No socket is written
// under Gateway.mu or hub.mu: a fan-out copies the game's clients under
// hub.mu and writes after releasing it, so joins, leaves and replays of
// the game never wait for its audience's sockets. A frame to an idle
// client is written under that client's conn.mu alone (writeNowLocked,
// non-blocking), which only that client's own frames wait on. Functions
// that need a lock held end in Locked.
package gateway
