// Package embedmongo runs an embedded MongoDB-wire-compatible server
// (FerretDB v1 with its SQLite backend) for `gamerelay dev` and tests only;
// no production code path starts it. A Server is safe for concurrent use;
// Stop waits until the listener and every connection are closed.
package embedmongo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Options configure an embedded server.
type Options struct {
	// Dir holds the SQLite files, one per database; created if missing.
	// Required.
	Dir string
	// Listen is the TCP address to listen on. Default "127.0.0.1:0" (a free
	// port; see Server.Addr).
	Listen string
	// Logger receives FerretDB's logs. Default: discarded.
	Logger *slog.Logger
}

// Server is a running embedded FerretDB.
type Server struct {
	// Static after construction.
	addr   string
	uri    string
	cancel context.CancelFunc
	done   chan struct{}

	stopOnce sync.Once
}

// newMu serialises ferretdb.New, which writes package-level state.
var newMu sync.Mutex

// Start starts FerretDB and returns once it accepts connections.
func Start(o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("embedmongo: Options.Dir is required")
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("embedmongo: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedmongo: %w", err)
	}
	// ferretdb.New leaks its backend when it cannot listen (and debug
	// builds, as with -race, panic on that later): check the address first.
	l, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedmongo: %w", err)
	}
	l.Close()
	newMu.Lock()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: o.Listen},
		Logger:    o.Logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
	})
	newMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("embedmongo: start FerretDB on %s: %w", o.Listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = f.Run(ctx)
	}()
	// The listener is bound in New; MongoDBURI reads its address.
	s.uri = f.MongoDBURI()
	host, port, err := hostPort(s.uri)
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.addr = net.JoinHostPort(host, port)
	if err := waitAccepting(s.addr, 10*time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func hostPort(uri string) (string, string, error) {
	const prefix = "mongodb://"
	if len(uri) < len(prefix) || uri[:len(prefix)] != prefix {
		return "", "", fmt.Errorf("embedmongo: unexpected URI %q", uri)
	}
	hp := uri[len(prefix):]
	for i := 0; i < len(hp); i++ {
		if hp[i] == '/' {
			hp = hp[:i]
			break
		}
	}
	return net.SplitHostPort(hp)
}

func waitAccepting(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embedmongo: %s not accepting connections: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URI is the MongoDB connection string, e.g. "mongodb://127.0.0.1:27017/".
func (s *Server) URI() string { return s.uri }

// Addr is the TCP address the server listens on.
func (s *Server) Addr() string { return s.addr }

// Stop closes the listener and every client connection and waits for
// FerretDB to finish. It may be called more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(s.cancel)
	<-s.done
}

// Run starts a server for t with its data in a fresh temporary directory
// and stops it when t ends.
func Run(t testing.TB) *Server {
	t.Helper()
	s, err := Start(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}
