// Package sequencer is gamerelay's ordered game log on NATS JetStream: it
// numbers each game's messages 1, 2, 3, … without gaps (Appender, Service,
// Client), delivers them live in that order (Feeds) and replays them from any
// position (Reader). Every exported type is safe for concurrent use;
// callbacks handed to it run on its goroutines and must not block.
//
// Lock order: Feeds.mu, then Feed.deliverMu, then Feed.mu; Appender.mu,
// Service.mu and replies.mu are taken alone. A feed's subscribers run under
// Feed.deliverMu only (deliveries of one game never overlap), never under
// Feed.mu, which joins (Subscribe, Replay) take; the Appender hands
// messages to local feeds without waiting for deliverMu (TryLock).
// Functions that need a lock held end in Locked.
package sequencer
