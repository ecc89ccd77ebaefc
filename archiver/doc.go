// Package archiver copies every stored game message from the JetStream log
// into MongoDB, exactly once in effect (Archiver), and serves archived
// history beyond stream retention over NATS (HistoryClient). Archiver.Run
// owns all of its goroutines and returns only when they are done; every
// exported type is safe for concurrent use.
package archiver
