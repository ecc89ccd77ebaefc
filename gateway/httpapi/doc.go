// Package httpapi is gamerelay's HTTP API for studio backends
// (docs/api.md): create games, publish messages into them, read their
// history and end them, authenticated with API keys. An API is immutable
// after New and safe for concurrent use; it starts no goroutines of its own,
// every request runs on the net/http server's goroutine.
package httpapi
