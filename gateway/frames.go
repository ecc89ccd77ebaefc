package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Frame-level failures; each closes the connection with its close code.
var (
	errProtocol = &protoError{code: wire.CodeProtocol, msg: "malformed WebSocket frame", closeCode: wire.CloseProtocol}
	errTooBig   = &protoError{code: wire.CodeTooLarge, msg: "message exceeds the size limit", closeCode: wire.CloseTooBig}
)

// errIdle is returned by frameReader.next when the read deadline passed
// while waiting for the first byte of a new message: nothing was read, so
// the connection may be parked or the read retried.
var errIdle = fmt.Errorf("gateway: idle: %w", os.ErrDeadlineExceeded)

// frameReader reads client frames from r: it checks masking and framing
// (and the payload of close frames), unmasks, joins fragmented messages,
// and returns control frames as they come (also in the middle of a
// fragmented message). A message's memory follows the bytes that arrived,
// not the lengths headers announce (appendPayload). Once buffered is set
// (the gateway sets it when a player sends a game message), reads go through a small
// buffer taken from a pool while the connection is active, so a small
// frame, or several, costs one read; release gives the buffer back once it
// is empty (before a connection parks), so an idle connection holds none.
// Before that, a frame costs two reads and no buffer: a crowd of clients
// that join and then only listen never takes one (see docs/benchmarks.md,
// idle connections).
type frameReader struct {
	r   io.Reader
	max int // largest message payload (the gateway lowers it before a join)
	// stall, if > 0, is how long a client may pause in the middle of a
	// message: a deadline passing there is pushed back by stall as long as
	// bytes keep coming (r must have SetReadDeadline). 0: the deadline
	// ends the read.
	stall time.Duration

	hdr  [14]byte  // a frame's header: 2 bytes, then up to 8 of length and 4 of mask
	op   ws.OpCode // op of the message being assembled; 0 if none
	data []byte    // fragments so far

	buffered   bool               // read through buf
	buf        *[readBufSize]byte // nil until the first read after release
	bpos, bend int                // unread bytes are buf[bpos:bend]
}

// preJoinMaxBytes bounds a message before the connection joined a game
// (when MaxMessageBytes is larger): a join or create is small. It leaves
// room for a join with the longest token package token reads (8 KiB,
// maxTokenBytes) and every other field; a connection that sends more
// before joining is closed with too_large, as for any message over the
// limit.
const preJoinMaxBytes = 10 << 10

// readBufSize is the read buffer of an active connection.
const readBufSize = 1024

var readBufPool = sync.Pool{New: func() any { return new([readBufSize]byte) }}

// read reads into p from the buffer, refilling it with one read of r when
// it is empty; reads as large as the buffer go to r directly.
func (fr *frameReader) read(p []byte) (int, error) {
	if fr.bpos == fr.bend {
		if !fr.buffered || len(p) >= readBufSize {
			return fr.r.Read(p)
		}
		if fr.buf == nil {
			fr.buf = readBufPool.Get().(*[readBufSize]byte)
		}
		n, err := fr.r.Read(fr.buf[:])
		fr.bpos, fr.bend = 0, n
		if n == 0 {
			return 0, err
		}
		// An error with data comes back from r on the next read.
	}
	n := copy(p, fr.buf[fr.bpos:fr.bend])
	fr.bpos += n
	return n, nil
}

// pending reports whether bytes read from the socket wait in the buffer.
func (fr *frameReader) pending() bool { return fr.bpos < fr.bend }

// release returns the read buffer to the pool if it holds nothing unread.
func (fr *frameReader) release() {
	if fr.buf != nil && fr.bpos == fr.bend {
		readBufPool.Put(fr.buf)
		fr.buf, fr.bpos, fr.bend = nil, 0, 0
	}
}

// readFull reads len(p) bytes in the middle of a message.
func (fr *frameReader) readFull(p []byte) error {
	extended := false
	for len(p) > 0 {
		n, err := fr.read(p)
		p = p[n:]
		switch {
		case len(p) == 0:
			return nil
		case n > 0:
			extended = false
		}
		switch {
		case err == nil:
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case fr.stall > 0 && !extended && errors.Is(err, os.ErrDeadlineExceeded):
			d, ok := fr.r.(interface{ SetReadDeadline(time.Time) error })
			if !ok || d.SetReadDeadline(time.Now().Add(fr.stall)) != nil {
				return err
			}
			extended = true
		default:
			return err
		}
	}
	return nil
}

// readHeader reads the first two bytes of a frame. Between messages it
// returns errIdle if the deadline passes before the first byte.
func (fr *frameReader) readHeader() error {
	if fr.op != 0 {
		return fr.readFull(fr.hdr[:2]) // within a fragmented message
	}
	for {
		n, err := fr.read(fr.hdr[:2])
		switch {
		case n == 2:
			return nil
		case n == 1:
			return fr.readFull(fr.hdr[1:2])
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			return errIdle
		default:
			return err
		}
	}
}

