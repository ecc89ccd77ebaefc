package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// clientFrames encodes messages as a browser would: masked text frames.
func clientFrames(msgs ...string) []byte {
	var b bytes.Buffer
	for _, m := range msgs {
		_ = wsutil.WriteClientText(&b, []byte(m))
	}
	return b.Bytes()
}

// FuzzDecodeFrame drives raw client bytes through the frame reader and the
// message decoder, as the connection's reader does. Whatever the input: no
// panic, no message beyond the size limit, and every accepted game message
// becomes a valid JSON object carrying the gateway's client_id.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(clientFrames(`{"type":"join","game":"g1","token":"a.b.c","since":4}`))
	f.Add(clientFrames(`{"type":"join","room":"lobby"}`, `{"type":"chat","text":"hi"}`))
	f.Add(clientFrames(`{"type":"create"}`))
	f.Add(clientFrames(`{"type":"move","col":3,"board":[[0,1],[2,0]]}`))
	f.Add(clientFrames(`{"type":"move","msg_id":1}`, `[1]`, `{"type":3}`, `{"x":1}`))
	f.Add(clientFrames(`{"type":"move","\u0063lient_id":"x"}`))
	var frag bytes.Buffer
	_ = ws.WriteFrame(&frag, ws.MaskFrame(ws.NewFrame(ws.OpText, false, []byte(`{"type":`))))
	_ = ws.WriteFrame(&frag, ws.MaskFrame(ws.NewPingFrame([]byte("p"))))
	_ = ws.WriteFrame(&frag, ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, []byte(`"move"}`))))
	f.Add(frag.Bytes())
	f.Add([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}) // unmasked
	f.Add(rawFrame(ws.OpClose, true, []byte{0x03, 0xe8, 'b', 'y', 'e'}))
	f.Add(rawFrame(ws.OpClose, true, []byte{0x03, 0xed}))
	f.Add(rawFrame(ws.OpClose, true, []byte{0x03}))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := frameReader{r: bytes.NewReader(data), max: 4096}
		for i := 0; i < 64; i++ {
			op, p, err := fr.next()
			if err != nil {
				var pe *protoError
				if !errors.As(err, &pe) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error kind %T: %v", err, err)
				}
				return
			}
			if len(p) > 4096 {
				t.Fatalf("message of %d bytes passed a 4096 limit", len(p))
			}
			if op == ws.OpClose {
				checkCloseAllowed(t, p)
			}
			if op != ws.OpText {
				continue
			}
			req, perr := decodeRequest(p)
			if perr != nil {
				if perr.code == "" {
					t.Fatal("error without code")
				}
				continue
			}
			if req.kind == kindGame {
				out := gameBody(req.body, "gw-1", "user\"x")
				var m map[string]any
				if err := json.Unmarshal(out, &m); err != nil {
					t.Fatalf("game body %q not JSON: %v", out, err)
				}
				if m["client_id"] != "gw-1" || m["user"] != "user\"x" {
					t.Fatalf("sender fields wrong in %s", out)
				}
			}
		}
	})
}

