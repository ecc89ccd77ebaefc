package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// itemKind says what a send-queue item is.
type itemKind uint8

const (
	itemFrame itemKind = iota // a compiled frame; id > 0 for game messages
	itemJoin                  // joined, then the replay, then what follows
	itemClose                 // close frame, then the end of the connection
	itemRest                  // the rest of a frame partly written: never dropped
)

type item struct {
	kind  itemKind
	id    uint64 // msg_id of a game message frame
	frame []byte // compiled WebSocket frame
	join  *joinJob
}

// joinJob is the seam of a join: joined, replay of (since, head], then the
// live frames queued after it.
type joinJob struct {
	since, head uint64
	joined      []byte // text frame payload
	feed        *sequencer.Feed
	game        string
}

// conn is one client connection. Its reader goroutine (serve) reads and
// handles frames; a writer goroutine runs whenever the send queue is not
// empty and is the only one writing to the socket. A joined connection idle
// for Config.parkAfter is parked: its reader goroutine exits and the
// gateway's poller starts a new one when the client sends something (see
// poller), so an idle connection costs no goroutine.
type conn struct {
	// Static after construction.
	g      *Gateway
	nc     net.Conn
	raw    syscall.RawConn // the socket under nc for writeNowLocked; nil: none
	id     string
	addr   string // the client's source address (for per-address limits)
	bucket uint8  // keepalive group: pinged once every pingBuckets ticks

	// Guarded by g.poll.mu.
	parked bool  // no reader goroutine: the socket is in the poller's epoll
	pfd    int32 // socket descriptor registered while parked

	// Owned by the reader goroutine (one at a time; none while parked).
	graced  bool // the read deadline was set to closeGrace after a close
	noPark  bool // parking failed: the reader waits for the client itself
	fr      frameReader
	hub     *hub
	role    string
	user    string
	seq     uint64        // idempotency counter of this client's messages
	limiter *rate.Limiter // created with the first game message; nil: no limit
	// joinPresence is the presence message holding this player's join
	// until its first game message has waited for it to be stored.
	joinPresence *presenceBatch

	// Owned by the writer goroutine.
	skip uint64 // drop game frames with msg_id ≤ skip (a since beyond head)

	// lastRead is when the reader last got a frame (Gateway.now), set once
	// the connection joined; 0 before. keepalive closes the connection
	// when it is older than two ping intervals, unless appending is set:
	// the reader waits for the outcome of the client's message then, and
	// reads the client's pongs afterwards.
	lastRead  atomic.Int64
	appending atomic.Bool
	// exp is when the connection's token expires (Unix seconds; 0: it
	// joined without one). keepalive closes it then, unless a refresh
	// moved exp.
	exp atomic.Int64

	mu sync.Mutex
	// Guarded by mu.
	queue   []item
	queued  int           // bytes in queue
	writing bool          // a writer goroutine runs
	closing bool          // a close item is queued or the socket is gone
	wdone   chan struct{} // made by waitWriter; closed when the writer exits
	direct  *directWrite  // writeNowLocked's state, made by its first call
}

// directWrite is what writeNowLocked hands its socket callback, kept per
// connection so that the callback, made once, allocates nothing per frame.
type directWrite struct {
	p  []byte // what to write
	n  int    // how much of p the socket took
	fn func(fd uintptr) bool
}

// enqueue adds it to the send queue. A queue over its byte limit means the
// client does not keep up: it is closed with 1013 and may resume with since.
func (c *conn) enqueue(it item) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enqueueLocked(it)
}

func (c *conn) enqueueLocked(it item) {
	if c.closing {
		if it.kind == itemFrame && it.id > 0 {
			c.g.m.dropped("closing")
		}
		return
	}
	if c.queued+len(it.frame) > c.g.cfg.SendQueueBytes && it.kind == itemFrame {
		c.g.m.dropped("slow_consumer")
		c.closeLocked(wire.CloseTryLater, "slow consumer: reconnect with since", "slow_consumer")
		return
	}
	if !c.writing && it.kind == itemFrame {
		// No writer runs, so nothing is queued: try the socket directly,
		// without blocking, and leave only what it did not take to a
		// writer. This saves a goroutine per message to an idle client.
		if it.id > 0 && it.id <= c.skip {
			return
		}
		n := c.writeNowLocked(it.frame)
		if n == len(it.frame) {
			if it.id > 0 {
				c.g.m.wrote(1, n)
			}
			return
		}
		if n > 0 {
			it.kind, it.frame = itemRest, it.frame[n:]
		}
	}
	c.queue = append(c.queue, it)
	c.queued += len(it.frame)
	c.startWriterLocked()
}

