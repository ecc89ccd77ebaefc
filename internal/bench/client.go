package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// entry is one delivered message as a client saw it.
type entry struct {
	id   uint64
	hash uint64 // FNV-1a of the frame bytes
}

// bclient is one benchmark connection with its own reader goroutine.
type bclient struct {
	// Static after dial.
	idx  int // global index, the "s" field of its messages
	game string
	conn net.Conn
	br   *bufio.Reader

	// Set before the reader goroutine starts.
	since   uint64   // the join's since: the replay starts after it unless joined says otherwise
	history *uint64  // the join's "history", if sent
	keep    bool     // record entries (order verification by sameSequence)
	log     *gameLog // check each frame against the game's other clients (instead of entries)
	watch   uint64
	hit     chan struct{} // closed when msg_id watch arrives

	wmu sync.Mutex // guards writes to conn

	// Owned by the reader goroutine until done is closed.
	own, all    *hist
	entries     []entry
	lastID      uint64
	start, head uint64 // from joined: the replay is start+1 … head
	violations  uint64
	replayed    uint64 // sequenced frames with msg_id ≤ head
	unsequenced uint64 // frames without msg_id other than joined and error, ignored
	errs        map[string]uint64
	closeCode   ws.StatusCode

	// Written by the reader goroutine, read by any.
	seen    atomic.Uint64 // lastID
	recv    atomic.Uint64 // sequenced frames received
	lastAt  atomic.Int64  // when the last sequenced frame arrived, Unix ns
	ownBack atomic.Uint64 // own benchmark messages received back

	// Written by whoever sends (one goroutine at a time), read by any.
	sent atomic.Uint64 // benchmark messages sent

	joined   chan uint64   // head, once
	complete chan struct{} // closed once joined arrived and the replay up to head did
	refused  chan string   // the code of the first error frame before complete
	ownMsg   chan struct{} // pingpong: own message came back
	done     chan struct{}
}

func dialClient(ctx context.Context, url string, local net.Addr, idx int, game string) (*bclient, error) {
	d := ws.Dialer{Timeout: 10 * time.Second}
	if local != nil {
		nd := &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
		d.NetDial = nd.DialContext
	}
	conn, _, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	return &bclient{
		idx: idx, game: game, conn: conn, br: bufio.NewReaderSize(conn, 2048),
		own: newHist(), all: newHist(), errs: make(map[string]uint64),
		joined: make(chan uint64, 1), complete: make(chan struct{}), refused: make(chan string, 1),
		ownMsg: make(chan struct{}, 1), done: make(chan struct{}),
	}, nil
}

func (c *bclient) write(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wsutil.WriteClientText(c.conn, p)
}

// join sends the join frame with c.since (and c.history, if set).
func (c *bclient) join(token string) error {
	msg := `{"type":"join","game":"` + c.game + `","since":` + strconv.FormatUint(c.since, 10)
	if c.history != nil {
		msg += `,"history":` + strconv.FormatUint(*c.history, 10)
	}
	if token != "" {
		msg += `,"token":"` + token + `"`
	}
	return c.write([]byte(msg + "}"))
}

// send sends one benchmark message stamped with the send time.
func (c *bclient) send(pad []byte) error {
	b := make([]byte, 0, len(pad)+64)
	b = append(b, `{"type":"b","s":`...)
	b = strconv.AppendInt(b, int64(c.idx), 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, `,"p":"`...)
	b = append(b, pad...)
	b = append(b, `"}`...)
	if err := c.write(b); err != nil {
		return err
	}
	c.sent.Add(1)
	return nil
}

var (
	keyMsgID = []byte(`"msg_id":`)
	keyT     = []byte(`"t":`)
	keyS     = []byte(`"s":`)
	keyType  = []byte(`"type":"`)
	keyCode  = []byte(`"code":"`)
	keyHead  = []byte(`"head":`)
	keySince = []byte(`"since":`)
)

// record says what clients remember of what they receive.
type record uint8

const (
	countOnly   record = iota // counts and order checks
	keepEntries               // also every message's id and hash, for sameSequence
)

// intAfter parses the unsigned integer following the first key in p, or -1.
func intAfter(p, key []byte) int64 { return intAt(p, bytes.Index(p, key), key) }

// lastIntAfter parses the unsigned integer following the last key in p, or -1.
func lastIntAfter(p, key []byte) int64 { return intAt(p, bytes.LastIndex(p, key), key) }

