package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	neturl "net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/cli"
)

// The defaults of the NATS connection flags: a server that stops
// answering is noticed after about PingInterval × (MaxPingsOut + 1), and
// the next one is tried within ReconnectWait (plus as much jitter) and
// ConnectTimeout.
const (
	defaultNATSPingInterval   = 500 * time.Millisecond
	defaultNATSMaxPingsOut    = 2
	defaultNATSReconnectWait  = 100 * time.Millisecond
	defaultNATSConnectTimeout = time.Second
)

// natsFlags are how a role reaches NATS: where, as whom, over what, and
// how fast it gives up on a server that stopped answering.
type natsFlags struct {
	url, urlFile           string
	user, passwordFile     string
	creds, nkey            string
	tlsCA, tlsCert, tlsKey string
	pingInterval           time.Duration
	maxPingsOut            int
	reconnectWait          time.Duration
	connectTimeout         time.Duration
}

// natsDefaults are the flags' defaults with url: how the parts of
// `gamerelay dev` reach its embedded server.
func natsDefaults(url string) natsFlags {
	return natsFlags{
		url:            url,
		pingInterval:   defaultNATSPingInterval,
		maxPingsOut:    defaultNATSMaxPingsOut,
		reconnectWait:  defaultNATSReconnectWait,
		connectTimeout: defaultNATSConnectTimeout,
	}
}

func (n *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.url, "nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	fs.StringVar(&n.urlFile, "nats-url-file", "", "file holding --nats, for URLs with passwords or tokens (keeps them out of argv and the environment)")
	fs.StringVar(&n.user, "nats-user", "", "NATS user name, with --nats-password-file (instead of a user and password in the URL)")
	fs.StringVar(&n.passwordFile, "nats-password-file", "", "file holding the password of --nats-user (read again at every connection)")
	fs.StringVar(&n.creds, "nats-creds", "", "NATS credentials file (JWT and nkey seed; optional)")
	fs.StringVar(&n.nkey, "nats-nkey", "", "file holding an nkey seed (SU...) to authenticate with (optional; not with --nats-creds)")
	fs.StringVar(&n.tlsCA, "nats-tls-ca", "", "PEM file of the CA(s) that signed the NATS servers' certificates (default: the system's); turns TLS on")
	fs.StringVar(&n.tlsCert, "nats-tls-cert", "", "PEM client certificate for NATS servers that verify clients (with --nats-tls-key; re-read at every connection)")
	fs.StringVar(&n.tlsKey, "nats-tls-key", "", "PEM private key of --nats-tls-cert")
	fs.DurationVar(&n.pingInterval, "nats-ping-interval", defaultNATSPingInterval, "how often each NATS connection pings its server; a server that leaves --nats-max-pings-out pings unanswered is given up")
	fs.IntVar(&n.maxPingsOut, "nats-max-pings-out", defaultNATSMaxPingsOut, "unanswered pings after which a NATS connection reconnects to another server")
	fs.DurationVar(&n.reconnectWait, "nats-reconnect-wait", defaultNATSReconnectWait, "pause before trying the NATS servers again, plus up to as much random jitter")
	fs.DurationVar(&n.connectTimeout, "nats-connect-timeout", defaultNATSConnectTimeout, "longest wait for one NATS server to accept a connection (a hung server must not stall a reconnect)")
}

// resolve takes --nats from --nats-url-file if that is set and checks the
// other flags, naming the bad one.
func (n *natsFlags) resolve(fs *flag.FlagSet) error {
	url, ok, err := cli.SecretFile(fs, "nats", "nats-url-file")
	if err != nil {
		return usageError{err}
	}
	if ok {
		n.url = url
	}
	switch {
	case n.creds != "" && n.nkey != "":
		return usageError{errors.New("--nats-creds and --nats-nkey both set: use one")}
	case (n.user == "") != (n.passwordFile == ""):
		return usageError{errors.New("--nats-user and --nats-password-file go together")}
	case n.user != "" && (n.creds != "" || n.nkey != ""):
		return usageError{errors.New("--nats-user with --nats-creds or --nats-nkey: authenticate one way")}
	case (n.tlsCert == "") != (n.tlsKey == ""):
		return usageError{errors.New("--nats-tls-cert and --nats-tls-key go together")}
	case n.pingInterval <= 0:
		return usageError{fmt.Errorf("--nats-ping-interval %s: want a positive duration", n.pingInterval)}
	case n.maxPingsOut < 1:
		return usageError{fmt.Errorf("--nats-max-pings-out %d: want at least 1", n.maxPingsOut)}
	case n.reconnectWait <= 0:
		return usageError{fmt.Errorf("--nats-reconnect-wait %s: want a positive duration", n.reconnectWait)}
	case n.connectTimeout <= 0:
		return usageError{fmt.Errorf("--nats-connect-timeout %s: want a positive duration", n.connectTimeout)}
	}
	for flag, path := range map[string]string{"nats-creds": n.creds, "nats-nkey": n.nkey} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return usageError{fmt.Errorf("--%s: %w", flag, err)}
		}
	}
	if err := checkNATSURLs(n.url); err != nil {
		return err
	}
	if n.user != "" && strings.Contains(n.url, "@") {
		return usageError{errors.New("--nats-user with credentials in the --nats URL: authenticate one way")}
	}
	_, err = n.options() // reads the password, the nkey seed, the certificates and the key
	return err
}