func (c *conn) startWriterLocked() {
	if !c.writing {
		c.writing = true
		c.g.wg.Add(1)
		go c.writeLoop()
	}
}

// closeWith queues a close frame after dropping everything not yet written.
func (c *conn) closeWith(code int, text, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, text, reason)
}

func (c *conn) closeLocked(code int, text, reason string) {
	if c.closing {
		return
	}
	// Game messages not yet written are dropped (the client resumes with
	// since); small control frames such as the error explaining the close
	// stay.
	kept := c.queue[:0]
	c.queued = 0
	for _, it := range c.queue {
		if it.kind == itemRest || it.kind == itemFrame && it.id == 0 && len(it.frame) <= 512 {
			kept = append(kept, it)
			c.queued += len(it.frame)
		} else if it.id > 0 {
			c.g.m.dropped("closing")
		}
	}
	c.g.m.closed(reason)
	c.queue = append(kept, item{kind: itemClose, frame: ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), text)))})
	c.closing = true
	c.startWriterLocked()
	// A parked connection gets its reader back to wait for the client's
	// close reply (bounded by closeGrace) and end the connection.
	c.g.poll.wake(c)
}

// closeGrace is how long the gateway waits for the client's answer to its
// close frame before it drops the TCP connection.
const closeGrace = 2 * time.Second

// waitWriter waits, up to d, until no writer runs.
func (c *conn) waitWriter(d time.Duration) {
	c.mu.Lock()
	if !c.writing {
		c.mu.Unlock()
		return
	}
	if c.wdone == nil {
		c.wdone = make(chan struct{})
	}
	done := c.wdone
	c.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 8<<10) }}

// stopWritingLocked marks the writer gone and wakes waitWriter.
func (c *conn) stopWritingLocked() {
	c.writing = false
	if c.wdone != nil {
		close(c.wdone)
		c.wdone = nil
	}
}

// writeLoop writes the queue until it is empty, flushing once per round.
func (c *conn) writeLoop() {
	defer c.g.wg.Done()
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	defer func() {
		bw.Reset(nil)
		bufPool.Put(bw)
	}()
	var spare []item
	for {
		c.mu.Lock()
		items := c.queue
		c.queue, spare = spare[:0], nil
		c.queued = 0
		if len(items) == 0 {
			c.stopWritingLocked()
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.g.cfg.WriteTimeout))
		n, bytes, err := c.writeItems(bw, items)
		if err == nil {
			err = bw.Flush()
		}
		c.g.m.wrote(n, bytes)
		if err == nil && items[len(items)-1].kind == itemClose {
			c.g.log.Debug("gateway: close frame sent", "client", c.id)
			// Close frame sent: wait for the client's close (the reader
			// gets it, or times out) and let the reader end the socket.
			_ = c.nc.SetReadDeadline(time.Now().Add(closeGrace))
			c.mu.Lock()
			c.stopWritingLocked()
			c.queue, c.queued = nil, 0
			c.mu.Unlock()
			return
		}
		if err != nil {
			c.g.log.Debug("gateway: write failed", "client", c.id, "err", err)
			// The socket failed: nothing more can be written.
			_ = c.nc.Close()
			c.mu.Lock()
			c.closing = true
			c.stopWritingLocked()
			c.queue, c.queued = nil, 0
			// Closing the socket dropped it from the poller's epoll: a
			// parked connection needs its reader back to end.
			c.g.poll.wake(c)
			c.mu.Unlock()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.g.m.closed("write_timeout")
			} else if !errors.Is(err, net.ErrClosed) {
				c.g.log.Debug("gateway: write", "client", c.id, "err", err)
			}
			return
		}
		clear(items)
		spare = items
	}
}

// writeItems writes items to bw and returns how many game frames and bytes
// it wrote.
func (c *conn) writeItems(bw *bufio.Writer, items []item) (n, size int, err error) {
	for _, it := range items {
		switch it.kind {
		case itemJoin:
			k, s, err := c.writeJoin(bw, it.join)
			n, size = n+k, size+s
			if err != nil {
				return n, size, err
			}
		case itemClose:
			_, err := bw.Write(it.frame)
			return n, size, err
		default: // itemFrame, itemRest
			if it.id > 0 {
				if it.kind == itemFrame && it.id <= c.skip {
					continue
				}
				n++
				size += len(it.frame)
			}
			if _, err := bw.Write(it.frame); err != nil {
				return n, size, err
			}
		}
	}
	return n, size, nil
}

