//go:build faults

package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/gamerelay/gamerelay/internal/localproc"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// The shape of the installation under test.
const (
	natsNodes  = 3
	sequencers = 2
	gateways   = 2
	partitions = 4
	replicas   = 3
	database   = "gamerelay"
)

// Command lines. Every process the suite starts gets its arguments here;
// FAULTS_EXTRA_FLAGS (every gamerelay role) and FAULTS_EXTRA_FLAGS_<ROLE>
// (SEQUENCER, GATEWAY, ARCHIVER, NATS) are appended, so a flag can be
// tried without editing the suite, e.g.
// FAULTS_EXTRA_FLAGS="--nats-ping-interval 2s".

// sequencerArgs is sequencer i's command line; incarnation makes its
// instance name new after each restart, as a new pod's would be.
func (tp *topology) sequencerArgs(i, incarnation int) []string {
	return tp.gamerelayArgs("sequencer",
		"--nats", tp.natsURLs,
		"--partitions", strconv.Itoa(partitions),
		"--replicas", strconv.Itoa(replicas),
		"--instance", fmt.Sprintf("seq%d-%d", i, incarnation),
		"--admin", localproc.HostPort(tp.seqAdmin[i]),
		"--log-format", "text",
	)
}

func (tp *topology) gatewayArgs(i int) []string {
	return tp.gamerelayArgs("gateway",
		"--nats", tp.natsURLs,
		"--partitions", strconv.Itoa(partitions),
		"--listen", localproc.HostPort(tp.gwPort[i]),
		"--admin", localproc.HostPort(tp.gwAdmin[i]),
		"--allow-anonymous",
		"--log-format", "text",
	)
}

func (tp *topology) archiverArgs() []string {
	return tp.gamerelayArgs("archiver",
		"--nats", tp.natsURLs,
		"--partitions", strconv.Itoa(partitions),
		"--mongo", tp.mongoURI(),
		"--db", database,
		"--admin", localproc.HostPort(tp.archAdmin),
		"--log-format", "text",
	)
}

func (tp *topology) gamerelayArgs(role string, args ...string) []string {
	argv := append([]string{tp.gamerelay, role}, args...)
	argv = append(argv, strings.Fields(os.Getenv("FAULTS_EXTRA_FLAGS"))...)
	return append(argv, strings.Fields(os.Getenv("FAULTS_EXTRA_FLAGS_"+strings.ToUpper(role)))...)
}

// natsArgs is node i's command line; natsConfig its configuration file.
func (tp *topology) natsArgs(i int) []string {
	argv := []string{tp.natsServer, "-c", filepath.Join(tp.dir, fmt.Sprintf("n%d.conf", i))}
	return append(argv, strings.Fields(os.Getenv("FAULTS_EXTRA_FLAGS_NATS"))...)
}

// natsConfig is node i's configuration (see localproc.NATSNode).
func (tp *topology) natsConfig(i int) string {
	return localproc.NATSNode{Name: fmt.Sprintf("n%d", i), Cluster: "faults", Port: tp.natsPort[i], HTTP: tp.natsHTTP[i],
		Route: tp.natsCluster[i], Routes: tp.natsCluster, StoreDir: filepath.Join(tp.dir, fmt.Sprintf("n%d", i))}.Config()
}

// mongoArgs runs this test binary as the MongoDB-wire server (TestMain).
func (tp *topology) mongoEnv() []string {
	return []string{
		childEnvRole + "=mongo",
		childEnvMongoAddr + "=" + localproc.HostPort(tp.mongoPort),
		childEnvMongoDir + "=" + filepath.Join(tp.dir, "ferretdb"),
	}
}

func (tp *topology) mongoURI() string { return "mongodb://" + localproc.HostPort(tp.mongoPort) + "/" }

// topology is the running installation: every process, its ports, and
// the suite's own connections to NATS and MongoDB for the checks.
type topology struct {
	// Static after construction.
	dir        string // run directory: configuration, data, logs
	gamerelay  string // binary
	natsServer string // binary
	sp         *localproc.Spawner
	natsPort   []int
	natsHTTP   []int
	natsURLs   string
	natsCluster,
	seqAdmin, gwPort, gwAdmin []int
	archAdmin, mongoPort int
	nats                 []*proc
	seqs, gws            []*proc
	arch, mongo          *proc
	mc                   *mongo.Client

	mu      sync.Mutex
	seqInc  []int  // incarnation of each sequencer
	gwAlive []bool // gateways players may connect to
}

