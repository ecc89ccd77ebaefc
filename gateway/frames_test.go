package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/gamerelay/gamerelay/gateway/token"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// rawFrame encodes one masked client frame.
func rawFrame(op ws.OpCode, fin bool, p []byte) []byte {
	var b bytes.Buffer
	_ = ws.WriteFrame(&b, ws.MaskFrame(ws.NewFrame(op, fin, p)))
	return b.Bytes()
}

// write writes p to the server, one byte at a time if bytewise.
func (c *client) write(p []byte, bytewise bool) {
	c.t.Helper()
	step := len(p)
	if bytewise {
		step = 1
	}
	for len(p) > 0 {
		n := min(step, len(p))
		if _, err := (lockedRW{c}).Write(p[:n]); err != nil {
			c.t.Fatalf("write: %v", err)
		}
		p = p[n:]
	}
}

// readersInPayload counts the gateway's reader goroutines waiting for the
// rest of a frame's payload.
func readersInPayload() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "gateway.(*frameReader).next(") &&
			strings.Contains(g, "gateway.(*frameReader).readFull(") &&
			!strings.Contains(g, "gateway.(*frameReader).readHeader(") {
			n++
		}
	}
	return n
}

// liveHeap returns the bytes of live heap objects, after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// Clients that announce large frames and send a few bytes of each hold
// little of the gateway's memory: a frame's buffer grows with the bytes
// that arrived, not with the length its header announced.
func TestAnnouncedFramesHoldLittle(t *testing.T) {
	const (
		conns     = 1000
		announced = 64<<10 - 1 // within the default MaxMessageBytes: not refused
		sent      = 18         // payload bytes each client sends
	)
	// The bound: a buffer of payloadChunk (4 KiB) per connection is 4 MB
	// for 1,000 of them; the rest is the noise of a running system.
	// Buffers allocated at the announced length would hold 64 KiB per
	// connection: 64 MB, and still 21 MB if only the third of the
	// connections using one of the framings below got them.
	const bound = 16 << 20
	s := newSystem(t, 1, Config{AllowAnonymous: true})
	tg := s.gws[0]
	// Spectators, who add nothing to the log, so that the measure sees
	// no presence traffic; they may send frames like anyone.
	const game = "announce"
	owner := dial(t, tg.url)
	owner.send(joinMsg(game, mint(t, testSecret, game, token.RolePlayer, time.Hour), 0))
	owner.expect("joined")
	owner.expect("presence")
	watch := mint(t, testSecret, game, token.RoleSpectator, time.Hour)

	// Each framing announces the same length; every third connection
	// uses one of them.
	mask := []byte{1, 2, 3, 4}
	framings := map[string][]byte{
		// 126: a 16-bit length follows.
		"16-bit length": append([]byte{0x81, 0x80 | 126, announced >> 8, announced & 0xff}, mask...),
		// 127: a 64-bit length follows.
		"64-bit length": append(binary.BigEndian.AppendUint64([]byte{0x81, 0x80 | 127}, announced), mask...),
		// A first fragment, then a continuation announcing the rest.
		"continuation": append(rawFrame(ws.OpText, false, []byte(`{"type":"x",`)),
			append([]byte{0x80, 0x80 | 126, (announced - 12) >> 8, (announced - 12) & 0xff}, mask...)...),
	}
	var frames [][]byte
	for name, f := range framings {
		t.Logf("%s: % x …", name, f)
		frames = append(frames, append(f, make([]byte, sent)...))
	}
	// Bare sockets: the test's own clients must not weigh in the measure.
	cs := make([]net.Conn, conns)
	for i := range cs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, _, _, err := ws.Dial(ctx, tg.url)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if err := wsutil.WriteClientText(c, []byte(joinMsg(game, watch, 0))); err != nil {
			t.Fatal(err)
		}
		if p, err := wsutil.ReadServerText(c); err != nil || !bytes.Contains(p, []byte(`"type":"joined"`)) {
			t.Fatalf("join %d: %s %v", i, p, err)
		}
		cs[i] = c
	}
	before := liveHeap()
	for i, c := range cs {
		if _, err := c.Write(frames[i%len(frames)]); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 30*time.Second, "every reader to wait for the rest of its payload", func() bool {
		return readersInPayload() >= conns
	})
	held := int64(liveHeap()) - int64(before)
	t.Logf("%d connections announcing %d bytes each hold %.1f MB (buffers of the announced length: %.1f MB)",
		conns, announced, float64(held)/1e6, float64(conns*announced)/1e6)
	if held > bound {
		t.Fatalf("held %d bytes, want at most %d", held, bound)
	}
	runtime.KeepAlive(cs)
}

