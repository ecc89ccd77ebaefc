//go:build faults

package faults

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/gamerelay/gamerelay/internal/localproc"
)

// Players' behaviour. The reconnect backoff is the JS client's default
// (docs/client-js.md): attempt n waits min(max, min·2ⁿ) scaled by a random
// factor in [0.5, 1]; the count starts again after every join.
const (
	thinkMin        = 100 * time.Millisecond // between a message coming back and the next
	thinkMax        = 200 * time.Millisecond
	backoffMin      = 250 * time.Millisecond
	backoffMax      = 10 * time.Second
	dialTimeout     = 2 * time.Second
	writeTimeout    = 5 * time.Second
	notesPerPlayer  = 40 // recent events kept per player for failure reports
	codeUnavailable = "unavailable"
)

// outcome of one message a player sent.
type outcome int

const (
	pending outcome = iota // not back, not given up
	back                   // seen in the game's deliveries
	gaveUp                 // an error frame, and the player moved on
)

// outMsg is one message a player created; resends keep its idem.
type outMsg struct {
	idem     string
	scenario int // index of the scenario it was created in
	first    time.Time
	sends    int
	outcome  outcome
	lateBack bool // came back after the player gave up on it
}

// player is one WebSocket client of one game. Its run goroutine owns the
// connection; the checks read its state under mu.
type player struct {
	// Static after construction.
	l        *load
	name     string // also the prefix of its idems: "<name>-<n>"
	game     string
	resender bool // resends after unavailable
	rnd      *rand.Rand
	kick     chan struct{} // the suite asks to drop the connection (rescue)

	// Owned by the checks.
	verified int // hashes[:verified] were compared with the log

	mu       sync.Mutex
	last     uint64   // last msg_id delivered
	hashes   []uint64 // hashes[i]: FNV-1a of the frame delivered as msg_id i+1
	msgs     []*outMsg
	byIdem   map[string]*outMsg
	inflight *outMsg
	synced   bool // joined and the replay reached joined.head
	joins    int
	notes    []string // the most recent events
}

// load runs the players and keeps the figures of each scenario.
type load struct {
	// Static after construction.
	players  []*player
	gateways func() []int // public ports of the gateways to use

	sending atomic.Bool  // players may create new messages
	cur     atomic.Int32 // index of the running scenario

	mu    sync.Mutex
	stats []*stats // by scenario index

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// stats are one scenario's figures.
type stats struct {
	sent, back, gaveUp, lateBack           int
	unavailable, resends, resendsAfterErr  int
	resendsAfterResume, resumes, dialFails int
	rescues, lateErrors                    int
	joinErrors, errors, closes             map[string]int
	maxStall                               time.Duration
	maxStallWhat                           string
	violations                             []string // delivery order broken
}

func newStats() *stats {
	return &stats{joinErrors: map[string]int{}, errors: map[string]int{}, closes: map[string]int{}}
}

func newLoad(nScenarios, games, perGame int, seed uint64, gws func() []int) *load {
	l := &load{gateways: gws}
	for range nScenarios {
		l.stats = append(l.stats, newStats())
	}
	for g := range games {
		for k := range perGame {
			i := len(l.players)
			l.players = append(l.players, &player{
				l:        l,
				name:     fmt.Sprintf("p%02d", i),
				game:     fmt.Sprintf("g%02d", g),
				resender: k%2 == 0,
				rnd:      rand.New(rand.NewPCG(seed, uint64(i))),
				kick:     make(chan struct{}, 1),
				byIdem:   map[string]*outMsg{},
			})
		}
	}
	return l
}

func (l *load) start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for _, p := range l.players {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); p.run(ctx) }()
	}
}

func (l *load) stop() {
	if l.cancel != nil {
		l.cancel()
		l.wg.Wait()
	}
}

// count updates the running scenario's figures.
func (l *load) count(f func(s *stats)) {
	l.countIn(int(l.cur.Load()), f)
}

func (l *load) countIn(sc int, f func(s *stats)) {
	l.mu.Lock()
	f(l.stats[sc])
	l.mu.Unlock()
}

func (p *player) note(format string, args ...any) {
	p.mu.Lock()
	p.noteLocked(format, args...)
	p.mu.Unlock()
}

