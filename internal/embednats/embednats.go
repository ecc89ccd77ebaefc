// Package embednats starts embedded NATS JetStream servers for tests and for
// `gamerelay dev`: a single node, or a cluster of nodes in one process.
// Servers are shut down by the returned stop functions (tests: t.Cleanup).
package embednats

import (
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/testutil"
)

// Options configure an embedded server.
type Options struct {
	Host     string // default 127.0.0.1
	Port     int    // 0 means pick a free port
	StoreDir string // JetStream directory; required
	Name     string
	// TLS, if set, is the server's TLS configuration: clients must use
	// TLS, and with ClientAuth tls.RequireAndVerifyClientCert present a
	// certificate signed by one of its ClientCAs.
	TLS *tls.Config
	// Nkeys, if set, are the public nkeys (U...) of users allowed to
	// connect; Users, if set, user names and their passwords. Either
	// admits only those users, who share the global account and its
	// JetStream.
	Nkeys []string
	Users map[string]string
}

// serverOptions are the server's options for o.
func (o Options) serverOptions() *server.Options {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: o.Name,
		Host:       o.Host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 1 << 20,
	}
	if o.TLS != nil {
		opts.TLS = true
		opts.TLSConfig = o.TLS
		opts.TLSVerify = o.TLS.ClientAuth == tls.RequireAndVerifyClientCert
	}
	for _, k := range o.Nkeys {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k})
	}
	for u, pw := range o.Users {
		opts.Users = append(opts.Users, &server.User{Username: u, Password: pw})
	}
	return opts
}

// Run starts one JetStream server and waits until it is ready.
func Run(o Options) (*server.Server, error) {
	opts := o.serverOptions()
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embednats: server not ready")
	}
	return s, nil
}

// Server starts a single-node JetStream server for t.
func Server(t testing.TB) *server.Server {
	t.Helper()
	s, err := Run(Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// Connect opens a client connection to s for t.
func Connect(t testing.TB, urls string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Cluster is a JetStream cluster running in this process.
type Cluster struct {
	Servers []*server.Server
	opts    []*server.Options
	ports   []int
	t       testing.TB
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// NewCluster starts n clustered JetStream servers and waits for a meta leader.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	routes := make([]int, n)
	for i := range routes {
		routes[i] = freePort(t)
	}
	var urls []string
	for _, p := range routes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	for i := 0; i < n; i++ {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: "gr-test",
				Host: "127.0.0.1",
				Port: routes[i],
			},
			Routes: server.RoutesFromStr(joinComma(urls)),
		}
		c.opts = append(c.opts, o)
		s := c.start(o)
		c.Servers = append(c.Servers, s)
		c.ports = append(c.ports, s.Addr().(*net.TCPAddr).Port)
	}
	t.Cleanup(c.Shutdown)
	c.WaitMetaLeader()
	return c
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

func (c *Cluster) start(o *server.Options) *server.Server {
	s, err := server.NewServer(o)
	if err != nil {
		c.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatal("embednats: cluster node not ready")
	}
	return s
}

// WaitMetaLeader waits until the JetStream meta group has a leader.
func (c *Cluster) WaitMetaLeader() {
	c.t.Helper()
	testutil.WaitFor(c.t, 20*time.Second, "embednats: a JetStream meta leader", func() bool {
		for _, s := range c.Servers {
			if s != nil && s.Running() && s.JetStreamIsLeader() {
				return true
			}
		}
		return false
	})
}

// URLs returns the client URLs of the running servers.
func (c *Cluster) URLs() string {
	var urls []string
	for _, s := range c.Servers {
		if s != nil && s.Running() {
			urls = append(urls, s.ClientURL())
		}
	}
	return joinComma(urls)
}

// StreamLeader returns the index of the server leading the stream, or -1.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.Servers {
		if s == nil || !s.Running() {
			continue
		}
		if s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// Kill shuts server i down abruptly.
func (c *Cluster) Kill(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
}

// Restart starts server i again with its old options and store.
func (c *Cluster) Restart(i int) {
	o := c.opts[i].Clone()
	o.Port = c.ports[i]
	c.Servers[i] = c.start(o)
}

// Shutdown stops every server.
func (c *Cluster) Shutdown() {
	for _, s := range c.Servers {
		if s != nil {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
}