// A message over preJoinMaxBytes before a join closes the connection with
// too_large and 1009; once joined, MaxMessageBytes applies.
func TestPreJoinMessageLimit(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true})
	url := s.gws[0].url
	big := `{"type":"move","x":"` + strings.Repeat("x", preJoinMaxBytes+1-22) + `"}`
	if len(big) != preJoinMaxBytes+1 {
		t.Fatalf("message of %d bytes", len(big))
	}
	// A join of exactly preJoinMaxBytes (padded with JSON whitespace).
	join := `{"type":"join","game":"cap"`
	join += strings.Repeat(" ", preJoinMaxBytes-len(join)-1) + "}"
	half := len(big) / 2

	for name, tc := range map[string]struct {
		join   bool     // join first
		frames [][]byte // then send these
		close  ws.StatusCode
	}{
		"over the limit before a join": {false, [][]byte{rawFrame(ws.OpText, true, []byte(big))}, wire.CloseTooBig},
		"over the limit in fragments before a join": {false, [][]byte{
			rawFrame(ws.OpText, false, []byte(big[:half])),
			rawFrame(ws.OpContinuation, true, []byte(big[half:])),
		}, wire.CloseTooBig},
		"a join at the limit":             {false, [][]byte{rawFrame(ws.OpText, true, []byte(join))}, 0},
		"over the pre-join limit, joined": {true, [][]byte{rawFrame(ws.OpText, true, []byte(big))}, 0},
	} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, url)
			if tc.join {
				c.send(`{"type":"join","game":"cap"}`)
				c.expect("joined")
			}
			for _, f := range tc.frames {
				c.write(f, false)
			}
			m := nextNotPresence(c)
			if tc.close != 0 {
				if m["type"] != "error" || m["code"] != wire.CodeTooLarge {
					t.Fatalf("got %v, want error %s", m, wire.CodeTooLarge)
				}
				if code := c.closed(5 * time.Second); code != tc.close {
					t.Fatalf("closed with %d, want %d", code, tc.close)
				}
				return
			}
			if tc.join {
				if m["type"] != "move" || len(m["x"].(string)) != preJoinMaxBytes+1-22 || id(m) == 0 {
					t.Fatalf("got %.200v, want the message back, stored", m)
				}
			} else if m["type"] != "joined" {
				t.Fatalf("got %v, want joined", m)
			}
		})
	}
}

// A close frame RFC 6455 does not allow is answered with 1002; a valid one
// is echoed (an empty one with 1000). Written one byte at a time, so that
// every part of the frame arrives on its own.
func TestCloseFrames(t *testing.T) {
	s := newSystem(t, 1, Config{AllowAnonymous: true})
	url := s.gws[0].url
	body := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	for name, tc := range map[string]struct {
		payload []byte
		want    ws.StatusCode
	}{
		"empty":                 {nil, 1000},
		"1000 with a reason":    {body(1000, "bye — à bientôt"), 1000},
		"1001":                  {body(1001, ""), 1001},
		"1011":                  {body(1011, ""), 1011},
		"1014 (IANA)":           {body(1014, ""), 1014},
		"3000":                  {body(3000, "app"), 3000},
		"4999":                  {body(4999, ""), 4999},
		"one byte":              {[]byte{0x03}, wire.CloseProtocol},
		"code 0":                {body(0, ""), wire.CloseProtocol},
		"code 999":              {body(999, ""), wire.CloseProtocol},
		"code 1004":             {body(1004, ""), wire.CloseProtocol},
		"code 1005":             {body(1005, ""), wire.CloseProtocol},
		"code 1006":             {body(1006, ""), wire.CloseProtocol},
		"code 1015":             {body(1015, ""), wire.CloseProtocol},
		"code 1016":             {body(1016, ""), wire.CloseProtocol},
		"code 2999":             {body(2999, ""), wire.CloseProtocol},
		"code 5000":             {body(5000, ""), wire.CloseProtocol},
		"code 65535":            {body(65535, ""), wire.CloseProtocol},
		"reason not UTF-8":      {body(1000, "bye \xff"), wire.CloseProtocol},
		"reason with surrogate": {body(1000, "\xed\xa0\x80"), wire.CloseProtocol},
		"reason cut in a rune":  {body(1000, "é"[:1]), wire.CloseProtocol},
	} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, url)
			c.write(rawFrame(ws.OpClose, true, tc.payload), true)
			if code := c.closed(5 * time.Second); code != tc.want {
				t.Fatalf("closed with %d, want %d", code, tc.want)
			}
			if tc.want == wire.CloseProtocol {
				if m := c.next(time.Second); m["type"] != "error" || m["code"] != "protocol" {
					t.Fatalf("got %v, want error protocol", m)
				}
			}
		})
	}
}

// A payload read in growing pieces keeps the stall rule: the deadline
// passing in the middle of a message is pushed back by stall as long as
// bytes keep coming, and ends the read when they stop.
func TestFrameReaderStallsAcrossGrowth(t *testing.T) {
	const stall = 100 * time.Millisecond
	p := []byte(`{"type":"slow","x":"` + strings.Repeat("x", 20<<10) + `"}`)
	frame := rawFrame(ws.OpText, true, p)
	for name, tc := range map[string]struct {
		pause time.Duration // between pieces of 1 KiB
		stop  int           // stop writing after this many bytes; 0: write all
		ok    bool
	}{
		"bytes keep coming":    {pause: stall / 4, ok: true},
		"bytes stop mid-way":   {pause: stall / 4, stop: 9 << 10},
		"pause over the stall": {pause: 3 * stall},
	} {
		t.Run(name, func(t *testing.T) {
			server, client := net.Pipe()
			defer server.Close()
			defer client.Close()
			go func() {
				b := frame
				if tc.stop > 0 {
					b = b[:tc.stop]
				}
				for i := 0; len(b) > 0; i++ {
					if i > 0 {
						time.Sleep(tc.pause) // the subject: a client sending slowly
					}
					n := min(len(b), 1<<10)
					if _, err := client.Write(b[:n]); err != nil {
						return
					}
					b = b[n:]
				}
			}()
			// The first deadline passes long before the payload is in.
			_ = server.SetReadDeadline(time.Now().Add(stall / 10))
			fr := frameReader{r: server, max: 64 << 10, stall: stall}
			start := time.Now()
			op, got, err := fr.next()
			switch {
			case tc.ok && (err != nil || op != ws.OpText || !bytes.Equal(got, p)):
				t.Fatalf("got %v, %d bytes, %v; want the message", op, len(got), err)
			case !tc.ok && !errors.Is(err, os.ErrDeadlineExceeded):
				t.Fatalf("got %v, %d bytes, %v; want a deadline error", op, len(got), err)
			case tc.ok && time.Since(start) < 4*stall:
				t.Fatalf("read in %v: the test did not outlast the stall", time.Since(start))
			}
		})
	}
}
