// Package sequencer is gamerelay's ordered game log on NATS JetStream: it
// numbers each game's messages 1, 2, 3, … without gaps (Appender, Service,
// Client), delivers them live in that order (Feeds) and replays them from any
// position (Reader). Every exported type is safe for concurrent use;
// callbacks handed to it run on its goroutines and must not block.
package sequencer