// intAt parses the unsigned integer following key found at i in p, or -1.
func intAt(p []byte, i int, key []byte) int64 {
	if i < 0 {
		return -1
	}
	i += len(key)
	var n int64
	j := i
	for j < len(p) && p[j] >= '0' && p[j] <= '9' {
		n = n*10 + int64(p[j]-'0')
		j++
	}
	if j == i {
		return -1
	}
	return n
}

func strAfter(p, key []byte) string {
	i := bytes.Index(p, key)
	if i < 0 {
		return ""
	}
	p = p[i+len(key):]
	if j := bytes.IndexByte(p, '"'); j >= 0 {
		return string(p[:j])
	}
	return ""
}

// readLoop reads until the connection ends. It checks that the sequenced
// frames (those with a msg_id) are dense and in order from the start the
// joined frame gives: its "since" if it has one, else the join's since.
// Frames without msg_id other than joined and error (e.g. audience counts)
// are not part of the game's sequence and are ignored.
func (c *bclient) readLoop() {
	defer close(c.done)
	var hdr [ws.MaxHeaderSize - 2]byte
	var buf []byte
	joined, completed := false, false
	for {
		h, err := ws.ReadHeaderBuffer(c.br, hdr[:0])
		if err != nil {
			return
		}
		if int64(cap(buf)) < h.Length {
			buf = make([]byte, h.Length)
		}
		p := buf[:h.Length]
		if _, err := io.ReadFull(c.br, p); err != nil {
			return
		}
		switch h.OpCode {
		case ws.OpPing:
			c.wmu.Lock()
			_ = wsutil.WriteClientMessage(c.conn, ws.OpPong, p)
			c.wmu.Unlock()
			continue
		case ws.OpClose:
			if len(p) >= 2 {
				c.closeCode = ws.StatusCode(binary.BigEndian.Uint16(p))
			}
			return
		case ws.OpText:
		default:
			continue
		}
		now := time.Now()
		typ := strAfter(p, keyType)
		switch typ {
		case "joined":
			if !joined {
				joined = true
				c.head = uint64(max(intAfter(p, keyHead), 0))
				c.start = c.since
				if s := intAfter(p, keySince); s >= 0 {
					c.start = uint64(s)
				}
				c.joined <- c.head
				if c.start >= c.head || c.lastID >= c.head {
					completed = true
					close(c.complete)
				}
			}
			continue
		case "error":
			code := strAfter(p, keyCode)
			c.errs[code]++
			if !completed {
				select {
				case c.refused <- code:
				default:
				}
			}
			continue
		}
		id := lastIntAfter(p, keyMsgID)
		if id <= 0 {
			c.unsequenced++
			continue
		}
		uid := uint64(id)
		switch {
		case c.lastID != 0:
			if uid != c.lastID+1 {
				c.violations++
			}
		case joined && uid != c.start+1:
			c.violations++ // the first frame is not where the replay starts
		}
		if uid > c.lastID {
			c.lastID = uid
			c.seen.Store(uid)
		}
		c.recv.Add(1)
		c.lastAt.Store(now.UnixNano())
		if joined && uid <= c.head {
			c.replayed++
		}
		if c.keep || c.log != nil {
			h := fnv.New64a()
			h.Write(p)
			if c.keep {
				c.entries = append(c.entries, entry{uid, h.Sum64()})
			}
			if c.log != nil {
				c.log.check(uid, h.Sum64())
			}
		}
		if joined && !completed && c.lastID >= c.head {
			completed = true
			close(c.complete)
		}
		if c.hit != nil && uid >= c.watch {
			close(c.hit)
			c.hit = nil
		}
		if typ == "b" {
			if t := intAfter(p, keyT); t > 0 {
				d := now.Sub(time.Unix(0, t))
				c.all.record(d)
				if intAfter(p, keyS) == int64(c.idx) {
					c.own.record(d)
					c.ownBack.Add(1)
					select {
					case c.ownMsg <- struct{}{}:
					default:
					}
				}
			}
		}
	}
}

// waitJoined returns the head reported by joined.
func (c *bclient) waitJoined(ctx context.Context) (uint64, error) {
	select {
	case h := <-c.joined:
		return h, nil
	case <-c.done:
		return 0, fmt.Errorf("connection closed before joined (close code %d, errors %v)", c.closeCode, c.errs)
	case <-ctx.Done():
		return 0, errors.New("no joined in time")
	}
}

func (c *bclient) close() {
	c.wmu.Lock()
	_ = wsutil.WriteClientMessage(c.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	c.wmu.Unlock()
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
	_ = c.conn.Close()
	<-c.done
}
