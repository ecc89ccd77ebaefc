// Package localproc runs an installation as local processes, as the
// cluster benchmark suite (gamerelay bench --suite --cluster) and the
// fault suite do: children that die with their parent, ports on
// 127.0.0.1 that stay free, and the NATS nodes' configuration.
package localproc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// Spawner starts every child from one goroutine locked to its OS thread:
// Linux delivers Pdeathsig when the thread that forked a child ends, and
// Go ends a thread only when a goroutine locked to it exits, so children
// started with Pdeathsig die with this process and not before.
type Spawner struct {
	reqs chan spawnReq
	quit chan struct{}
	once sync.Once
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

// ErrSpawnerClosed is Start's error after Close.
var ErrSpawnerClosed = errors.New("localproc: spawner closed")

// NewSpawner starts the spawner's thread.
func NewSpawner() *Spawner {
	s := &Spawner{reqs: make(chan spawnReq), quit: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends with the goroutine, after Close.
		for {
			select {
			case r := <-s.reqs:
				r.err <- r.cmd.Start()
			case <-s.quit:
				return
			}
		}
	}()
	return s
}

// Start starts cmd on the spawner's thread.
func (s *Spawner) Start(cmd *exec.Cmd) error {
	r := spawnReq{cmd: cmd, err: make(chan error, 1)}
	select {
	case s.reqs <- r:
		return <-r.err
	case <-s.quit:
		return ErrSpawnerClosed
	}
}

// Close ends the spawner's thread; call it after every child is dead.
func (s *Spawner) Close() { s.once.Do(func() { close(s.quit) }) }

// HostPort is port on 127.0.0.1.
func HostPort(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// FreePorts picks n distinct free ports on 127.0.0.1 below the kernel's
// ephemeral range (where outgoing connections take their local ports), so
// none is taken by a client connection before its server starts, or
// while its server is down between a kill and a restart.
func FreePorts(n int) ([]int, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				lo = v
			}
		}
	}
	const base = 10000
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, errors.New("localproc: no free ports")
		}
		addr := "127.0.0.1:0" // a range reaching down here: take any port
		if lo-base >= 1000 {
			addr = HostPort(base + rand.IntN(lo-base))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// NATSNode is one node of a local JetStream cluster.
type NATSNode struct {
	Name     string // server_name
	Cluster  string // cluster name
	Port     int    // clients
	HTTP     int    // monitoring
	Route    int    // this node's cluster port
	Routes   []int  // every node's cluster port, this one's included
	StoreDir string // JetStream
}

// Config is the node's configuration file. It follows
// deploy/k8s/nats-values.yaml where it matters to the suites: file
// storage, sync_interval 10s, and pings every second on client
// connections and routes, so the servers drop a hung peer (and the
// subscriptions behind it) within a few seconds instead of minutes.
func (n NATSNode) Config() string {
	var routes []string
	for _, p := range n.Routes {
		routes = append(routes, "nats-route://"+HostPort(p))
	}
	return fmt.Sprintf(`server_name: %s
listen: %q
http: %q
ping_interval: "1s"
ping_max: 3
jetstream {
  store_dir: %q
  sync_interval: "10s"
}
cluster {
  name: %s
  listen: %q
  routes: [%s]
  ping_interval: "1s"
  ping_max: 3
}
`, n.Name, HostPort(n.Port), HostPort(n.HTTP), n.StoreDir, n.Cluster, HostPort(n.Route), strings.Join(routes, ", "))
}