// options are the nats.go options of the flags: credentials, TLS and
// timing.
func (n *natsFlags) options() ([]nats.Option, error) {
	opts := []nats.Option{
		nats.PingInterval(n.pingInterval),
		nats.MaxPingsOutstanding(n.maxPingsOut),
		nats.ReconnectWait(n.reconnectWait),
		nats.ReconnectJitter(n.reconnectWait, n.reconnectWait),
		nats.Timeout(n.connectTimeout),
	}
	if n.passwordFile != "" {
		pw, err := cli.ReadSecret("nats-password-file", n.passwordFile)
		if err != nil {
			return nil, usageError{err}
		}
		var mu sync.Mutex
		user, file := n.user, n.passwordFile
		opts = append(opts, nats.UserInfoHandler(func() (string, string) {
			// Read at every connection: a rotated password is used from
			// the next one on; an unreadable file leaves the last good one.
			mu.Lock()
			defer mu.Unlock()
			if p, err := cli.ReadSecret("nats-password-file", file); err == nil {
				pw = p
			}
			return user, pw
		}))
	}
	if n.creds != "" {
		opts = append(opts, nats.UserCredentials(n.creds))
	}
	if n.nkey != "" {
		o, err := nats.NkeyOptionFromSeed(n.nkey)
		if err != nil {
			return nil, usageError{fmt.Errorf("--nats-nkey %s: %w", n.nkey, err)}
		}
		opts = append(opts, o)
	}
	cfg, err := n.tlsConfig()
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

// tlsConfig is the TLS configuration of the flags, nil without any. The
// client certificate is read again at every handshake, so a renewed one
// (cert-manager rewrites the mounted files) is used from the next
// connection on; if it cannot be read, the last good one is.
func (n *natsFlags) tlsConfig() (*tls.Config, error) {
	if n.tlsCA == "" && n.tlsCert == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if n.tlsCA != "" {
		pool, err := loadCAs("nats-tls-ca", n.tlsCA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if n.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(n.tlsCert, n.tlsKey)
		if err != nil {
			return nil, usageError{fmt.Errorf("--nats-tls-cert, --nats-tls-key: %w", err)}
		}
		var mu sync.Mutex
		last := &cert
		certFile, keyFile := n.tlsCert, n.tlsKey
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			mu.Lock()
			defer mu.Unlock()
			if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
				last = &c
			}
			return last, nil
		}
	}
	return cfg, nil
}

// loadCAs reads a PEM file of CA certificates, the value of flag.
func loadCAs(flag, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("--%s: %w", flag, err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, usageError{fmt.Errorf("--%s: no PEM certificate in %s", flag, path)}
	}
	return pool, nil
}

// checkNATSURLs parses the URLs of a comma-separated NATS list as nats.go
// does, so a malformed one is a usage error that names it redacted
// instead of a parse error quoting it whole.
func checkNATSURLs(list string) error {
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		if _, err := neturl.Parse(u); err != nil {
			return usageError{fmt.Errorf("--nats: %s is not a valid URL (percent-encode special characters in user names, passwords and tokens)", redactURL(u))}
		}
	}
	return nil
}

// connectLogEvery spaces the log lines of failed connection attempts; they
// are retried every --nats-reconnect-wait.
const connectLogEvery = 10 * time.Second

// connect dials NATS as n says, with endless reconnects, and waits up to
// 30 s (or until ctx ends) for the first connection; reconnected, if set,
// runs after every reconnection. Failed attempts are logged (at most one
// line per connectLogEvery) and the last one is in the error if the first
// connection never comes.
func connect(ctx context.Context, n natsFlags, name string, log *slog.Logger, reconnected func(), extra ...nats.Option) (*nats.Conn, error) {
	if err := checkNATSURLs(n.url); err != nil {
		return nil, err
	}
	var (
		mu       sync.Mutex
		lastErr  error
		failures int
		logged   time.Time
	)
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", redactURL(err.Error()))
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			lastErr = err
			failures++
			if time.Since(logged) >= connectLogEvery {
				log.Warn("nats connection attempts failed", "attempts", failures, "last_err", redactURL(err.Error()))
				failures, logged = 0, time.Now()
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
			if reconnected != nil {
				reconnected()
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	flagOpts, err := n.options()
	if err != nil {
		return nil, err
	}
	opts = append(append(opts, flagOpts...), extra...)
	nc, err := nats.Connect(n.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %s", redactURL(n.url), redactURL(err.Error()))
	}
	// Wait for the first connection so start-up errors are visible.
	deadline := time.Now().Add(30 * time.Second)
	for !nc.IsConnected() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			nc.Close()
			mu.Lock()
			defer mu.Unlock()
			if lastErr != nil {
				return nil, fmt.Errorf("connect to NATS %s: not reachable: %s", redactURL(n.url), redactURL(lastErr.Error()))
			}
			return nil, fmt.Errorf("connect to NATS %s: not reachable", redactURL(n.url))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nc, nil
}
