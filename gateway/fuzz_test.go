package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

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
