package localproc

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// The ports are distinct and free: each can be listened on.
func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p <= 0 {
			t.Fatalf("ports %v: %d repeated or invalid", ports, p)
		}
		seen[p] = true
	}
	if len(ports) != 20 {
		t.Fatalf("%d ports, want 20", len(ports))
	}
}

// nats-server reads the configuration as the suites mean it.
func TestNATSNodeConfig(t *testing.T) {
	dir := t.TempDir()
	n := NATSNode{Name: "n1", Cluster: "bench", Port: 14222, HTTP: 18222, Route: 16222, Routes: []int{16221, 16222, 16223}, StoreDir: filepath.Join(dir, "js")}
	path := filepath.Join(dir, "n1.conf")
	if err := os.WriteFile(path, []byte(n.Config()), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, n.Config())
	}
	switch {
	case o.ServerName != "n1", o.Host != "127.0.0.1", o.Port != 14222, o.HTTPPort != 18222:
		t.Fatalf("server: %+v", o)
	case o.Cluster.Name != "bench", o.Cluster.Port != 16222, len(o.Routes) != 3:
		t.Fatalf("cluster: %+v, routes %v", o.Cluster, o.Routes)
	case !o.JetStream || o.StoreDir != n.StoreDir || o.SyncInterval.String() != "10s":
		t.Fatalf("jetstream: %v %q %v", o.JetStream, o.StoreDir, o.SyncInterval)
	case o.PingInterval.String() != "1s" || o.MaxPingsOut != 3:
		t.Fatalf("pings: %v %d", o.PingInterval, o.MaxPingsOut)
	}
}