func (p *player) noteLocked(format string, args ...any) {
	if len(p.notes) == notesPerPlayer {
		copy(p.notes, p.notes[1:])
		p.notes = p.notes[:notesPerPlayer-1]
	}
	p.notes = append(p.notes, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

func (p *player) violation(format string, args ...any) {
	v := p.name + " (" + p.game + "): " + fmt.Sprintf(format, args...)
	p.note("VIOLATION %s", v)
	p.l.count(func(s *stats) { s.violations = append(s.violations, v) })
}

func (p *player) backoff(attempt int) time.Duration {
	d := backoffMax
	if attempt < 16 {
		d = min(backoffMax, backoffMin<<attempt)
	}
	return time.Duration(float64(d) * (0.5 + 0.5*p.rnd.Float64()))
}

func (p *player) think() time.Duration {
	return thinkMin + time.Duration(p.rnd.Int64N(int64(thinkMax-thinkMin)))
}

// run connects, joins and plays until ctx ends, resuming after every
// close with since = the last msg_id it saw.
func (p *player) run(ctx context.Context) {
	attempt := 0
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			sleep(ctx, p.backoff(attempt))
			attempt++
		}
		ports := p.l.gateways()
		if len(ports) == 0 {
			continue
		}
		port := ports[p.rnd.IntN(len(ports))]
		c, err := dial(ctx, port)
		if err != nil {
			p.note("dial %d: %v", port, err)
			p.l.count(func(s *stats) { s.dialFails++ })
			continue
		}
		if p.session(ctx, c, port) {
			attempt = 0
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// session joins on c and plays until the connection ends; it reports
// whether the join succeeded.
func (p *player) session(ctx context.Context, c *wsConn, port int) (joined bool) {
	defer c.close()
	p.mu.Lock()
	since := p.last
	p.synced = false
	p.mu.Unlock()
	p.note("connected to %d, join since=%d", port, since)
	if err := c.write(fmt.Appendf(nil, `{"type":"join","game":%q,"since":%d}`, p.game, since)); err != nil {
		p.note("write join: %v", err)
		return false
	}
	var (
		head          uint64
		resendPending bool // after unavailable (resenders)
		think         = time.NewTimer(time.Hour)
	)
	think.Stop()
	defer think.Stop()
	synced := func() {
		p.mu.Lock()
		p.synced = true
		m := p.inflight
		p.mu.Unlock()
		if m == nil {
			think.Reset(p.think())
			return
		}
		// Resume: the message in flight did not come back in the replay.
		resendPending = false
		p.l.count(func(s *stats) { s.resends++; s.resendsAfterResume++ })
		p.send(c, m, "resend after resume")
	}
	// A failed write ends the session; the resume resends what is in flight.
	for {
		select {
		case <-ctx.Done():
			return joined
		case <-c.broken:
			return joined
		case <-p.kick:
			p.note("rescue: the suite drops the connection")
			p.l.count(func(s *stats) { s.rescues++ })
			return joined
		case <-think.C:
			p.mu.Lock()
			m, ok := p.inflight, p.synced
			p.mu.Unlock()
			switch {
			case !ok:
			case m != nil && resendPending:
				resendPending = false
				p.l.count(func(s *stats) { s.resends++; s.resendsAfterErr++ })
				p.send(c, m, "resend after unavailable")
			case m != nil:
			case p.l.sending.Load():
				p.send(c, p.newMessage(), "send")
			default:
				think.Reset(p.think()) // paused: look again soon
			}
		case f := <-c.frames:
			switch f.kind {
			case frameClosed:
				p.note("closed: %s", f.info)
				p.l.count(func(s *stats) { s.closes[f.info]++ })
				return joined
			case frameJoined:
				if joined {
					p.violation("second joined on one connection")
					continue
				}
				joined, head = true, f.head
				p.mu.Lock()
				p.joins++
				resume, last := p.joins > 1, p.last
				p.mu.Unlock()
				p.note("joined head=%d", head)
				if resume {
					p.l.count(func(s *stats) { s.resumes++ })
				}
				if head < last {
					p.violation("joined with head %d below msg_id %d already delivered", head, last)
				}
				if last >= head {
					synced()
				}
			case frameMsg:
				if !joined {
					p.violation("msg_id %d before joined", f.msgID)
					continue
				}
				wasSynced := p.isSynced()
				if !p.deliver(f, think) {
					return joined // a gap: resume from the last msg_id, as the JS client does
				}
				if !wasSynced && p.lastID() >= head {
					synced()
				}
			case frameError:
				if !joined {
					p.note("join refused: %s", f.code)
					p.l.count(func(s *stats) { s.joinErrors[f.code]++ })
					return false
				}
				if p.onError(f) {
					resendPending = true
				}
				think.Reset(p.think())
			case frameOther:
			}
		}
	}
}

func (p *player) isSynced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.synced
}

func (p *player) lastID() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// newMessage creates the next message and makes it the one in flight.
func (p *player) newMessage() *outMsg {
	sc := int(p.l.cur.Load())
	p.mu.Lock()
	m := &outMsg{idem: p.name + "-" + strconv.Itoa(len(p.msgs)+1), scenario: sc, first: time.Now()}
	p.msgs = append(p.msgs, m)
	p.byIdem[m.idem] = m
	p.inflight = m
	p.mu.Unlock()
	p.l.countIn(sc, func(s *stats) { s.sent++ })
	return m
}

// send writes m; a failed write marks the connection broken, which ends
// the session, and the resume resends m.
func (p *player) send(c *wsConn, m *outMsg, why string) {
	p.mu.Lock()
	m.sends++
	n := m.sends
	p.noteLocked("%s %s (#%d)", why, m.idem, n)
	p.mu.Unlock()
	if err := c.write(fmt.Appendf(nil, `{"type":"move","idem":%q,"by":%q,"try":%d}`, m.idem, p.name, n)); err != nil {
		p.note("write: %v", err)
	}
}

// deliver takes the next game message; false means a gap: the connection
// must be dropped and resumed.
func (p *player) deliver(f frame, think *time.Timer) bool {
	p.mu.Lock()
	last := p.last
	if f.msgID <= last {
		p.mu.Unlock()
		p.violation("msg_id %d repeated (after %d)", f.msgID, last)
		return true
	}
	if f.msgID != last+1 {
		p.mu.Unlock()
		p.violation("gap: msg_id %d after %d", f.msgID, last)
		return false
	}
	p.hashes = append(p.hashes, f.hash)
	p.last = f.msgID
	var m *outMsg
	if strings.HasPrefix(f.idem, p.name+"-") {
		m = p.byIdem[f.idem]
	}
	switch {
	case m == nil:
		p.mu.Unlock()
		if strings.HasPrefix(f.idem, p.name+"-") {
			p.violation("msg_id %d carries idem %s, never sent", f.msgID, f.idem)
		}
	case m.outcome == pending:
		m.outcome = back
		if p.inflight == m {
			p.inflight = nil
			think.Reset(p.think())
		}
		p.noteLocked("back %s as msg_id %d", m.idem, f.msgID)
		p.mu.Unlock()
		p.l.ended(m, p.name, "back")
	case m.outcome == gaveUp && !m.lateBack:
		m.lateBack = true
		p.mu.Unlock()
		p.l.countIn(m.scenario, func(s *stats) { s.lateBack++ })
	default:
		p.mu.Unlock() // seen again: a duplicate in the log, counted by the checks
	}
	return true
}

// onError handles an error frame after the join; true means resend the
// message in flight.
func (p *player) onError(f frame) (resend bool) {
	p.mu.Lock()
	m := p.inflight
	p.noteLocked("error %s idem=%q: %s", f.code, f.idem, f.info)
	p.mu.Unlock()
	if m == nil {
		// A resend refused after the first send came back: the
		// refusal is the resend's, nothing is lost.
		if f.code == codeUnavailable {
			p.l.count(func(s *stats) { s.unavailable++; s.lateErrors++ })
		} else {
			p.l.count(func(s *stats) { s.errors[f.code+" (nothing in flight)"]++ })
		}
		return false
	}
	if f.idem != "" && f.idem != m.idem {
		p.l.count(func(s *stats) { s.errors[f.code+" (for another idem)"]++ })
	}
	if f.code == codeUnavailable {
		p.l.count(func(s *stats) { s.unavailable++ })
		if p.resender {
			return true
		}
	} else {
		p.l.count(func(s *stats) { s.errors[f.code]++ })
	}
	p.mu.Lock()
	m.outcome = gaveUp
	p.inflight = nil
	p.mu.Unlock()
	p.l.ended(m, p.name, "given up")
	return false
}

// ended records how long m's sender waited, in the scenario m belongs to.
func (l *load) ended(m *outMsg, who, how string) {
	d := time.Since(m.first)
	l.countIn(m.scenario, func(s *stats) {
		if how == "back" {
			s.back++
		} else {
			s.gaveUp++
		}
		if d > s.maxStall {
			s.maxStall = d
			s.maxStallWhat = fmt.Sprintf("%s %s, %s after %d sends", who, m.idem, how, m.sends)
		}
	})
}

// frame is what the reader passes to the session.
type frame struct {
	kind  frameKind
	head  uint64 // joined
	msgID uint64 // game message
	hash  uint64 // game message: FNV-1a of the frame
	idem  string // game message, error
	code  string // error
	info  string // error message, close reason
}

type frameKind int

const (
	frameJoined frameKind = iota
	frameMsg
	frameError
	frameOther
	frameClosed
)

// wsConn is one client connection: a reader goroutine turns frames into
// values on frames (the last one frameClosed, unless the connection was
// closed here); writes are serialised by wmu.
type wsConn struct {
	c      net.Conn
	r      io.Reader
	frames chan frame
	broken chan struct{} // closed when a write failed
	done   chan struct{} // closed by close
	wmu    sync.Mutex
	once   sync.Once
	bonce  sync.Once
}

func dial(ctx context.Context, port int) (*wsConn, error) {
	d := ws.Dialer{Timeout: dialTimeout}
	conn, br, _, err := d.Dial(ctx, "ws://"+localproc.HostPort(port)+"/ws")
	if err != nil {
		return nil, err
	}
	c := &wsConn{c: conn, r: conn, frames: make(chan frame, 64), broken: make(chan struct{}), done: make(chan struct{})}
	if br != nil {
		c.r = io.MultiReader(br, conn) // bytes the handshake read ahead
	}
	go c.readLoop()
	return c, nil
}

func (c *wsConn) write(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := wsutil.WriteClientText(c.c, p)
	if err != nil {
		c.bonce.Do(func() { close(c.broken) })
	}
	return err
}

// close ends the connection and its reader.
func (c *wsConn) close() {
	c.once.Do(func() {
		close(c.done)
		c.c.Close()
	})
}

// put hands f to the session, unless the connection was closed here.
func (c *wsConn) put(f frame) bool {
	select {
	case c.frames <- f:
		return true
	case <-c.done:
		return false
	}
}

// readLoop reads server frames until the connection ends.
func (c *wsConn) readLoop() {
	info := ""
	defer func() {
		c.put(frame{kind: frameClosed, info: info})
		c.close()
	}()
	var msg []byte
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			info = closeReason(err)
			return
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, p); err != nil {
			info = closeReason(err)
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			c.wmu.Lock()
			_ = wsutil.WriteClientMessage(c.c, ws.OpPong, p)
			c.wmu.Unlock()
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code := "no code"
			if len(p) >= 2 {
				code = strconv.Itoa(int(binary.BigEndian.Uint16(p)))
			}
			info = "close " + code
			c.wmu.Lock()
			_ = c.c.SetWriteDeadline(time.Now().Add(time.Second))
			_ = wsutil.WriteClientMessage(c.c, ws.OpClose, p[:min(len(p), 2)])
			c.wmu.Unlock()
			return
		case ws.OpText, ws.OpContinuation:
			msg = append(msg, p...)
		default:
			info = "unexpected opcode " + strconv.Itoa(int(h.OpCode))
			return
		}
		if !h.Fin {
			continue
		}
		if !c.put(parseFrame(msg)) {
			return
		}
		msg = nil
	}
}

func closeReason(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, net.ErrClosed):
		return "closed here"
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Err.Error()
	}
	return err.Error()
}

func parseFrame(b []byte) frame {
	var v struct {
		Type    string  `json:"type"`
		MsgID   *uint64 `json:"msg_id"`
		Head    uint64  `json:"head"`
		Idem    string  `json:"idem"`
		Code    string  `json:"code"`
		Message string  `json:"message"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return frame{kind: frameOther, info: "invalid JSON: " + err.Error()}
	}
	switch {
	case v.MsgID != nil:
		return frame{kind: frameMsg, msgID: *v.MsgID, hash: hash(b), idem: v.Idem}
	case v.Type == "joined":
		return frame{kind: frameJoined, head: v.Head}
	case v.Type == "error":
		return frame{kind: frameError, code: v.Code, idem: v.Idem, info: v.Message}
	}
	return frame{kind: frameOther, info: v.Type}
}

func hash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}
