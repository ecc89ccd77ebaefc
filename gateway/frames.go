package gateway

import (
	"errors"
	"io"

	"github.com/gobwas/ws"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Frame-level failures; each closes the connection with its close code.
var (
	errProtocol = &protoError{code: "protocol", msg: "malformed WebSocket frame", closeCode: wire.CloseProtocol}
	errTooBig   = &protoError{code: wire.CodeTooLarge, msg: "message exceeds the size limit", closeCode: wire.CloseTooBig}
)

// frameReader reads client frames from r: it checks masking and framing,
// unmasks, joins fragmented messages, and returns control frames as they
// come (also in the middle of a fragmented message).
type frameReader struct {
	r   io.Reader
	max int // largest message payload

	hdr  [ws.MaxHeaderSize - 2]byte
	op   ws.OpCode // op of the message being assembled; 0 if none
	data []byte    // fragments so far
}

// next returns the next control frame or complete data message. The
// returned payload is owned by the caller.
func (fr *frameReader) next() (ws.OpCode, []byte, error) {
	for {
		h, err := ws.ReadHeaderBuffer(fr.r, fr.hdr[:0])
		if err != nil {
			if errors.Is(err, ws.ErrHeaderLengthUnexpected) || errors.Is(err, ws.ErrHeaderLengthMSB) {
				return 0, nil, errProtocol
			}
			return 0, nil, err
		}
		if h.Rsv != 0 || !h.Masked || h.OpCode.IsReserved() {
			return 0, nil, errProtocol
		}
		if h.OpCode.IsControl() {
			if !h.Fin || h.Length > 125 {
				return 0, nil, errProtocol
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(fr.r, p); err != nil {
				return 0, nil, err
			}
			ws.Cipher(p, h.Mask, 0)
			return h.OpCode, p, nil
		}
		switch {
		case h.OpCode == ws.OpContinuation && fr.op == 0:
			return 0, nil, errProtocol
		case h.OpCode != ws.OpContinuation && fr.op != 0:
			return 0, nil, errProtocol
		}
		if int64(len(fr.data))+h.Length > int64(fr.max) {
			return 0, nil, errTooBig
		}
		if h.OpCode != ws.OpContinuation {
			fr.op = h.OpCode
		}
		start := len(fr.data)
		if fr.data == nil && h.Fin {
			fr.data = make([]byte, h.Length)
		} else {
			fr.data = append(fr.data, make([]byte, h.Length)...)
		}
		if _, err := io.ReadFull(fr.r, fr.data[start:]); err != nil {
			return 0, nil, err
		}
		ws.Cipher(fr.data[start:], h.Mask, 0)
		if h.Fin {
			op, p := fr.op, fr.data
			fr.op, fr.data = 0, nil
			return op, p, nil
		}
	}
}
