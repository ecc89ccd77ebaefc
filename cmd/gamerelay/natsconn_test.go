package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
)

// nkeySeed writes a new user nkey's seed into a file and returns the file
// and the public key.
func nkeySeed(t *testing.T) (file, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	public, err = kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(file, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return file, public
}

// A role authenticates with --nats-nkey against a server that knows only
// its public key; without it, or with another seed, it is refused.
func TestNATSNkey(t *testing.T) {
	seed, public := nkeySeed(t)
	otherSeed, _ := nkeySeed(t)
	ns, err := embednats.Run(embednats.Options{StoreDir: t.TempDir(), Nkeys: []string{public}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	adm := freeAddr(t)
	seq := startRole(t, runSequencer, "--nats", ns.ClientURL(), "--nats-nkey", seed, "--admin", adm, "--log-level", "warn")
	waitReady(t, "http://"+adm+"/readyz", nil)
	if err := seq.stop(); err != nil {
		t.Fatalf("sequencer: %v", err)
	}
	for name, args := range map[string][]string{
		"no nkey":      nil,
		"another nkey": {"--nats-nkey", otherSeed},
	} {
		t.Run(name, func(t *testing.T) {
			r := startRole(t, runSequencer, append([]string{"--nats", ns.ClientURL(), "--admin", freeAddr(t), "--log-level", "warn"}, args...)...)
			r.waitLog(t, "nats connection attempts failed")
			if err := r.stop(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
				t.Fatalf("sequencer exit: %v, want an authorization violation", err)
			}
		})
	}
}

// The NATS flags are checked at start: a usage error names the flag.
func TestNATSFlagErrors(t *testing.T) {
	seed, _ := nkeySeed(t)
	notSeed := filepath.Join(t.TempDir(), "not-a-seed")
	if err := os.WriteFile(notSeed, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "flags")
	_, cert, key := ca.issue("client", false)
	for name, tc := range map[string]struct {
		args []string
		out  string
	}{
		"creds and nkey":        {[]string{"--nats-creds", seed, "--nats-nkey", seed}, "--nats-creds and --nats-nkey both set"},
		"missing creds":         {[]string{"--nats-creds", "/nonexistent/x.creds"}, "--nats-creds: stat /nonexistent/x.creds"},
		"missing nkey":          {[]string{"--nats-nkey", "/nonexistent/x.nk"}, "--nats-nkey: stat /nonexistent/x.nk"},
		"not a seed":            {[]string{"--nats-nkey", notSeed}, "--nats-nkey " + notSeed},
		"cert without key":      {[]string{"--nats-tls-cert", cert}, "--nats-tls-cert and --nats-tls-key go together"},
		"key without cert":      {[]string{"--nats-tls-key", key}, "go together"},
		"key of no cert":        {[]string{"--nats-tls-cert", cert, "--nats-tls-key", ca.File}, "--nats-tls-cert, --nats-tls-key:"},
		"CA file missing":       {[]string{"--nats-tls-ca", "/nonexistent/ca.pem"}, "--nats-tls-ca: open /nonexistent/ca.pem"},
		"CA file not PEM":       {[]string{"--nats-tls-ca", notSeed}, "--nats-tls-ca: no PEM certificate in " + notSeed},
		"zero ping":             {[]string{"--nats-ping-interval", "0s"}, "--nats-ping-interval 0s: want a positive duration"},
		"no pings out":          {[]string{"--nats-max-pings-out", "0"}, "--nats-max-pings-out 0: want at least 1"},
		"negative wait":         {[]string{"--nats-reconnect-wait", "-1s"}, "--nats-reconnect-wait -1s"},
		"zero timeout":          {[]string{"--nats-connect-timeout", "0s"}, "--nats-connect-timeout 0s"},
		"bad duration":          {[]string{"--nats-max-pings-out", "1", "--nats-ping-interval", "bad"}, "invalid value \"bad\""},
		"user without password": {[]string{"--nats-user", "u"}, "--nats-user and --nats-password-file go together"},
		"user and nkey":         {[]string{"--nats-user", "u", "--nats-password-file", seed, "--nats-nkey", seed}, "authenticate one way"},
		"user and URL":          {[]string{"--nats", "nats://a:b@h", "--nats-user", "u", "--nats-password-file", seed}, "--nats-user with credentials in the --nats URL"},
		"empty password":        {[]string{"--nats-user", "u", "--nats-password-file", emptyFile}, "--nats-password-file: " + emptyFile + " is empty"},
		"malformed URL":         {[]string{"--nats", "nats://u:p%zz@h"}, "--nats: nats://u:xxxxx@h is not a valid URL"},
	} {
		t.Run(name, func(t *testing.T) {
			for role, base := range map[string][]string{"sequencer": nil, "gateway": {"--allow-anonymous"}, "archiver": {"--mongo", "mongodb://h/"}} {
				var out bytes.Buffer
				args := append(append([]string{role}, base...), tc.args...)
				if code := run(args, &out, &out); code != 2 || !strings.Contains(out.String(), tc.out) {
					t.Fatalf("%s: exit %d, want 2; output lacks %q?\n%s", role, code, tc.out, out.String())
				}
			}
		})
	}
}

// The NATS connection flags reach every connection's options, with their
// defaults when not given.
func TestNATSConnectionOptions(t *testing.T) {
	ns := embednats.Server(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, tc := range map[string]struct {
		args                []string
		ping, wait, timeout time.Duration
		pingsOut            int
	}{
		"defaults": {nil, 500 * time.Millisecond, 100 * time.Millisecond, time.Second, 2},
		"flags": {[]string{"--nats-ping-interval", "2s", "--nats-max-pings-out", "3", "--nats-reconnect-wait", "250ms", "--nats-connect-timeout", "1500ms"},
			2 * time.Second, 250 * time.Millisecond, 1500 * time.Millisecond, 3},
	} {
		t.Run(name, func(t *testing.T) {
			var nf natsFlags
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			nf.register(fs)
			if err := fs.Parse(append([]string{"--nats", ns.ClientURL()}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			if err := nf.resolve(fs); err != nil {
				t.Fatal(err)
			}
			nc, err := connect(context.Background(), nf, "options-test", log, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			o := nc.Opts
			if o.PingInterval != tc.ping || o.MaxPingsOut != tc.pingsOut || o.ReconnectWait != tc.wait ||
				o.ReconnectJitter != tc.wait || o.ReconnectJitterTLS != tc.wait || o.Timeout != tc.timeout ||
				o.MaxReconnect != -1 || !o.RetryOnFailedConnect || o.Name != "options-test" {
				t.Fatalf("options: ping %v/%d, reconnect wait %v jitter %v/%v, timeout %v, max reconnects %d, retry %v, name %q",
					o.PingInterval, o.MaxPingsOut, o.ReconnectWait, o.ReconnectJitter, o.ReconnectJitterTLS, o.Timeout, o.MaxReconnect, o.RetryOnFailedConnect, o.Name)
			}
		})
	}
	// dev's connections have the defaults too.
	if d := natsDefaults("x"); d.pingInterval != defaultNATSPingInterval || d.maxPingsOut != defaultNATSMaxPingsOut ||
		d.reconnectWait != defaultNATSReconnectWait || d.connectTimeout != defaultNATSConnectTimeout {
		t.Fatalf("natsDefaults: %+v", d)
	}
}

// freezer forwards TCP connections to a server until frozen; then it
// stops moving bytes either way but keeps the connections open, as a
// server stopped with SIGSTOP does (the kernel still accepts new ones).
type freezer struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	t.Cleanup(f.close)
	go f.accept()
	return f
}

func (f *freezer) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		frozen := f.frozen
		f.mu.Unlock()
		if frozen {
			continue // accepted, never answered
		}
		s, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, s)
		f.mu.Unlock()
		go f.pipe(c, s)
		go f.pipe(s, c)
	}
}

func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		frozen := f.frozen
		f.mu.Unlock()
		if err != nil || frozen {
			return // a frozen server neither reads nor writes; its socket stays open
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
}

func (f *freezer) close() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

// A connection gives up on a server that stops answering (a hung or
// SIGSTOPped node) by its pings: it reports the stale connection and
// retries. With nats.go's defaults (a ping every 2 minutes) this would
// take minutes; the deadline of the poll below is far above the bound of
// the default flags (about 1.5 s) and far below nats.go's.
func TestNATSNoticesHungServer(t *testing.T) {
	ns := embednats.Server(t)
	fz := newFreezer(t, ns.Addr().String())
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	nc, err := connect(context.Background(), natsDefaults("nats://"+fz.ln.Addr().String()), "hung-test", log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	fz.freeze()
	noticed := false
	defer func() {
		if !noticed {
			t.Logf("log:\n%s", logs.String())
		}
	}()
	testutil.WaitFor(t, 20*time.Second, "a stale connection to the hung server in the log", func() bool {
		return strings.Contains(logs.String(), "stale connection")
	})
	noticed = true
	if nc.IsConnected() {
		t.Fatal("still connected to a hung server")
	}
}

// A role authenticates with --nats-user and --nats-password-file, and
// reads the file again at every connection: after the password is
// rotated (file first, then the server's configuration, which closes the
// connections it no longer admits) the role reconnects without a restart.
func TestNATSPasswordFile(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	write := func(pw string) {
		// As kubelet updates a mounted Secret: a new file renamed over.
		tmp := filepath.Join(dir, "password.tmp")
		if err := os.WriteFile(tmp, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, pwFile); err != nil {
			t.Fatal(err)
		}
	}
	write("first-PASSWORD")
	// The NATS server runs in a child process, as nats-server would: a
	// reload that drops clients while they reconnect trips a data race
	// inside nats-server, which the race detector would pin on this test.
	node := startChildNATS(t, "gamerelay-sequencer", "first-PASSWORD")

	adm := freeAddr(t)
	seq := startRole(t, runSequencer, "--nats", node.url, "--nats-user", "gamerelay-sequencer", "--nats-password-file", pwFile, "--admin", adm, "--log-level", "info")
	waitReady(t, "http://"+adm+"/readyz", nil)

	write("second-PASSWORD")
	node.reload(t, "gamerelay-sequencer", "second-PASSWORD")
	seq.waitLog(t, "nats disconnected")
	seq.waitLog(t, "nats reconnected")
	waitReady(t, "http://"+adm+"/readyz", nil)
	if err := seq.stop(); err != nil {
		t.Fatalf("sequencer: %v", err)
	}
	if strings.Contains(seq.log.String(), "PASSWORD") {
		t.Fatalf("the log shows a password:\n%s", seq.log.String())
	}

	// A wrong password is refused.
	write("wrong-PASSWORD")
	r := startRole(t, runSequencer, "--nats", node.url, "--nats-user", "gamerelay-sequencer", "--nats-password-file", pwFile, "--admin", freeAddr(t), "--log-level", "warn")
	r.waitLog(t, "nats connection attempts failed")
	if err := r.stop(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") || strings.Contains(err.Error(), "PASSWORD") {
		t.Fatalf("sequencer exit: %v, want an authorization violation", err)
	}
}

// childNATS is a NATS server with JetStream run by this test binary in a
// process of its own (benchChild), from a configuration file.
type childNATS struct {
	url, conf, dir string
	cmd            *exec.Cmd
	log            *syncBuffer
}

func startChildNATS(t *testing.T, user, password string) *childNATS {
	t.Helper()
	dir := t.TempDir()
	n := &childNATS{url: "nats://" + freeAddr(t), conf: filepath.Join(dir, "nats.conf"), dir: dir, log: &syncBuffer{}}
	n.writeConf(t, user, password)
	n.cmd = exec.Command(os.Args[0], "-c", n.conf)
	n.cmd.Env = append(os.Environ(), benchChildEnv)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		_ = n.cmd.Wait()
	})
	testutil.WaitFor(t, 20*time.Second, "the NATS child listening", func() bool {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(n.url, "nats://"), time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return n
}

func (n *childNATS) writeConf(t *testing.T, user, password string) {
	t.Helper()
	conf := fmt.Sprintf("listen: %q\njetstream { store_dir: %q }\nauthorization { users = [ { user: %q, password: %q } ] }\n",
		strings.TrimPrefix(n.url, "nats://"), filepath.Join(n.dir, "js"), user, password)
	if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload changes the user's password and makes the server re-read its
// configuration (SIGHUP).
func (n *childNATS) reload(t *testing.T, user, password string) {
	t.Helper()
	n.writeConf(t, user, password)
	before := strings.Count(n.log.String(), "reloaded")
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the NATS child reloaded", func() bool {
		return strings.Count(n.log.String(), "reloaded") > before
	})
}