// next returns the next control frame or complete data message. The
// returned payload is owned by the caller.
func (fr *frameReader) next() (ws.OpCode, []byte, error) {
	for {
		if err := fr.readHeader(); err != nil {
			return 0, nil, err
		}
		b0, b1 := fr.hdr[0], fr.hdr[1]
		fin, rsv, op := b0&0x80 != 0, b0&0x70, ws.OpCode(b0&0x0f)
		masked, n := b1&0x80 != 0, int64(b1&0x7f)
		if rsv != 0 || !masked || op.IsReserved() {
			return 0, nil, errProtocol
		}
		var mask [4]byte
		switch n {
		case 126, 127:
			extLen := 8
			if n == 126 {
				extLen = 2
			}
			ext := fr.hdr[2 : 2+extLen+4]
			if err := fr.readFull(ext); err != nil {
				return 0, nil, err
			}
			if n == 126 {
				n = int64(binary.BigEndian.Uint16(ext))
			} else {
				u := binary.BigEndian.Uint64(ext)
				if u > 1<<62 {
					return 0, nil, errProtocol
				}
				n = int64(u)
			}
			copy(mask[:], ext[len(ext)-4:])
		}
		if op.IsControl() {
			if !fin || n > 125 {
				return 0, nil, errProtocol
			}
		} else {
			switch {
			case op == ws.OpContinuation && fr.op == 0:
				return 0, nil, errProtocol
			case op != ws.OpContinuation && fr.op != 0:
				return 0, nil, errProtocol
			}
			if int64(len(fr.data))+n > int64(fr.max) {
				return 0, nil, errTooBig
			}
		}
		var p, whole []byte // whole: the message so far, p included, if p was read onto it
		if b1&0x7f < 126 {
			// Short frames: mask and payload in one read.
			buf := make([]byte, 4+n)
			if err := fr.readFull(buf); err != nil {
				return 0, nil, err
			}
			copy(mask[:], buf[:4])
			p = buf[4:]
		} else {
			// Longer ones (data frames only) go straight after the
			// fragments so far (none for a new message), in a buffer
			// that grows as the bytes arrive.
			var err error
			if whole, err = fr.appendPayload(fr.data, int(n)); err != nil {
				return 0, nil, err
			}
			p = whole[len(fr.data):]
		}
		ws.Cipher(p, mask, 0)
		if op.IsControl() {
			if op == ws.OpClose {
				if err := checkClose(p); err != nil {
					return 0, nil, err
				}
			}
			return op, p, nil
		}
		if op != ws.OpContinuation {
			if fin {
				return op, p, nil // unfragmented: the common case
			}
			fr.op = op
		}
		if whole != nil {
			fr.data = whole
		} else {
			fr.data = append(fr.data, p...)
		}
		if fin {
			op, p := fr.op, fr.data
			fr.op, fr.data = 0, nil
			return op, p, nil
		}
	}
}

// payloadChunk is how much room a long frame's buffer starts with, and
// the least it grows by.
const payloadChunk = 4 << 10

// appendPayload reads a payload of n bytes onto dst. The buffer grows with
// the bytes that arrived, not with the length the header announced: it
// starts with room for payloadChunk bytes (or n, if less) and, each time
// it is full, grows to four times its length (by payloadChunk at least,
// and no further than the payload's end). So a client that announces a
// large frame and then sends little of it holds payloadChunk bytes, or
// four times what it sent, not what it announced. A payload of up to
// payloadChunk bytes takes one allocation and no copy; one of 64 KiB takes
// three (4, 16 and 64 KiB) and copies 20 KiB. (Doubling would bound the
// memory tighter, but makes a 64 KiB message take about twice as long:
// BenchmarkFrameRead.)
func (fr *frameReader) appendPayload(dst []byte, n int) ([]byte, error) {
	end := len(dst) + n
	for len(dst) < end {
		if len(dst) == cap(dst) {
			grown := make([]byte, len(dst), len(dst)+min(end-len(dst), max(payloadChunk, 3*len(dst))))
			copy(grown, dst)
			dst = grown
		}
		k := min(end, cap(dst))
		if err := fr.readFull(dst[len(dst):k]); err != nil {
			return nil, err
		}
		dst = dst[:k]
	}
	return dst, nil
}

// checkClose returns a protocol error if p, the payload of a client's close
// frame, is not one RFC 6455 lets an endpoint send: empty, or a status code
// of two bytes followed by a reason in UTF-8 (§5.5.1), and the code one an
// endpoint may send (§7.4).
func checkClose(p []byte) error {
	switch {
	case len(p) == 0:
		return nil
	case len(p) == 1:
		return closeError("a 1-byte payload")
	}
	code := binary.BigEndian.Uint16(p)
	switch {
	case !sendableCloseCode(code):
		return closeError("code " + strconv.Itoa(int(code)) + " may not be sent")
	case !utf8.Valid(p[2:]):
		return closeError("the reason is not UTF-8")
	}
	return nil
}

func closeError(what string) error {
	return &protoError{code: errProtocol.code, msg: "invalid close frame: " + what, closeCode: wire.CloseProtocol}
}

// sendableCloseCode reports whether an endpoint may send code in a close
// frame (RFC 6455 §7.4):
//   - 0–999 are not used (§7.4.2);
//   - 1000–2999 are for the protocol (§7.4.2): 1000–1003 and 1007–1011 are
//     defined (§7.4.1), and 1012–1014 registered with IANA since (the
//     registry of §11.7); 1004 is reserved and 1005, 1006 and 1015 MUST
//     NOT be sent (§7.4.1); the rest is unassigned;
//   - 3000–3999 are registered with IANA by libraries, frameworks and
//     applications, and 4000–4999 are for private use (§7.4.2);
//   - the RFC defines nothing above 4999.
func sendableCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