func TestFragmentedMessages(t *testing.T) {
	var b bytes.Buffer
	for _, f := range []ws.Frame{
		ws.NewFrame(ws.OpText, false, nil), // empty first fragment
		ws.NewPingFrame([]byte("p")),
		ws.NewFrame(ws.OpContinuation, false, []byte(`{"type":`)),
		ws.NewFrame(ws.OpContinuation, true, []byte(`"move"}`)),
		ws.NewTextFrame([]byte(`{"type":"x"}`)),
	} {
		_ = ws.WriteFrame(&b, ws.MaskFrame(f))
	}
	fr := frameReader{r: &b, max: 1024}
	for _, want := range []struct {
		op ws.OpCode
		p  string
	}{{ws.OpPing, "p"}, {ws.OpText, `{"type":"move"}`}, {ws.OpText, `{"type":"x"}`}} {
		op, p, err := fr.next()
		if err != nil || op != want.op || string(p) != want.p {
			t.Fatalf("got %v %q %v, want %v %q", op, p, err, want.op, want.p)
		}
	}
	if _, _, err := fr.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
	// A continuation without a start, and a message over the limit.
	for name, f := range map[string]ws.Frame{
		"orphan continuation": ws.NewFrame(ws.OpContinuation, true, []byte("x")),
		"too big":             ws.NewTextFrame(bytes.Repeat([]byte("x"), 2000)),
		"unmasked":            ws.NewTextFrame([]byte("{}")),
	} {
		var b bytes.Buffer
		if name == "unmasked" {
			_ = ws.WriteFrame(&b, f)
		} else {
			_ = ws.WriteFrame(&b, ws.MaskFrame(f))
		}
		fr := frameReader{r: &b, max: 1024}
		var pe *protoError
		if _, _, err := fr.next(); !errors.As(err, &pe) {
			t.Fatalf("%s: got %v", name, err)
		}
	}
}

// Frames of every size class come out whole however the socket splits
// them: in one read with others, byte by byte, or larger than the buffer.
func TestFrameReaderBuffering(t *testing.T) {
	var b bytes.Buffer
	var want []string
	for i, n := range []int{10, 2000, 5, readBufSize - 6, readBufSize, 70000, 1} {
		p := `{"type":"` + strings.Repeat(string(rune('a'+i)), n) + `"}`
		want = append(want, p)
		_ = ws.WriteFrame(&b, ws.MaskFrame(ws.NewTextFrame([]byte(p))))
	}
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"halves":   iotest.HalfReader,
	} {
		t.Run(name, func(t *testing.T) {
			fr := frameReader{r: wrap(bytes.NewReader(b.Bytes())), max: 1 << 20, buffered: true}
			for i, w := range want {
				op, p, err := fr.next()
				if err != nil || op != ws.OpText || string(p) != w {
					t.Fatalf("frame %d: got %v, %d bytes, %v; want %d bytes", i, op, len(p), err, len(w))
				}
			}
			if _, _, err := fr.next(); !errors.Is(err, io.EOF) {
				t.Fatalf("end: %v", err)
			}
			if fr.pending() {
				t.Fatal("bytes left in the buffer at the end")
			}
			fr.release()
			if fr.buf != nil {
				t.Fatal("release kept the buffer")
			}
		})
	}
}

// cutReader hands out stream in pieces: read i returns at most cuts[i]+1
// bytes (cycling through cuts; all that is left if cuts is empty). It
// checks that the frame reader never asks for much more room than the
// bytes it has had: a buffer grows with what arrived (see appendPayload),
// so a read may offer room for payloadChunk bytes, or three times those
// delivered so far, at most.
type cutReader struct {
	t         *testing.T
	stream    []byte
	cuts      []byte
	i         int
	delivered int
}

func (r *cutReader) Read(p []byte) (int, error) {
	if room := cap(p); room > max(payloadChunk, 3*r.delivered) {
		r.t.Fatalf("a read offers room for %d bytes after %d bytes arrived", room, r.delivered)
	}
	if len(r.stream) == 0 {
		return 0, io.EOF
	}
	n := len(r.stream)
	if len(r.cuts) > 0 {
		n = min(n, int(r.cuts[r.i%len(r.cuts)])+1)
		r.i++
	}
	n = copy(p, r.stream[:n])
	r.stream = r.stream[n:]
	r.delivered += n
	return n, nil
}

// frameEvent is what one call of frameReader.next returned.
type frameEvent struct {
	op  ws.OpCode
	p   string
	err string
}

// readEvents reads fr to its first error.
func readEvents(fr *frameReader) []frameEvent {
	var evs []frameEvent
	for {
		op, p, err := fr.next()
		if err != nil {
			return append(evs, frameEvent{err: err.Error()})
		}
		evs = append(evs, frameEvent{op: op, p: string(p)})
	}
}