// startTopology starts everything and waits until it is ready; t.Cleanup
// kills whatever still runs.
func startTopology(t *testing.T, dir, gamerelay, natsServer string) *topology {
	began := time.Now()
	ports, err := localproc.FreePorts(3*natsNodes + sequencers + 2*gateways + 2)
	if err != nil {
		t.Fatal(err)
	}
	take := func(n int) []int { p := ports[:n]; ports = ports[n:]; return p }
	tp := &topology{
		dir: dir, gamerelay: gamerelay, natsServer: natsServer, sp: localproc.NewSpawner(),
		natsPort: take(natsNodes), natsHTTP: take(natsNodes), natsCluster: take(natsNodes),
		seqAdmin: take(sequencers), gwPort: take(gateways), gwAdmin: take(gateways),
		seqInc: make([]int, sequencers), gwAlive: make([]bool, gateways),
	}
	tp.archAdmin, tp.mongoPort = take(1)[0], take(1)[0]
	var urls []string
	for _, p := range tp.natsPort {
		urls = append(urls, "nats://"+localproc.HostPort(p))
	}
	tp.natsURLs = strings.Join(urls, ",")
	t.Cleanup(tp.cleanup)

	logf := func(name string) string { return filepath.Join(dir, name+".log") }
	for i := range natsNodes {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("n%d.conf", i)), []byte(tp.natsConfig(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		tp.nats = append(tp.nats, &proc{name: fmt.Sprintf("nats n%d", i), argv: tp.natsArgs(i), logPath: logf(fmt.Sprintf("nats-n%d", i)), sp: tp.sp})
	}
	tp.mongo = &proc{name: "mongodb (ferretdb)", argv: []string{os.Args[0]}, env: tp.mongoEnv(), logPath: logf("ferretdb"), sp: tp.sp}
	for i := range sequencers {
		tp.seqs = append(tp.seqs, &proc{name: fmt.Sprintf("sequencer %d", i), logPath: logf(fmt.Sprintf("sequencer-%d", i)), sp: tp.sp})
	}
	for i := range gateways {
		tp.gws = append(tp.gws, &proc{name: fmt.Sprintf("gateway %d", i), argv: tp.gatewayArgs(i), logPath: logf(fmt.Sprintf("gateway-%d", i)), sp: tp.sp})
	}
	tp.arch = &proc{name: "archiver", argv: tp.archiverArgs(), logPath: logf("archiver"), sp: tp.sp}

	for _, n := range tp.nats {
		if err := n.start(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range natsNodes {
		if err := tp.waitNATS(i, healTimeout); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("NATS cluster ready in %v", time.Since(began).Round(time.Millisecond))
	if err := tp.mongo.start(); err != nil {
		t.Fatal(err)
	}
	tp.mc, err = mongo.Connect(options.Client().ApplyURI(tp.mongoURI()).SetAppName("faults").
		SetServerSelectionTimeout(5 * time.Second).SetTimeout(20 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.waitMongo(healTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("MongoDB ready in %v", time.Since(began).Round(time.Millisecond))
	// One after the other: the first provisions the streams.
	for i := range sequencers {
		if err := tp.startSequencer(i); err != nil {
			t.Fatal(err)
		}
		if err := waitReady(tp.seqs[i], tp.seqAdmin[i], healTimeout); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("sequencers ready in %v", time.Since(began).Round(time.Millisecond))
	for i := range gateways {
		if err := tp.startGateway(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tp.startArchiver(); err != nil {
		t.Fatal(err)
	}
	t.Logf("gateways and archiver ready in %v", time.Since(began).Round(time.Millisecond))
	return tp
}

func (tp *topology) cleanup() {
	all := append([]*proc{}, tp.gws...)
	all = append(all, tp.arch)
	all = append(all, tp.seqs...)
	all = append(all, tp.mongo)
	all = append(all, tp.nats...)
	var wg sync.WaitGroup
	for _, p := range all {
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); p.cleanup() }()
	}
	wg.Wait()
	if tp.mc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = tp.mc.Disconnect(ctx)
		cancel()
	}
	tp.sp.Close()
}

func (tp *topology) startSequencer(i int) error {
	tp.mu.Lock()
	tp.seqInc[i]++
	tp.seqs[i].argv = tp.sequencerArgs(i, tp.seqInc[i])
	tp.mu.Unlock()
	return tp.seqs[i].start()
}

// startGateway starts gateway i and, once ready, offers it to players.
func (tp *topology) startGateway(i int) error {
	if err := tp.gws[i].start(); err != nil {
		return err
	}
	if err := waitReady(tp.gws[i], tp.gwAdmin[i], healTimeout); err != nil {
		return err
	}
	tp.setGatewayAlive(i, true)
	return nil
}

func (tp *topology) startArchiver() error {
	if err := tp.arch.start(); err != nil {
		return err
	}
	return waitReady(tp.arch, tp.archAdmin, healTimeout)
}

func (tp *topology) setGatewayAlive(i int, alive bool) {
	tp.mu.Lock()
	tp.gwAlive[i] = alive
	tp.mu.Unlock()
}

// aliveGateways returns the public ports of the gateways players may use.
func (tp *topology) aliveGateways() []int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var ports []int
	for i, ok := range tp.gwAlive {
		if ok {
			ports = append(ports, tp.gwPort[i])
		}
	}
	return ports
}

// waitReady polls p's /readyz until it answers 200.
func waitReady(p *proc, admin int, d time.Duration) error {
	return waitHTTP(p, "http://"+localproc.HostPort(admin)+"/readyz", d)
}

// waitNATS polls node i's /healthz, which is 200 once its JetStream
// assets are current.
func (tp *topology) waitNATS(i int, d time.Duration) error {
	return waitHTTP(tp.nats[i], "http://"+localproc.HostPort(tp.natsHTTP[i])+"/healthz", d)
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func waitHTTP(p *proc, url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	last := errors.New("no answer")
	for time.Now().Before(deadline) {
		if !p.running() {
			return fmt.Errorf("%s: exited while waiting for %s (log: %s)", p.name, url, p.logPath)
		}
		resp, err := httpClient.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s not OK within %v: %v (log: %s)", p.name, url, d, last, p.logPath)
}

func (tp *topology) waitMongo(d time.Duration) error {
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if !tp.mongo.running() {
			return fmt.Errorf("%s: exited (log: %s)", tp.mongo.name, tp.mongo.logPath)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = tp.mc.Ping(ctx, nil)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("mongodb not answering within %v: %v", d, err)
}

// healthy waits until every process runs and is ready: the state each
// scenario starts from and heals to.
func (tp *topology) healthy(d time.Duration) error {
	var errs []error
	for i := range natsNodes {
		errs = append(errs, tp.waitNATS(i, d))
	}
	errs = append(errs, tp.waitMongo(d))
	for i := range sequencers {
		errs = append(errs, waitReady(tp.seqs[i], tp.seqAdmin[i], d))
	}
	for i := range gateways {
		errs = append(errs, waitReady(tp.gws[i], tp.gwAdmin[i], d))
	}
	errs = append(errs, waitReady(tp.arch, tp.archAdmin, d))
	return errors.Join(errs...)
}

// takeUnexpected returns every exit the suite did not cause since the
// last call, and restarts those processes.
func (tp *topology) takeUnexpected() []string {
	var out []string
	restart := func(p *proc, start func() error) {
		u := p.takeUnexpected()
		out = append(out, u...)
		if len(u) > 0 && !p.running() {
			if err := start(); err != nil {
				out = append(out, fmt.Sprintf("restarting %s: %v", p.name, err))
			}
		}
	}
	for _, n := range tp.nats {
		restart(n, n.start)
	}
	restart(tp.mongo, tp.mongo.start)
	for i, s := range tp.seqs {
		restart(s, func() error { return tp.startSequencer(i) })
	}
	for i, g := range tp.gws {
		restart(g, func() error { tp.setGatewayAlive(i, false); return tp.startGateway(i) })
	}
	restart(tp.arch, tp.startArchiver)
	return out
}

// js connects the suite to the NATS nodes that are not stopped; the
// caller closes the connection. A fresh connection per use never sits on
// a node that was stopped since.
func (tp *topology) js() (*nats.Conn, jetstream.JetStream, error) {
	var urls []string
	for i, n := range tp.nats {
		n.mu.Lock()
		ok := !n.stopped
		n.mu.Unlock()
		if ok && n.running() {
			urls = append(urls, "nats://"+localproc.HostPort(tp.natsPort[i]))
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Name("faults"), nats.Timeout(2*time.Second),
		nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2), nats.MaxReconnects(-1))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(5*time.Second))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// natsLeader returns the node leading the most partition streams (then
// the most streams of any kind: the lease and head buckets), and the
// leaders.
func (tp *topology) natsLeader() (int, string, error) {
	logs, all, leads, err := tp.streamLeaders()
	if err != nil {
		return -1, "", err
	}
	best := 0
	for i := range natsNodes {
		if logs[i] > logs[best] || logs[i] == logs[best] && all[i] > all[best] {
			best = i
		}
	}
	if all[best] == 0 {
		return -1, "", errors.New("no stream has a leader")
	}
	return best, leads, nil
}

// streamLeaders counts, per node, the partition streams and all streams
// it leads, as JetStream's stream info tells.
func (tp *topology) streamLeaders() (logs, all []int, leads string, err error) {
	nc, js, err := tp.js()
	if err != nil {
		return nil, nil, "", err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	logs, all = make([]int, natsNodes), make([]int, natsNodes)
	var led []string
	names := wire.Names{}
	lister := js.ListStreams(ctx)
	for si := range lister.Info() {
		if si.Cluster == nil || si.Cluster.Leader == "" {
			continue
		}
		i, err := strconv.Atoi(strings.TrimPrefix(si.Cluster.Leader, "n"))
		if err != nil || i < 0 || i >= natsNodes {
			continue
		}
		all[i]++
		for p := range partitions {
			if si.Config.Name == names.Stream(p) {
				logs[i]++
			}
		}
		led = append(led, si.Config.Name+"→"+si.Cluster.Leader)
	}
	if err := lister.Err(); err != nil {
		return nil, nil, "", err
	}
	sort.Strings(led)
	return logs, all, strings.Join(led, " "), nil
}

// natsBusiest returns the node that most gamerelay processes' NATS
// connections are attached to (what a hang of that node leaves hanging),
// among those the one leading the most streams, and what each holds.
func (tp *topology) natsBusiest() (int, string, error) {
	logs, all, leads, err := tp.streamLeaders()
	if err != nil {
		return -1, "", err
	}
	conns := make([]int, natsNodes)
	var desc []string
	for i := range natsNodes {
		resp, err := httpClient.Get("http://" + localproc.HostPort(tp.natsHTTP[i]) + "/connz?limit=1024")
		if err != nil {
			return -1, "", err
		}
		var cz struct {
			Connections []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		err = json.NewDecoder(resp.Body).Decode(&cz)
		resp.Body.Close()
		if err != nil {
			return -1, "", fmt.Errorf("nats n%d /connz: %w", i, err)
		}
		var names []string
		for _, c := range cz.Connections {
			if name, ok := strings.CutPrefix(c.Name, "gamerelay-"); ok {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		conns[i] = len(names)
		desc = append(desc, fmt.Sprintf("n%d: %s", i, strings.Join(names, ",")))
	}
	best := 0
	for i := range natsNodes {
		if conns[i] > conns[best] || conns[i] == conns[best] && (logs[i] > logs[best] || logs[i] == logs[best] && all[i] > all[best]) {
			best = i
		}
	}
	return best, "connections " + strings.Join(desc, "; ") + "; leaders " + leads, nil
}

// sequencerOwningMost returns the sequencer holding the most partition
// leases (by its instance name), and the leases.
func (tp *topology) sequencerOwningMost() (int, string, error) {
	nc, js, err := tp.js()
	if err != nil {
		return -1, "", err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, wire.Names{}.LeaseBucket())
	if err != nil {
		return -1, "", err
	}
	tp.mu.Lock()
	inc := append([]int(nil), tp.seqInc...)
	tp.mu.Unlock()
	owned := make([]int, sequencers)
	var leases []string
	for p := range partitions {
		e, err := kv.Get(ctx, "lease."+strconv.Itoa(p))
		if err != nil {
			leases = append(leases, fmt.Sprintf("%d→none", p))
			continue
		}
		v := string(e.Value())
		leases = append(leases, fmt.Sprintf("%d→%s", p, v))
		for i := range sequencers {
			if v == fmt.Sprintf("seq%d-%d", i, inc[i]) {
				owned[i]++
			}
		}
	}
	best := 0
	for i := range sequencers {
		if owned[i] > owned[best] {
			best = i
		}
	}
	return best, strings.Join(leases, " "), nil
}

// buildGamerelay returns $FAULTS_GAMERELAY (`make test-faults` builds
// it), or builds the binary into dir.
func buildGamerelay(t *testing.T, dir string) string {
	if p := os.Getenv("FAULTS_GAMERELAY"); p != "" {
		return p
	}
	out := filepath.Join(dir, "gamerelay")
	cmd := exec.Command("go", "build", "-o", out, "github.com/gamerelay/gamerelay/cmd/gamerelay")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// findNATSServer returns $FAULTS_NATS_SERVER, or the nats-server that
// `make test-faults` installs: bin/tools/nats-server-<version in go.mod>.
func findNATSServer(t *testing.T) string {
	if p := os.Getenv("FAULTS_NATS_SERVER"); p != "" {
		return p
	}
	f, err := os.Open("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == "github.com/nats-io/nats-server/v2" {
			p, _ := filepath.Abs("../../bin/tools/nats-server-" + fs[1])
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("no %s: run `make test-faults`, or set FAULTS_NATS_SERVER", p)
			}
			return p
		}
	}
	t.Fatal("go.mod does not require github.com/nats-io/nats-server/v2")
	return ""
}
