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

	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// natsValuesServer runs a NATS server with the accounts and users of
// nats-values.yaml (each password "pw-" + user) and returns its URL.
func natsValuesServer(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Config struct {
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
	return s.ClientURL()
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

func connectAs(t *testing.T, url, user string, v *violations, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.UserInfo(user, "pw-"+user), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
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

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNATSValuesPermissions: with the users of nats-values.yaml, a gateway
// with an embedded sequencer (the sequencer user) provisions the log,
// answers a plain gateway's append request (the gateway user), delivers to
// its own feeds in process and to the plain gateway's by live copies; the
// gateway user can write neither into the logs nor onto the live subjects.
// Head checks are off, so only the live paths can deliver.
func TestNATSValuesPermissions(t *testing.T) {
	url := natsValuesServer(t)
	ctx := context.Background()
	cfg := sequencer.Config{Partitions: 2}
	liveOnly := sequencer.FeedConfig{CheckAfter: time.Hour, SweepInterval: time.Hour}
	var seqErrs, gwErrs violations

	// The gateway with an embedded sequencer, as `gamerelay gateway
	// --embed-sequencer` connects.
	embNC := connectAs(t, url, "gamerelay-sequencer", &seqErrs)
	embLive := connectAs(t, url, "gamerelay-sequencer", &seqErrs, nats.NoEcho())
	embFeeds, err := sequencer.NewFeeds(embLive, cfg, liveOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer embFeeds.Close()
	svc, err := sequencer.NewService(embNC, cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc.LocalFeeds(embFeeds)
	svcCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(svcCtx, 5*time.Second) }()
	defer func() { stop(); <-done }()
	waitFor(t, "the sequencer owning every partition", func() bool { return len(svc.Owned()) == cfg.Partitions })
	emb := sequencer.NewLocalFirst(svc, sequencer.NewClient(embNC, cfg))

	// A plain gateway.
	gwNC := connectAs(t, url, "gamerelay-gateway", &gwErrs)
	gwLive := connectAs(t, url, "gamerelay-gateway", &gwErrs, nats.NoEcho())
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
	waitFor(t, "message 1 on both gateways", delivered(1))
	if r, err := emb.Append(ctx, game, body, ""); err != nil || r.MsgID != 2 {
		t.Fatalf("embedded gateway's append: %+v %v", r, err)
	}
	waitFor(t, "message 2 on both gateways", delivered(2))

	// The gateway user may not write a log or a live subject itself.
	p := wire.Partition(game, cfg.Partitions)
	for _, subj := range []string{wire.Names{}.LogSubject(p, game), wire.Names{}.LiveSubject(p, game)} {
		if err := gwNC.Publish(subj, body); err != nil {
			t.Fatal(err)
		}
		if err := gwNC.Flush(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the server refusing the gateway's publish to "+subj, func() bool { return gwErrs.saw(subj) })
	}
	if errs := seqErrs.list(); len(errs) > 0 {
		t.Fatalf("the sequencer user was refused: %v", errs)
	}
	for _, e := range gwErrs.list() {
		if !strings.Contains(e, "gr.log.") && !strings.Contains(e, "gr.live.") {
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