// FuzzFrameReader reads a stream of client frames whole, and again in the
// pieces cuts makes, through the read buffer or not: both give the same
// frames and the same error, and neither asks for room much beyond the
// bytes that arrived (cutReader), whatever lengths the headers announce.
// Close frames it returns are ones RFC 6455 lets a client send.
func FuzzFrameReader(f *testing.F) {
	long := func(op ws.OpCode, fin bool, n int) []byte {
		var b bytes.Buffer
		_ = ws.WriteFrame(&b, ws.MaskFrame(ws.NewFrame(op, fin, bytes.Repeat([]byte("x"), n))))
		return b.Bytes()
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	f.Add(clientFrames(`{"type":"move"}`), []byte{0}, false)
	f.Add(long(ws.OpText, true, 5000), []byte{200, 7}, false)
	f.Add(long(ws.OpText, true, 20000), []byte{255}, true)
	f.Add(long(ws.OpText, true, 70000), []byte{}, false)
	f.Add(cat(long(ws.OpText, false, 3000), long(ws.OpPing, true, 3), long(ws.OpContinuation, false, 6000),
		long(ws.OpContinuation, true, 100)), []byte{3, 250, 1}, true)
	f.Add(cat(long(ws.OpText, false, 10), long(ws.OpContinuation, true, 9000)), []byte{}, false)
	// Announced, not sent.
	f.Add([]byte{0x81, 0xfe, 0xff, 0xff, 1, 2, 3, 4, 'x', 'y'}, []byte{}, false)
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4, 'x'}, []byte{0}, true)
	f.Add([]byte{0x01, 0x81, 0, 0, 0, 0, 'x', 0x80, 0xfe, 0xff, 0x00, 1, 2, 3, 4}, []byte{}, false)
	// Close frames, valid and not.
	f.Add(long(ws.OpClose, true, 0), []byte{0}, false)
	f.Add(rawFrame(ws.OpClose, true, []byte{0x03, 0xe8, 'o', 'k'}), []byte{}, false)
	f.Add(rawFrame(ws.OpClose, true, []byte{0x03}), []byte{}, false)
	f.Add(rawFrame(ws.OpClose, true, []byte{0x03, 0xed}), []byte{}, false)
	f.Add(rawFrame(ws.OpClose, true, []byte{0x03, 0xe8, 0xff}), []byte{}, false)
	f.Add(rawFrame(ws.OpClose, true, []byte{0x13, 0x88}), []byte{1}, true)
	f.Fuzz(func(t *testing.T, stream, cuts []byte, buffered bool) {
		const max = 1 << 17
		want := readEvents(&frameReader{r: &cutReader{t: t, stream: stream}, max: max})
		got := readEvents(&frameReader{r: &cutReader{t: t, stream: stream, cuts: cuts}, max: max, buffered: buffered})
		if len(got) != len(want) {
			t.Fatalf("%d results in pieces, %d whole", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("result %d: in pieces %v %d bytes %q, whole %v %d bytes %q",
					i, got[i].op, len(got[i].p), got[i].err, want[i].op, len(want[i].p), want[i].err)
			}
			if want[i].op == ws.OpClose {
				checkCloseAllowed(t, []byte(want[i].p))
			}
		}
	})
}

// checkCloseAllowed fails unless p is a close payload RFC 6455 lets an
// endpoint send: empty, or a code followed by UTF-8 (§5.5.1); the code one
// of 1000–1003, 1007–1014 (§7.4.1 and the IANA registry) or 3000–4999
// (§7.4.2).
func checkCloseAllowed(t *testing.T, p []byte) {
	t.Helper()
	if len(p) == 0 {
		return
	}
	if len(p) == 1 {
		t.Fatal("close frame with a 1-byte payload accepted")
	}
	code, reason := ws.ParseCloseFrameData(p)
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
	default:
		t.Fatalf("close code %d accepted", code)
	}
	if !utf8.ValidString(reason) {
		t.Fatalf("close reason %q accepted", reason)
	}
}