// writeJoin writes joined and the replay (since, head].
func (c *conn) writeJoin(bw *bufio.Writer, j *joinJob) (n, size int, err error) {
	if err := writeText(bw, j.joined); err != nil {
		return 0, 0, err
	}
	c.skip = max(j.since, j.head)
	if j.since >= j.head {
		return 0, 0, nil
	}
	ctx, cancel := context.WithTimeout(c.g.ctx, c.g.cfg.ReplayTimeout)
	defer cancel()
	err = j.feed.Replay(ctx, j.since, j.head, func(m sequencer.Stored) error {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.g.cfg.WriteTimeout))
		n++
		size += len(m.Data)
		return writeText(bw, m.Data)
	})
	var te *sequencer.TruncatedError
	if errors.As(err, &te) {
		err = c.replayFromArchive(ctx, bw, j, te, &n, &size)
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrShortWrite) {
			return n, size, err
		}
		// The history could not be read: the client must not continue
		// with a gap. It may retry the join.
		c.g.log.Warn("gateway: replay failed", "game", j.game, "client", c.id, "err", err)
		_ = writeText(bw, errorFrame(wire.CodeUnavailable, "history unavailable, reconnect with since="+strconv.FormatUint(j.since, 10), ""))
		_, _ = bw.Write(ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(wire.CloseTryLater, "history unavailable"))))
		_ = bw.Flush()
		return n, size, errReplay
	}
	return n, size, nil
}

var errReplay = errors.New("gateway: replay failed")

// replayFromArchive serves the part of a replay retention removed from the
// stream: the archive up to the stream's first message, then the stream.
// Retention may move the stream's start while this runs (new messages
// push old ones out); then the archive serves the newly removed part too.
func (c *conn) replayFromArchive(ctx context.Context, bw *bufio.Writer, j *joinJob, te *sequencer.TruncatedError, n, size *int) error {
	if c.g.history == nil || te.FirstID == 0 {
		return te
	}
	done := j.since // last msg_id written
	write := func(id uint64, frame []byte) error {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.g.cfg.WriteTimeout))
		*n++
		*size += len(frame)
		done = id
		return writeText(bw, frame)
	}
	for attempt := 0; ; attempt++ {
		if te.FirstID-1 > done {
			if err := c.g.history.Range(ctx, j.game, done, te.FirstID-1, write); err != nil {
				return err
			}
		}
		err := j.feed.Replay(ctx, done, j.head, func(m sequencer.Stored) error { return write(m.ID, m.Data) })
		var moved *sequencer.TruncatedError
		if !errors.As(err, &moved) || moved.FirstID <= te.FirstID || attempt == 8 {
			return err
		}
		te = moved
	}
}

// writeText writes p as one unmasked text frame.
func writeText(w io.Writer, p []byte) error {
	var hdr [10]byte
	if _, err := w.Write(appendTextHeader(hdr[:0], len(p))); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

func appendTextHeader(dst []byte, n int) []byte {
	dst = append(dst, 0x80|byte(ws.OpText))
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n <= 0xffff:
		return append(dst, 126, byte(n>>8), byte(n))
	default:
		return append(dst, 127, byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// textFrame compiles p into one text frame, shared by every recipient.
func textFrame(p []byte) []byte {
	f := make([]byte, 0, len(p)+10)
	f = appendTextHeader(f, len(p))
	return append(f, p...)
}

var (
	pingFrame = ws.MustCompileFrame(ws.NewPingFrame(nil))
)

// ping sends a ping.
func (c *conn) ping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.enqueueLocked(item{kind: itemFrame, frame: pingFrame})
	}
}

// sendError queues an error frame.
func (c *conn) sendError(code, msg string) { c.sendErrorFor(code, msg, "") }

// sendErrorFor queues an error frame about the game message with
// idempotency key idem ("": none given).
func (c *conn) sendErrorFor(code, msg, idem string) {
	c.g.m.error(code)
	c.enqueue(item{kind: itemFrame, frame: textFrame(errorFrame(code, msg, idem))})
}
