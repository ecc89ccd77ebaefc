//go:build linux

package gateway

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller holds parked connections: joined connections idle for parkAfter
// whose reader goroutine has exited. Their sockets are registered in one
// epoll instance (EPOLLONESHOT) watched by one goroutine, started with the
// first park; when a socket becomes readable or hangs up, the poller
// removes it from epoll and starts a new reader goroutine, which continues
// where the last one stopped. So a connection has at most one reader at a
// time, and none while parked.
//
// A socket is removed from epoll (EPOLL_CTL_DEL, through RawConn.Control,
// so never on a closed or reused descriptor) whenever its connection is
// unparked. Every path that closes a parked connection unparks it first
// (closeLocked) or right after closing the socket (a failed write), since
// closing the descriptor silently drops it from epoll and nothing else
// would ever start its reader again.
type poller struct {
	mu sync.Mutex
	// Guarded by mu (as are conn.parked and conn.pfd).
	epfd, efd int             // epoll instance and the eventfd that stops the poller
	started   bool            // the poller goroutine runs (or ran)
	stopped   bool            // parking is over: Shutdown, or epoll is unavailable
	closed    bool            // stop ran: the descriptors are closed
	conns     map[int32]*conn // parked connections by socket descriptor
	done      chan struct{}   // closed when the poller goroutine exits
}

// startLocked creates the epoll instance and starts the poller goroutine.
func (p *poller) startLocked(g *Gateway) error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		_ = unix.Close(efd)
		_ = unix.Close(epfd)
		return err
	}
	p.epfd, p.efd = epfd, efd
	p.conns = make(map[int32]*conn)
	p.done = make(chan struct{})
	p.started = true
	go p.run(g)
	return nil
}

// park registers c's socket and marks c parked; false means c cannot be
// parked and its reader goes on reading. Called by c's reader goroutine
// with c.mu held: a parked connection is never closing.
func (p *poller) parkLocked(c *conn) bool {
	rc := c.raw
	if rc == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	if !p.started {
		if err := p.startLocked(c.g); err != nil {
			p.stopped = true
			c.g.log.Warn("gateway: epoll unavailable: idle connections keep their reader goroutine", "err", err)
			return false
		}
	}
	var fd int32
	var cerr error
	err := rc.Control(func(s uintptr) {
		fd = int32(s)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: fd}
		cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(s), &ev)
		if errors.Is(cerr, unix.EEXIST) {
			cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(s), &ev)
		}
	})
	if err != nil || cerr != nil {
		return false
	}
	c.parked, c.pfd = true, fd
	p.conns[fd] = c
	return true
}

// wake unparks c, if it is parked, and starts its reader goroutine.
func (p *poller) wake(c *conn) {
	p.mu.Lock()
	ok := p.unparkLocked(c)
	p.mu.Unlock()
	if ok {
		go c.g.serve(c)
	}
}

// unparkLocked takes c out of epoll; true if c was parked, and the caller
// then starts its reader.
func (p *poller) unparkLocked(c *conn) bool {
	if !c.parked {
		return false
	}
	c.parked = false
	if p.conns[c.pfd] == c {
		delete(p.conns, c.pfd)
	}
	if rc := c.raw; rc != nil {
		// Fails, doing nothing, if the socket is closed: closing removed it.
		_ = rc.Control(func(s uintptr) {
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(s), nil)
		})
	}
	return true
}

// parkedCount reports how many connections are parked.
func (p *poller) parkedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// run is the poller goroutine: it starts a reader for every parked socket
// that becomes readable, until stop.
func (p *poller) run(g *Gateway) {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	var woken []*conn
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Not expected (EBADF, EINVAL); keep trying so that parked
			// connections are not forgotten, without spinning.
			g.log.Error("gateway: epoll_wait", "err", err)
			time.Sleep(100 * time.Millisecond)
			n = 0
		}
		stop := false
		p.mu.Lock()
		for _, ev := range events[:n] {
			if int(ev.Fd) == p.efd {
				stop = true
				continue
			}
			if c := p.conns[ev.Fd]; c != nil && p.unparkLocked(c) {
				woken = append(woken, c)
			}
		}
		if p.stopped {
			stop = true
			// Nothing should be parked now (Shutdown closed every
			// connection first); whatever is gets its reader back.
			for _, c := range p.conns {
				if p.unparkLocked(c) {
					woken = append(woken, c)
				}
			}
		}
		p.mu.Unlock()
		for _, c := range woken {
			go g.serve(c)
		}
		clear(woken)
		woken = woken[:0]
		if stop {
			return
		}
	}
}

// stop ends parking and waits for the poller goroutine.
func (p *poller) stop() {
	p.mu.Lock()
	p.stopped = true
	started, closed := p.started, p.closed
	p.closed = true
	p.mu.Unlock()
	if !started || closed {
		return // a second stop: the descriptors are closed already
	}
	_, _ = unix.Write(p.efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-p.done
	_ = unix.Close(p.efd)
	_ = unix.Close(p.epfd)
}

// rawConn returns the socket under nc, or nil if it has none (TLS, tests'
// fakes).
func rawConn(nc net.Conn) syscall.RawConn {
	sc, ok := socket(nc).(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// writeNowLocked writes as much of p to c's socket as it takes without blocking
// and returns how much that was (0 without a socket, or on any error: the
// writer goroutine, which gets the rest, meets the error again and ends the
// connection). The caller holds c.mu with no writer running, so nothing
// else writes to the socket.
func (c *conn) writeNowLocked(p []byte) int {
	if c.raw == nil {
		return 0
	}
	d := c.direct
	if d == nil {
		d = &directWrite{}
		d.fn = d.write
		c.direct = d
	}
	d.p, d.n = p, 0
	_ = c.raw.Write(d.fn)
	n := d.n
	d.p = nil // hold no frame
	return n
}

func (d *directWrite) write(fd uintptr) bool {
	for d.n < len(d.p) {
		k, err := unix.Write(int(fd), d.p[d.n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || k <= 0 {
			break
		}
		d.n += k
	}
	return true // never wait for the socket: the writer does that
}
