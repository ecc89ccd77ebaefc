//go:build faults

package faults

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Durations and sizes of the suite, in one place.
const (
	numGames       = 20
	playersPerGame = 2

	loadBefore    = 5 * time.Second  // load before each fault
	loadAfter     = 5 * time.Second  // load after healing, before the checks
	natsKillDown  = 10 * time.Second // a killed NATS node stays down
	sequencerDown = 5 * time.Second  // a killed sequencer stays down (its leases expire after 10 s regardless)
	archiverDown  = 20 * time.Second
	natsHangShort = 20 * time.Second // SIGSTOP → SIGCONT
	natsHangLong  = 60 * time.Second
	mongoHang     = 20 * time.Second
	mongoDown     = 20 * time.Second

	drainTimeout   = 30 * time.Second // SIGTERM to exit (the gateway drains for up to 20 s)
	healTimeout    = 60 * time.Second // a restarted process is ready
	catchUpTimeout = 60 * time.Second // after the load stops, every player reaches its game's head
	archiveTimeout = 90 * time.Second // then the archive equals the log
	archiveRescan  = 10 * time.Second // between full comparisons of the archive
	checkAllowance = 40 * time.Second // healing and checks when all goes well (budget)
	cleanupMargin  = 20 * time.Second // left before the test's -timeout for cleaning up
)

// scenario is one fault: inject it and heal; the checks judge what
// happened. fault returns an error only when the suite could not do its
// part (a process would not stop or start).
type scenario struct {
	name  string
	about string
	down  time.Duration // how long the fault lasts (budget)
	fault func(r *run) error
	// optional scenarios are skipped, not failed, when the time left
	// before the test's -timeout is too short for them.
	optional bool
}

// scenarios in the order they run; the last, longest one is optional.
func scenarios() []scenario {
	return []scenario{
		{name: "baseline", about: "no fault", fault: func(*run) error { return nil }},
		{name: "nats-leader-kill", about: fmt.Sprintf("kill -9 the NATS node leading the most streams, restart it after %v", natsKillDown), down: natsKillDown,
			fault: func(r *run) error {
				i, err := r.natsLeader()
				if err != nil {
					return err
				}
				if err := r.tp.nats[i].kill(); err != nil {
					return err
				}
				r.event("killed nats n%d", i)
				time.Sleep(natsKillDown)
				if err := r.tp.nats[i].start(); err != nil {
					return err
				}
				if err := r.tp.waitNATS(i, healTimeout); err != nil {
					return err
				}
				r.event("nats n%d back and current", i)
				return nil
			}},
		{name: "sequencer-kill", about: fmt.Sprintf("kill -9 the sequencer holding the most partitions, restart it after %v", sequencerDown), down: sequencerDown,
			fault: func(r *run) error {
				i, leases, err := r.tp.sequencerOwningMost()
				if err != nil {
					return err
				}
				r.event("leases %s", leases)
				if err := r.tp.seqs[i].kill(); err != nil {
					return err
				}
				r.event("killed sequencer %d", i)
				time.Sleep(sequencerDown)
				if err := r.tp.startSequencer(i); err != nil {
					return err
				}
				if err := waitReady(r.tp.seqs[i], r.tp.seqAdmin[i], healTimeout); err != nil {
					return err
				}
				r.event("sequencer %d back", i)
				return nil
			}},
		{name: "gateway-sigterm", about: "SIGTERM a gateway (it drains: its clients get 1001), restart it",
			fault: func(r *run) error {
				r.tp.setGatewayAlive(0, false)
				start := time.Now()
				if err := r.tp.gws[0].term(drainTimeout); err != nil {
					return err
				}
				r.event("gateway 0 drained and exited in %v", time.Since(start).Round(time.Millisecond))
				if err := r.tp.startGateway(0); err != nil {
					return err
				}
				r.event("gateway 0 back")
				return nil
			}},
		{name: "gateway-kill", about: "kill -9 a gateway, restart it",
			fault: func(r *run) error {
				r.tp.setGatewayAlive(1, false)
				if err := r.tp.gws[1].kill(); err != nil {
					return err
				}
				r.event("killed gateway 1")
				if err := r.tp.startGateway(1); err != nil {
					return err
				}
				r.event("gateway 1 back")
				return nil
			}},
		{name: "archiver-kill", about: fmt.Sprintf("kill -9 the archiver, restart it after %v", archiverDown), down: archiverDown,
			fault: func(r *run) error {
				if err := r.tp.arch.kill(); err != nil {
					return err
				}
				r.event("killed the archiver")
				time.Sleep(archiverDown)
				if err := r.tp.startArchiver(); err != nil {
					return err
				}
				r.event("archiver back")
				return nil
			}},
		{name: hangName(natsHangShort), about: fmt.Sprintf("SIGSTOP the NATS node most gamerelay connections are on for %v, then SIGCONT", natsHangShort),
			down: natsHangShort, fault: func(r *run) error { return r.hangNATS(natsHangShort) }},
		{name: "mongo-hang", about: fmt.Sprintf("SIGSTOP the MongoDB server for %v, then SIGCONT", mongoHang), down: mongoHang,
			fault: func(r *run) error {
				if err := r.tp.mongo.signal(syscall.SIGSTOP, false); err != nil {
					return err
				}
				r.event("stopped mongodb")
				time.Sleep(mongoHang)
				if err := r.tp.mongo.signal(syscall.SIGCONT, false); err != nil {
					return err
				}
				r.event("continued mongodb")
				return r.tp.waitMongo(healTimeout)
			}},
		{name: "mongo-kill", about: fmt.Sprintf("kill -9 the MongoDB server, restart it on the same data after %v", mongoDown), down: mongoDown,
			fault: func(r *run) error {
				if err := r.tp.mongo.kill(); err != nil {
					return err
				}
				r.event("killed mongodb")
				time.Sleep(mongoDown)
				if err := r.tp.mongo.start(); err != nil {
					return err
				}
				if err := r.tp.waitMongo(healTimeout); err != nil {
					return err
				}
				r.event("mongodb back")
				return nil
			}},
		{name: hangName(natsHangLong), about: fmt.Sprintf("SIGSTOP the NATS node most gamerelay connections are on for %v, then SIGCONT", natsHangLong),
			down: natsHangLong, fault: func(r *run) error { return r.hangNATS(natsHangLong) }, optional: true},
	}
}

