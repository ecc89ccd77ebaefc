package gateway

import (
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gobwas/ws"
)

// ServeHTTP upgrades the request to a WebSocket and serves it.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.draining.Load() {
		http.Error(w, "gateway draining: connect to another instance", http.StatusServiceUnavailable)
		return
	}
	if !g.originAllowed(r.Header.Get("Origin")) {
		g.m.closed("origin")
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	addr := clientAddr(r, g.cfg.TrustedProxies)
	if reason := g.admit(addr); reason != "" {
		g.m.refused(reason)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many connections: try again later", http.StatusServiceUnavailable)
		return
	}
	nc, rw, _, err := ws.HTTPUpgrader{Timeout: 10 * time.Second}.Upgrade(r, w)
	if err != nil {
		g.log.Debug("gateway: upgrade", "remote", r.RemoteAddr, "err", err)
		g.leave(addr)
		if nc != nil {
			_ = nc.Close()
		}
		return
	}
	// Bytes the client sent right after the handshake may sit in the
	// server's read buffer: hand them to the frame reader first.
	var src = net.Conn(nc)
	if n := rw.Reader.Buffered(); n > 0 {
		pre := make([]byte, n)
		_, _ = rw.Reader.Read(pre)
		src = &prefixConn{Conn: nc, pre: pre}
	}
	n := g.nextID.Add(1)
	c := &conn{
		g:      g,
		nc:     src,
		raw:    rawConn(src),
		id:     g.cfg.Instance + "-" + strconv.FormatUint(n, 36),
		addr:   addr,
		bucket: uint8(n % pingBuckets),
	}
	c.fr = frameReader{r: src, max: min(preJoinMaxBytes, g.cfg.MaxMessageBytes)}
	_ = c.nc.SetReadDeadline(time.Now().Add(g.cfg.JoinTimeout))
	g.mu.Lock()
	if g.draining.Load() {
		g.mu.Unlock()
		g.leave(addr)
		_ = nc.Close()
		return
	}
	g.conns[c] = struct{}{}
	g.wg.Add(1)
	if g.kaStop == nil {
		g.kaStop, g.kaDone = make(chan struct{}), make(chan struct{})
		go g.keepalive(g.kaStop, g.kaDone)
	}
	g.mu.Unlock()
	g.m.connections(1)
	go g.serve(c)
}

func (g *Gateway) originAllowed(origin string) bool {
	if len(g.cfg.Origins) == 0 || origin == "" {
		return true
	}
	for _, o := range g.cfg.Origins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// prefixConn reads pre before the connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

// socket returns the connection under nc's prefixConn, if it has one.
func socket(nc net.Conn) net.Conn {
	if p, ok := nc.(*prefixConn); ok {
		return p.Conn
	}
	return nc
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		if len(p.pre) == 0 {
			p.pre = nil
		}
		return n, nil
	}
	return p.Conn.Read(b)
}

// serve is the connection's reader goroutine. It runs from the upgrade to
// the end of the connection, except while the connection is parked: then
// it returns and the poller starts serve again when the client sends
// something. The connection's count in g.wg passes from one to the next.
func (g *Gateway) serve(c *conn) {
	if g.read(c) {
		return // parked
	}
	defer g.wg.Done()
	c.fr.release()
	g.finish(c)
}

// read reads and handles frames until the connection ends (false) or is
// parked (true).
func (g *Gateway) read(c *conn) (parked bool) {
	for {
		if c.hub != nil {
			c.fr.max = g.cfg.MaxMessageBytes // joined: no longer preJoinMaxBytes
			g.armReadDeadline(c)
		}
		op, p, err := c.fr.next()
		if err != nil {
			if err == errIdle && c.hub != nil && !c.graced {
				if g.park(c) {
					return true
				}
				if g.now()-c.lastRead.Load() < int64(2*g.cfg.PingInterval) {
					continue
				}
			}
			g.readFailed(c, err)
			return false
		}
		t := g.now()
		switch op {
		case ws.OpClose:
			// next lets through only what RFC 6455 allows (checkClose):
			// empty, or a code that may be echoed.
			code, _ := ws.ParseCloseFrameData(p)
			if code == 0 {
				code = wire.CloseNormal
			}
			c.closeWith(int(code), "", "client")
			return false
		case ws.OpPing:
			c.enqueue(item{kind: itemFrame, frame: ws.MustCompileFrame(ws.NewPongFrame(p))})
		case ws.OpPong:
		case ws.OpBinary:
			c.sendError(wire.CodeUnsupported, "binary frames are not supported: send JSON text frames")
			c.closeWith(wire.CloseUnsupported, "binary frames not supported", "unsupported")
			return false
		case ws.OpText:
			if !g.handle(c, p) {
				return false
			}
		}
		if c.hub != nil {
			c.lastRead.Store(t)
		}
	}
}

