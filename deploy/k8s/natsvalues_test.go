// Package k8s_test checks deploy/k8s/nats-values.yaml against a real NATS
// server: the users and permissions it gives each gamerelay role must let
// the roles do their work and nothing else.
package k8s_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"sigs.k8s.io/yaml"

	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// tlsValues are the NATS chart's values of one TLS block.
type tlsValues struct {
	Enabled    bool           `json:"enabled"`
	SecretName string         `json:"secretName"`
	Merge      map[string]any `json:"merge"`
}

// natsValuesServer runs a NATS server with the accounts and users of
// nats-values.yaml (each password "pw-" + user) and its client TLS
// settings, with certificates of a CA made for the test, and returns its
// URL and the client side of that PKI.
func natsValuesServer(t *testing.T) (string, *testPKI) {
	t.Helper()
	raw, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		TLSCA struct {
			Enabled    bool   `json:"enabled"`
			SecretName string `json:"secretName"`
			Key        string `json:"key"`
		} `json:"tlsCA"`
		Config struct {
			Nats struct {
				TLS tlsValues `json:"tls"`
			} `json:"nats"`
			Cluster struct {
				TLS tlsValues `json:"tls"`
			} `json:"cluster"`
			Merge struct {
				Accounts map[string]struct {
					JetStream string           `json:"jetstream"`
					Users     []map[string]any `json:"users"`
				} `json:"accounts"`
			} `json:"merge"`
		} `json:"config"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	// TLS on client connections (clients verified) and on routes, with
	// the CA mounted by the chart's tlsCA.
	ca, client, cluster := values.TLSCA, values.Config.Nats.TLS, values.Config.Cluster.TLS
	caFile := "/etc/nats-ca-cert/" + ca.Key
	switch {
	case !ca.Enabled || ca.SecretName == "" || ca.Key == "":
		t.Fatalf("nats-values.yaml: tlsCA %+v: want the CA of the certificates", ca)
	case !client.Enabled || client.SecretName == "" || client.Merge["verify"] != true || client.Merge["ca_file"] != caFile:
		t.Fatalf("nats-values.yaml: config.nats.tls %+v: want TLS verifying clients against %s", client, caFile)
	case !cluster.Enabled || cluster.SecretName == "" || cluster.Merge["ca_file"] != caFile:
		t.Fatalf("nats-values.yaml: config.cluster.tls %+v: want TLS on routes against %s", cluster, caFile)
	}
	pki := newTestPKI(t)
	serverTLS := map[string]any{}
	for k, v := range client.Merge {
		serverTLS[k] = v
	}
	serverTLS["cert_file"], serverTLS["key_file"], serverTLS["ca_file"] = pki.serverCert, pki.serverKey, pki.caFile
	accounts := values.Config.Merge.Accounts
	if len(accounts) == 0 {
		t.Fatal("nats-values.yaml: no accounts under config.merge.accounts")
	}
	for _, acc := range accounts {
		for _, u := range acc.Users {
			if pw, _ := u["password"].(string); !strings.HasPrefix(pw, "<< $") {
				t.Fatalf("user %v: password %q is not taken from the environment", u["user"], pw)
			}
			u["password"] = "pw-" + u["user"].(string)
		}
	}
	// The NATS configuration format reads JSON (without \u escapes).
	var conf bytes.Buffer
	enc := json.NewEncoder(&conf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{
		"listen":    "127.0.0.1:-1",
		"jetstream": map[string]any{"store_dir": t.TempDir()},
		"accounts":  accounts,
		"tls":       serverTLS,
	}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, conf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-values.yaml as a server configuration: %v", err)
	}
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL(), pki
}

// violations collects a connection's permission errors.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) saw(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(e, "Permissions Violation for Publish to \""+subject+"\"") {
			return true
		}
	}
	return false
}

func (v *violations) list() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.errs...)
}

// connectAs connects as user with a client certificate of pki.
func connectAs(t *testing.T, url string, pki *testPKI, user string, v *violations, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.UserInfo(user, "pw-"+user), pki.clientOption(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		v.mu.Lock()
		v.errs = append(v.errs, err.Error())
		v.mu.Unlock()
	})}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestNATSValuesPermissions: with the users of nats-values.yaml, a gateway
// with an embedded sequencer (the sequencer user) provisions the log,
// answers a plain gateway's append request (the gateway user), delivers to
// its own feeds in process and to the plain gateway's by live copies; the
// gateway user can write neither into the logs nor onto the live subjects.
// Head checks are off, so only the live paths can deliver.
func TestNATSValuesPermissions(t *testing.T) {
	url, pki := natsValuesServer(t)
	ctx := context.Background()

	// Without a client certificate, even the right password is refused.
	if nc, err := nats.Connect(url, nats.UserInfo("gamerelay-gateway", "pw-gamerelay-gateway"), nats.RootCAs(pki.caFile)); err == nil {
		nc.Close()
		t.Fatal("a client without a certificate was admitted")
	}
	cfg := sequencer.Config{Partitions: 2}
	liveOnly := sequencer.FeedConfig{CheckAfter: time.Hour, SweepInterval: time.Hour}
	var seqErrs, gwErrs violations

	// The gateway with an embedded sequencer, as `gamerelay gateway
	// --embed-sequencer` connects.
	embNC := connectAs(t, url, pki, "gamerelay-sequencer", &seqErrs)
	embLive := connectAs(t, url, pki, "gamerelay-sequencer", &seqErrs, nats.NoEcho())
	embFeeds, err := sequencer.NewFeeds(embLive, cfg, liveOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer embFeeds.Close()
	svc, err := sequencer.NewService(embNC, cfg, sequencer.WithLocalFeeds(embFeeds))
	if err != nil {
		t.Fatal(err)
	}
	svcCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(svcCtx, 5*time.Second) }()
	defer func() { stop(); <-done }()
	testutil.WaitFor(t, 10*time.Second, "the sequencer owning every partition", func() bool { return len(svc.Owned()) == cfg.Partitions })
	emb := sequencer.NewLocalFirst(svc, sequencer.NewClient(embNC, cfg))

	// A plain gateway.
	gwNC := connectAs(t, url, pki, "gamerelay-gateway", &gwErrs)
	gwLive := connectAs(t, url, pki, "gamerelay-gateway", &gwErrs, nats.NoEcho())
	gwFeeds, err := sequencer.NewFeeds(gwLive, cfg, liveOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer gwFeeds.Close()
	gw := sequencer.NewClient(gwNC, cfg)

	const game = "perm"
	var mu sync.Mutex
	got := map[string][]uint64{}
	for name, fs := range map[string]*sequencer.Feeds{"embedded": embFeeds, "plain": gwFeeds} {
		f, err := fs.Open(ctx, game)
		if err != nil {
			t.Fatalf("%s gateway opens a feed: %v", name, err)
		}
		defer f.Close()
		f.Subscribe(func(m sequencer.Stored) {
			mu.Lock()
			got[name] = append(got[name], m.ID)
			mu.Unlock()
		})
	}
	delivered := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got["embedded"]) == n && len(got["plain"]) == n
		}
	}

	body := []byte(`{"type":"move"}`)
	if r, err := gw.Append(ctx, game, body, ""); err != nil || r.MsgID != 1 {
		t.Fatalf("plain gateway's append: %+v %v", r, err)
	}
	testutil.WaitFor(t, 10*time.Second, "message 1 on both gateways", delivered(1))
	if r, err := emb.Append(ctx, game, body, ""); err != nil || r.MsgID != 2 {
		t.Fatalf("embedded gateway's append: %+v %v", r, err)
	}
	testutil.WaitFor(t, 10*time.Second, "message 2 on both gateways", delivered(2))

	// Both gateways record the games they create, and exchange audience
	// counts.
	for name, nc := range map[string]*nats.Conn{"embedded": embNC, "plain": gwNC} {
		games, err := sequencer.OpenGames(ctx, nc, cfg)
		if err != nil {
			t.Fatalf("%s gateway opens the games registry: %v", name, err)
		}
		if err := games.MarkCreated(ctx, "made-by-"+name); err != nil {
			t.Fatalf("%s gateway records a created game: %v", name, err)
		}
		if created, err := games.Created(ctx, "made-by-"+name); err != nil || !created {
			t.Fatalf("%s gateway reads the registry: %v %v", name, created, err)
		}
		if err := nc.Publish(wire.Names{}.AudienceAlive(), []byte(name)); err != nil {
			t.Fatal(err)
		}
	}

	// The gateway user may not write a log, a live subject or a lease
	// itself.
	p := wire.Partition(game, cfg.Partitions)
	for _, subj := range []string{wire.Names{}.LogSubject(p, game), wire.Names{}.LiveSubject(p, game), "$KV.gr_leases.lease.0"} {
		if err := gwNC.Publish(subj, body); err != nil {
			t.Fatal(err)
		}
		if err := gwNC.Flush(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, "the server refusing the gateway's publish to "+subj, func() bool { return gwErrs.saw(subj) })
	}
	// A server's permission errors come back in the order of the
	// publishes: the gateway user's last refusal above, and the sequencer
	// user's refusal of a subject it has no right to, come after any
	// refusal of the audience publishes.
	if err := embNC.Publish("not.allowed", body); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the server refusing the sequencer user's publish to not.allowed", func() bool { return seqErrs.saw("not.allowed") })
	for _, e := range seqErrs.list() {
		if !strings.Contains(e, `"not.allowed"`) {
			t.Fatalf("the sequencer user was refused: %s", e)
		}
	}
	for _, e := range gwErrs.list() {
		if !strings.Contains(e, "gr.log.") && !strings.Contains(e, "gr.live.") && !strings.Contains(e, "gr_leases") {
			t.Fatalf("the gateway user was refused: %s", e)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for name, ids := range got {
		if len(ids) != 2 || ids[0] != 1 || ids[1] != 2 {
			t.Fatalf("%s gateway delivered %v, want [1 2]", name, ids)
		}
	}
}