func hangName(d time.Duration) string { return fmt.Sprintf("nats-hang-%ds", int(d.Seconds())) }

// hangNATS stops for d the node most gamerelay connections hang on.
func (r *run) hangNATS(d time.Duration) error {
	i, holds, err := r.tp.natsBusiest()
	if err != nil {
		return err
	}
	r.event("%s", holds)
	if err := r.tp.nats[i].signal(syscall.SIGSTOP, false); err != nil {
		return err
	}
	r.event("stopped nats n%d", i)
	time.Sleep(d)
	if err := r.tp.nats[i].signal(syscall.SIGCONT, false); err != nil {
		return err
	}
	r.event("continued nats n%d", i)
	if err := r.tp.waitNATS(i, healTimeout); err != nil {
		return err
	}
	r.event("nats n%d current", i)
	return nil
}

func (r *run) natsLeader() (int, error) {
	i, leads, err := r.tp.natsLeader()
	if err == nil {
		r.event("stream leaders: %s", leads)
	}
	return i, err
}

// run is one execution of the suite: the topology, the players, the
// suite's copy of the logs and the report.
type run struct {
	t        *testing.T
	start    time.Time
	tp       *topology
	l        *load
	led      *ledger
	rep      *report
	checked  map[string]int    // log entries of each game already checked for unknown idems
	prevHead map[string]uint64 // each game's head at the previous check
	// archiveBehind names the last scenario whose archive did not catch
	// up, until one does.
	archiveBehind string
}