// armReadDeadline sets the deadline for the next frame of a joined
// connection: parkAfter, when it passes before the frame starts the
// connection is parked; two ping intervals if it cannot be parked. Once a
// close is under way it is closeGrace, set once.
func (g *Gateway) armReadDeadline(c *conn) {
	c.fr.stall = 2 * g.cfg.PingInterval
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	d := 2 * g.cfg.PingInterval
	switch {
	case closing && c.graced:
		return
	case closing:
		c.graced = true
		d = closeGrace
	case !c.noPark:
		d = min(d, g.cfg.parkAfter)
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
}

// park hands an idle joined connection to the poller; true means the
// reader goroutine must return without touching c again.
func (g *Gateway) park(c *conn) bool {
	if c.noPark || c.fr.pending() {
		return false
	}
	// The poller wakes the connection only for bytes still in the socket:
	// nothing may wait in the read buffer, which goes back to its pool.
	c.fr.release()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	if !c.writing && len(c.queue) == 0 {
		c.queue = nil // the writer keeps its array for the next round
	}
	if !g.poll.parkLocked(c) {
		c.noPark = true
		return false
	}
	return true
}

// readFailed closes the connection after the reader stopped on err.
func (g *Gateway) readFailed(c *conn, err error) {
	g.log.Debug("gateway: read ended", "client", c.id, "err", err)
	var pe *protoError
	switch {
	case errors.As(err, &pe):
		c.sendError(pe.code, pe.msg)
		c.closeWith(pe.closeCode, pe.msg, pe.code)
	case errors.Is(err, os.ErrDeadlineExceeded):
		if c.hub == nil {
			c.sendError("join_timeout", "no join within "+g.cfg.JoinTimeout.String())
			c.closeWith(wire.ClosePolicy, "join timeout", "join_timeout")
		} else {
			c.closeWith(wire.ClosePolicy, "ping timeout", "ping_timeout")
		}
	default:
		c.closeWith(wire.CloseNormal, "", "disconnect")
	}
}

// finish cleans up after the reader goroutine ends: lets the writer send
// what it has (a close frame, normally), then drops the socket.
func (g *Gateway) finish(c *conn) {
	c.waitWriter(closeGrace)
	lingerClose(c.nc)
	if h := c.hub; h != nil {
		h.mu.Lock()
		delete(h.clients, c)
		if c.role == token.RolePlayer {
			h.players--
		} else {
			h.spectators--
		}
		h.mu.Unlock()
		g.aud.mark(h)
		if c.role == token.RolePlayer {
			g.playerEvent(h.game, presenceEvent{event: "leave", client: c.id, user: c.user})
		}
		g.releaseHub(h)
	}
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
	g.leave(c.addr)
	g.m.connections(-1)
}

// lingerMax bounds what lingerClose reads and drops.
const lingerMax = 1 << 20

// lingerClose ends a connection without losing what was just written to
// it. Closing a socket with unread bytes in it (a payload refused as too
// large, frames sent after a protocol error) makes the kernel answer with
// a reset, and a reset can make the client's kernel drop the error and
// close frames before the client reads them, or fail the client's write
// of the rest of its frame. So the gateway first sends FIN, then reads and
// drops what the client still sends, up to lingerMax bytes and closeGrace,
// and only then closes.
func lingerClose(nc net.Conn) {
	if cw, ok := socket(nc).(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = nc.SetReadDeadline(time.Now().Add(closeGrace))
		buf := readBufPool.Get().(*[readBufSize]byte)
		for n := 0; n < lingerMax; {
			k, err := nc.Read(buf[:])
			n += k
			if err != nil {
				break
			}
		}
		readBufPool.Put(buf)
	}
	_ = nc.Close()
}

// handle acts on one text message; false ends the connection.
func (g *Gateway) handle(c *conn, p []byte) bool {
	req, pe := decodeRequest(p)
	if pe != nil {
		c.sendErrorFor(pe.code, pe.msg, pe.idem)
		return true
	}
	switch req.kind {
	case kindJoin:
		if c.hub != nil {
			c.sendError(wire.CodeAlreadyJoined, "this connection already joined "+c.hub.game)
			return true
		}
		if !g.allowJoin(c) {
			return true
		}
		g.onSideStack(func() { g.join(c, req, nil) })
	case kindCreate:
		if c.hub != nil {
			c.sendError(wire.CodeAlreadyJoined, "this connection already joined "+c.hub.game)
			return true
		}
		if !g.cfg.AllowCreate {
			c.sendError(wire.CodeCreateDisabled, "creating games is disabled on this server")
			return true
		}
		if !g.allowJoin(c) {
			return true
		}
		g.onSideStack(func() { g.create(c) })
	case kindRefresh:
		g.refresh(c, req)
	case kindGame:
		g.gameMessage(c, req.body, req.idem)
	}
	return true
}

// onSideStack runs f on a short-lived goroutine and waits for it. Joins
// go through NATS requests with deep call stacks; run on the reader
// goroutine they would grow its stack for as long as the connection lives
// (idle connections are most of a gateway's memory).
func (g *Gateway) onSideStack(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}
