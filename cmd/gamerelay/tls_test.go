package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"

	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// File is the CA certificate's PEM file.
	File string
}

var serial struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	return big.NewInt(serial.n)
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.File = ca.write(name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, typ string, der []byte) string {
	ca.t.Helper()
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// Pool returns a pool holding the CA.
func (ca *testCA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue signs a certificate for name (a server's for 127.0.0.1 and
// localhost, or a client's) and returns it with its PEM files.
func (ca *testCA) issue(name string, server bool) (cert tls.Certificate, certFile, keyFile string) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	certFile = ca.write(name+".pem", "CERTIFICATE", der)
	keyFile = ca.write(name+".key", "PRIVATE KEY", keyDER)
	cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		ca.t.Fatal(err)
	}
	return cert, certFile, keyFile
}

// syncBuffer is a bytes.Buffer safe for a process's log and a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// role runs a subcommand until the test ends or stop is called.
type role struct {
	stop func() error
	log  *syncBuffer
}

func startRole(t *testing.T, run func(context.Context, []string, io.Writer, io.Writer) error, args ...string) *role {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &role{log: &syncBuffer{}}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, io.Discard, r.log) }()
	var once sync.Once
	var err error
	r.stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = r.stop() })
	return r
}

// waitLog polls r's log until it holds s.
func (r *role) waitLog(t *testing.T, s string) {
	t.Helper()
	said := false
	defer func() {
		if !said {
			t.Logf("log:\n%s", r.log.String())
		}
	}()
	testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("the log to say %q", s), func() bool { return strings.Contains(r.log.String(), s) })
	said = true
}

// Every role reaches a NATS server that requires TLS and verifies client
// certificates with --nats-tls-ca, --nats-tls-cert and --nats-tls-key; a
// role without its client certificate, or that does not trust the
// server's CA, is refused and says why.
func TestNATSMutualTLS(t *testing.T) {
	ca := newTestCA(t, "nats")
	serverCert, _, _ := ca.issue("nats-server", true)
	_, clientCert, clientKey := ca.issue("gamerelay-sequencer", false)
	other := newTestCA(t, "other")
	_, otherCert, otherKey := other.issue("intruder", false)
	ns, err := embednats.Run(embednats.Options{StoreDir: t.TempDir(), TLS: &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	url := ns.ClientURL()
	tlsFlags := []string{"--nats", url, "--nats-tls-ca", ca.File, "--nats-tls-cert", clientCert, "--nats-tls-key", clientKey, "--log-level", "warn"}

	seqAdm, gwAdm := freeAddr(t), freeAddr(t)
	seq := startRole(t, runSequencer, append([]string{"--admin", seqAdm, "--lease-ttl", "1s"}, tlsFlags...)...)
	gw := startRole(t, runGateway, append([]string{"--admin", gwAdm, "--listen", freeAddr(t), "--allow-anonymous"}, tlsFlags...)...)
	waitReady(t, "http://"+seqAdm+"/readyz", nil)
	waitReady(t, "http://"+gwAdm+"/readyz", nil)
	if err := gw.stop(); err != nil {
		t.Fatalf("gateway: %v", err)
	}
	if err := seq.stop(); err != nil {
		t.Fatalf("sequencer: %v", err)
	}

	// The server hangs up on a client without a good certificate; the
	// client sees the TLS alert or the closed connection, whichever comes
	// first.
	refused := []string{"remote error: tls:", "tls error: connection closed by remote after TLS handshake"}
	for name, tc := range map[string]struct {
		args []string
		why  []string // one of them in the error
	}{
		"no client certificate":     {[]string{"--nats-tls-ca", ca.File}, refused},
		"certificate of another CA": {[]string{"--nats-tls-ca", ca.File, "--nats-tls-cert", otherCert, "--nats-tls-key", otherKey}, refused},
		"server's CA not trusted":   {[]string{"--nats-tls-cert", clientCert, "--nats-tls-key", clientKey}, []string{"certificate signed by unknown authority"}},
		// nats.go turns TLS on for a server requiring it.
		"no TLS flags": {nil, []string{"certificate signed by unknown authority"}},
	} {
		t.Run(name, func(t *testing.T) {
			r := startRole(t, runSequencer, append([]string{"--nats", url, "--admin", freeAddr(t), "--log-level", "warn"}, tc.args...)...)
			r.waitLog(t, "nats connection attempts failed")
			err := r.stop()
			if err == nil || !strings.Contains(err.Error(), "not reachable: ") || !slices.ContainsFunc(tc.why, func(w string) bool { return strings.Contains(err.Error(), w) }) {
				t.Fatalf("sequencer exit: %v, want not reachable: …%q", err, tc.why)
			}
		})
	}
}

// --mongo-tls-ca verifies a MongoDB server's certificate; without it the
// system's CAs refuse the test CA.
func TestMongoTLSCA(t *testing.T) {
	ca := newTestCA(t, "mongo")
	_, certFile, keyFile := ca.issue("mongo-server", true)
	addr := freeAddr(t)
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TLS: addr, TLSCertFile: certFile, TLSKeyFile: keyFile},
		Handler:   "sqlite",
		SQLiteURL: "file:" + t.TempDir() + "/",
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	uri := "mongodb://" + addr + "/?tls=true&serverSelectionTimeoutMS=5000"
	for name, tc := range map[string]struct {
		args []string
		code int
		out  string
	}{
		// Connected and asked: the archive is empty.
		"trusted":     {[]string{"--mongo-tls-ca", ca.File}, 1, "game not in the archive"},
		"not trusted": {nil, 1, "certificate signed by unknown authority"},
		"bad CA file": {[]string{"--mongo-tls-ca", keyFile}, 2, "--mongo-tls-ca: no PEM certificate in " + keyFile},
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			args := append([]string{"export", "--mongo", uri, "--game", "g"}, tc.args...)
			if code := run(args, &out, &out); code != tc.code || !strings.Contains(out.String(), tc.out) {
				t.Fatalf("exit %d, want %d; output lacks %q?\n%s", code, tc.code, tc.out, out.String())
			}
		})
	}
}