func (r *run) event(format string, args ...any) {
	r.t.Logf("%7.1fs  %s", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

// TestFaults runs every scenario, in order, on one topology under load.
// One scenario: go test -tags faults -run 'TestFaults/gateway-kill$' ./internal/faults
func TestFaults(t *testing.T) {
	start := time.Now()
	dir, err := os.MkdirTemp("", "gamerelay-faults-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("FAULTS_KEEP") != "" {
			t.Logf("run directory kept (process logs, data, report): %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	natsServer := findNATSServer(t)
	bin := buildGamerelay(t, dir)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FAULTS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("run directory %s, seed %d (FAULTS_SEED)", dir, seed)

	tp := startTopology(t, dir, bin, natsServer)
	t.Logf("topology ready in %v: nats %s", time.Since(start).Round(time.Millisecond), tp.natsURLs)
	scs := scenarios()
	l := newLoad(len(scs)+1, numGames, playersPerGame, seed, tp.aliveGateways)
	l.start()
	t.Cleanup(l.stop)
	r := &run{t: t, start: start, tp: tp, l: l, led: newLedger(), rep: newReport(dir), checked: map[string]int{}, prevHead: map[string]uint64{}}
	for i, sc := range scs {
		r.rep.rows = append(r.rep.rows, &result{name: sc.name, about: sc.about, verdict: "not run"})
		t.Run(sc.name, func(t *testing.T) { r.scenario(t, i+1, sc, r.rep.rows[i]) })
		r.rep.write(time.Since(start))
	}
	l.stop()
	t.Logf("fault suite done in %v\n\n%s", time.Since(start).Round(time.Second), r.rep.markdown(time.Since(start)))
	if p := r.rep.path; p != "" {
		t.Logf("report: %s", p)
	}
}

// scenario runs one fault under load and checks the outcome; idx is its
// figures' index in the load.
func (r *run) scenario(t *testing.T, idx int, sc scenario, res *result) {
	res.verdict = "FAIL"
	began := time.Now()
	defer func() {
		res.duration = time.Since(began)
		if !t.Failed() && !t.Skipped() {
			res.verdict = "pass"
		}
	}()
	need := loadBefore + sc.down + loadAfter + checkAllowance
	if deadline, ok := t.Deadline(); ok && time.Until(deadline) < need+cleanupMargin {
		msg := fmt.Sprintf("not run: %v left before the test's -timeout, the scenario needs about %v",
			time.Until(deadline).Round(time.Second), need+cleanupMargin)
		if sc.optional {
			res.verdict = "skipped"
			res.note("%s", msg)
			t.Skip(msg)
		}
		res.verdict = "not run"
		res.fail("%s", msg)
		t.Fatal(msg)
	}
	if err := r.tp.healthy(healTimeout); err != nil {
		res.fail("topology not healthy before the fault: %v", err)
		t.Fatal(res.failures[0])
	}
	for _, u := range r.tp.takeUnexpected() {
		res.fail("before the fault: %s", u)
	}
	if err := r.waitJoined(); err != nil {
		res.fail("%v", err)
		t.Fatal(err)
	}
	r.l.cur.Store(int32(idx))
	r.l.sending.Store(true)
	r.event("%s: load on", sc.name)
	time.Sleep(loadBefore)
	if err := sc.fault(r); err != nil {
		// The checks still judge what happened.
		res.fail("fault suite: the fault could not be applied or healed: %v", err)
	}
	if err := r.tp.healthy(healTimeout); err != nil {
		res.fail("not healthy after healing: %v", err)
	}
	time.Sleep(loadAfter)
	r.check(t, idx, res)
	for _, f := range res.failures {
		t.Error(f)
	}
}

// waitJoined waits until every player has joined (before the first
// scenario, and after a rescue).
func (r *run) waitJoined() error {
	deadline := time.Now().Add(catchUpTimeout)
	for {
		var out []string
		for _, p := range r.l.players {
			if !p.isSynced() {
				out = append(out, p.name)
			}
		}
		if len(out) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("players not joined after %v: %s", catchUpTimeout, strings.Join(out, " "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// check stops the load, waits until every player caught up, and judges:
// order and consistency of every player's deliveries against the log,
// lost and duplicated messages, the archive.
func (r *run) check(t *testing.T, idx int, res *result) {
	for _, u := range r.tp.takeUnexpected() {
		res.fail("%s", u)
	}
	quiet := time.Now()
	if stuck := r.quiesce(); len(stuck) > 0 {
		res.fail("%d players not caught up %v after the load stopped:\n%s", len(stuck), catchUpTimeout, strings.Join(stuck, "\n"))
	}
	res.catchUp = time.Since(quiet)
	r.event("players caught up in %v", res.catchUp.Round(time.Millisecond))

	// Every player's deliveries against the log, and against each other.
	byGame := map[string][]*player{}
	for _, p := range r.l.players {
		byGame[p.game] = append(byGame[p.game], p)
	}
	games := make([]string, 0, len(byGame))
	for g := range byGame {
		games = append(games, g)
	}
	sort.Strings(games)
	var differ []string
	for _, g := range games {
		es := r.led.games[g]
		ps := byGame[g]
		for _, p := range ps {
			p.mu.Lock()
			hs := p.hashes
			p.mu.Unlock()
			for i := p.verified; i < min(len(hs), len(es)); i++ {
				if es[i].msgID == uint64(i+1) && hs[i] != es[i].hash {
					differ = append(differ, fmt.Sprintf("%s: msg_id %d differs from the stored message", p.name, i+1))
				}
			}
			p.verified = min(len(hs), len(es))
		}
		a, b := ps[0], ps[len(ps)-1]
		a.mu.Lock()
		ha := a.hashes
		a.mu.Unlock()
		b.mu.Lock()
		hb := b.hashes
		b.mu.Unlock()
		for i := r.checkedPair(g); i < min(len(ha), len(hb)); i++ {
			if ha[i] != hb[i] {
				differ = append(differ, fmt.Sprintf("%s: %s and %s delivered different messages as msg_id %d", g, a.name, b.name, i+1))
			}
		}
		r.setCheckedPair(g, min(len(ha), len(hb)))
		// Messages nobody sent.
		known := map[string]bool{}
		for _, p := range ps {
			p.mu.Lock()
			for idem := range p.byIdem {
				known[idem] = true
			}
			p.mu.Unlock()
		}
		for _, e := range es[r.checked[g]:] {
			if e.idem != "" && !known[e.idem] {
				differ = append(differ, fmt.Sprintf("%s msg_id %d: idem %q sent by no player of the game", g, e.msgID, e.idem))
			}
		}
		r.checked[g] = len(es)
	}

	// Lost and duplicated: every message created in this scenario, by idem.
	lostWhy, dupWhat := lostAndDuplicated(r.l.players, r.led, idx, res)
	st := r.l.snapshot(idx)
	res.st = st
	if res.lost > 0 {
		res.fail("lost %d messages (never stored; %d given up by non-resenders after an error): %s", res.lost, res.lostGivenUp, firstN(lostWhy, 10))
	}
	if res.dup > 0 {
		res.fail("duplicated %d messages (one idem stored more than once): %s", res.dup, firstN(dupWhat, 10))
	}
	if len(st.violations) > 0 {
		res.fail("%d delivery order violations: %s", len(st.violations), firstN(st.violations, 10))
	}
	res.differ = len(differ)
	if len(differ) > 0 {
		res.fail("%d deliveries differ from the log: %s", len(differ), firstN(differ, 10))
	}
	for code, n := range st.errors {
		res.fail("%d unexpected error frames %q", n, code)
	}

	r.checkArchive(res)
	for _, p := range r.led.takeProblems() {
		if strings.HasPrefix(p, "archive") {
			res.archiveProblems++
		} else {
			res.logProblems++
		}
		res.fail("%s", p)
	}
	for _, u := range r.tp.takeUnexpected() {
		res.fail("%s", u)
	}
}

// checkArchive waits until the archive equals the log: the archiver's
// summaries reach every head (a cheap query), then the whole collection
// is compared (a full scan on FerretDB, so at most every archiveRescan:
// the archiver's own queries compete with it).
func (r *run) checkArchive(res *result) {
	start := time.Now()
	deadline := start.Add(archiveTimeout)
	var (
		lastNote, lastScan time.Time
		behind             []string
		now, before        []string // missing, stored since / before the previous check
		beyond             int
		err                error
	)
	for {
		if err = r.led.read(r.tp); err == nil {
			behind, err = r.led.archiveProgress(r.tp.mc)
		}
		if err == nil && len(behind) == 0 && time.Since(lastScan) >= archiveRescan {
			lastScan = time.Now()
			var (
				missing []msgRef
				wrong   []string
			)
			missing, wrong, beyond, err = r.led.archiveDiff(r.tp.mc)
			if err == nil && beyond > 0 {
				// Stored since the log was read, or archived wrongly: read again.
				if err = r.led.read(r.tp); err == nil {
					missing, wrong, beyond, err = r.led.archiveDiff(r.tp.mc)
				}
			}
			for _, w := range wrong {
				r.led.problem("archive", w)
			}
			// Messages stored before this scenario and still missing
			// failed the scenario they were stored in: listed, not counted.
			now, before = now[:0], before[:0]
			for _, m := range missing {
				if m.msgID > r.prevHead[m.game] {
					now = append(now, m.String())
				} else {
					before = append(before, m.String())
				}
			}
			if err == nil && len(now) == 0 && beyond == 0 {
				r.archiveBehind = ""
				break
			}
		}
		if time.Since(lastNote) >= 10*time.Second {
			lastNote = time.Now()
			r.event("archive: %d games' summaries behind the log (%s); last comparison: %d stored messages missing, %d beyond; error %v",
				len(behind), firstN(behind, 4), len(now), beyond, err)
		}
		if time.Now().After(deadline) {
			res.archiveMissing = len(now)
			msg := fmt.Sprintf("archive not equal to the log %v after the players caught up: %d games' summaries behind the log (%s); last comparison: %d stored messages missing (%s), %d documents beyond the log; last error: %v",
				archiveTimeout, len(behind), firstN(behind, 5), len(now), firstN(now, 10), beyond, err)
			if r.archiveBehind != "" {
				msg += "; the archive had not caught up after " + r.archiveBehind + " either, so this is not this scenario's doing alone"
			}
			res.fail("%s", msg)
			r.archiveBehind = res.name
			break
		}
		time.Sleep(time.Second)
	}
	if len(before) > 0 {
		res.note("still missing from the archive since earlier scenarios: %s", firstN(before, 10))
	}
	res.archive = time.Since(start)
	r.event("archive checked in %v", res.archive.Round(time.Millisecond))
	for g := range r.led.games {
		r.prevHead[g] = r.led.head(g)
	}
}

// lostAndDuplicated counts, into res, the messages created in scenario
// idx that the log never stored and those it stored more than once.
func lostAndDuplicated(players []*player, led *ledger, idx int, res *result) (lostWhy, dupWhat []string) {
	for _, p := range players {
		p.mu.Lock()
		for _, m := range p.msgs {
			if m.scenario != idx {
				continue
			}
			ids := led.idems[m.idem]
			switch {
			case len(ids) == 0:
				res.lost++
				why := map[outcome]string{pending: "still in flight", back: "seen by its sender", gaveUp: "given up after an error"}[m.outcome]
				if m.outcome == gaveUp {
					res.lostGivenUp++
				}
				lostWhy = append(lostWhy, fmt.Sprintf("%s (%s, %d sends)", m.idem, why, m.sends))
			case len(ids) > 1:
				res.dup += len(ids) - 1
				dupWhat = append(dupWhat, fmt.Sprintf("%s as msg_id %v (%d sends)", m.idem, ids, m.sends))
			}
		}
		p.mu.Unlock()
	}
	return lostWhy, dupWhat
}

// checkedPair and setCheckedPair track how far two players of a game
// were compared with each other.
func (r *run) checkedPair(g string) int { return r.checked["pair/"+g] }

func (r *run) setCheckedPair(g string, n int) { r.checked["pair/"+g] = n }

// quiesce stops new messages and waits until no player has a message in
// flight, every player is joined, and each has delivered its game's
// stored head, twice in a row. It returns the players that did not get
// there in time, with their recent events, after dropping their
// connections (they resume, and the next scenario starts from there).
func (r *run) quiesce() []string {
	r.l.sending.Store(false)
	deadline := time.Now().Add(catchUpTimeout)
	calm := 0
	var lag []*player
	var why []string
	for {
		err := r.led.read(r.tp)
		lag, why = lag[:0], why[:0]
		for _, p := range r.l.players {
			p.mu.Lock()
			last, synced, m := p.last, p.synced, p.inflight
			p.mu.Unlock()
			head := r.led.head(p.game)
			var w string
			switch {
			case m != nil:
				w = fmt.Sprintf("%s in flight for %v (%d sends)", m.idem, time.Since(m.first).Round(time.Millisecond), m.sends)
			case !synced:
				w = "not joined"
			case last < head:
				w = fmt.Sprintf("delivered up to msg_id %d of %d", last, head)
			case last > head:
				w = fmt.Sprintf("delivered msg_id %d, beyond the stored head %d", last, head)
			}
			if w != "" {
				lag = append(lag, p)
				why = append(why, p.name+" ("+p.game+"): "+w)
			}
		}
		if err == nil && len(lag) == 0 {
			if calm++; calm == 2 {
				return nil
			}
		} else {
			calm = 0
		}
		if time.Now().After(deadline) {
			if err != nil {
				why = append(why, "reading the log: "+err.Error())
			}
			var out []string
			for i, p := range lag {
				p.mu.Lock()
				notes := strings.Join(p.notes, "\n      ")
				p.mu.Unlock()
				out = append(out, "  "+why[i]+"\n      "+notes)
				select {
				case p.kick <- struct{}{}:
				default:
				}
			}
			if len(lag) == 0 {
				out = why
			}
			return out
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// snapshot copies a scenario's figures.
func (l *load) snapshot(idx int) stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := *l.stats[idx]
	s.violations = append([]string(nil), s.violations...)
	s.errors, s.joinErrors, s.closes = clone(s.errors), clone(s.joinErrors), clone(s.closes)
	return s
}

func clone(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func firstN(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, "; ")
	}
	return strings.Join(s[:n], "; ") + fmt.Sprintf("; … %d more", len(s)-n)
}
