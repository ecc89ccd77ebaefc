// Package admin serves the operator endpoints of every gamerelay process on
// its own listener: /metrics (Prometheus), /healthz (the process runs) and
// /readyz (it can do its job), plus /debug/pprof. Limits bounds what one
// HTTP client may hold there and on the gateway's public listener. Safe for
// concurrent use.
package admin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether a part of the process is ready; nil means ready.
type Check func() error

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler returns the admin mux. Of net/http/pprof it serves the index,
// the profiles, symbol and trace, but not cmdline: the command line may
// hold secrets.
func Handler(reg *prometheus.Registry, ready ...Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		for _, c := range ready {
			if err := c(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", http.NotFound)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Limits bound what one HTTP client may hold on a gamerelay listener: the
// admin listener and the gateway's public one. Zero fields take the
// defaults.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's line and headers.
	// Default 5s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, headers and body: a
	// client announcing a body and sending nothing is cut after it. The
	// handler may run longer (see Server). Default 10s.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that waits this long for
	// its next request. Default 30s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and headers; larger ones get
	// 431. Default 32 KiB.
	MaxHeaderBytes int
}

// The default Limits.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	DefaultMaxHeaderBytes    = 32 << 10
)

// Server returns an HTTP server for h within l. The limits bound reading
// requests and waiting for them, not handlers: net/http clears the read
// deadline once a request is read, so a handler may run past ReadTimeout
// (a CPU profile, an API call waiting for the log) with its context
// intact; and WebSockets leave the limits behind, since net/http clears a
// connection's deadlines when a handler hijacks it.
func (l Limits) Server(h http.Handler) *http.Server {
	if l.ReadHeaderTimeout == 0 {
		l.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if l.ReadTimeout == 0 {
		l.ReadTimeout = DefaultReadTimeout
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// Serve runs the admin listener on addr, with the default Limits, until ctx
// ends.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	srv := Limits{}.Server(h)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	log.Info("admin listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
