package gateway

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/gamerelay/gamerelay/sequencer"
)

// discardConn is a net.Conn that accepts every write at once.
type discardConn struct {
	net.Conn
	mu sync.Mutex
	n  int
}

func (d *discardConn) Write(p []byte) (int, error) {
	d.mu.Lock()
	d.n += len(p)
	d.mu.Unlock()
	return len(p), nil
}
func (d *discardConn) SetWriteDeadline(time.Time) error { return nil }
func (d *discardConn) SetReadDeadline(time.Time) error  { return nil }
func (d *discardConn) Close() error                     { return nil }

// BenchmarkFanout measures the gateway's fan-out path: one stored message
// compiled once and written to every subscriber of its game by their
// writers (queue, writer goroutine, buffered write, flush).
func BenchmarkFanout(b *testing.B) {
	benchFanout(b, func(b *testing.B, g *Gateway, i int) *conn {
		return &conn{g: g, nc: &discardConn{}, id: strconv.Itoa(i)}
	})
}

// BenchmarkFanoutSockets is BenchmarkFanout over real loopback TCP
// sockets, each drained by a reading goroutine, as clients that keep up:
// a frame for a connection with no writer running is written straight to
// its socket (writeNowLocked, Linux), the rest through its writer. The cost per
// delivery includes the write system call.
func BenchmarkFanoutSockets(b *testing.B) {
	var ln net.Listener
	benchFanout(b, func(b *testing.B, g *Gateway, i int) *conn {
		if i == 0 {
			var err error
			if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { ln.Close() })
		}
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		server, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		go func() { _, _ = io.Copy(io.Discard, client) }()
		b.Cleanup(func() { client.Close(); server.Close() })
		return &conn{g: g, nc: server, raw: rawConn(server), id: strconv.Itoa(i)}
	})
}

// benchFanout hands b.N messages to a hub of 1, 100 and 1,000
// subscribers, made by newConn, and waits until every writer drained.
func benchFanout(b *testing.B, newConn func(b *testing.B, g *Gateway, i int) *conn) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(strconv.Itoa(n)+"subs", func(b *testing.B) {
			g, err := New(nil, nil, nil, Config{AllowAnonymous: true, SendQueueBytes: 64 << 20})
			if err != nil {
				b.Fatal(err)
			}
			h := &hub{game: "bench", clients: make(map[*conn]struct{})}
			for i := 0; i < n; i++ {
				h.clients[newConn(b, g, i)] = struct{}{}
			}
			msg := []byte(`{"type":"move","col":3,"player":"p1","client_id":"abcdefgh-1","msg_id":12345,"ts":1763790000000}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.onMsg(sequencer.Stored{ID: uint64(i + 1), Seq: uint64(i + 1), Data: msg})
			}
			g.wg.Wait() // every writer has drained its queue
			b.StopTimer()
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// loopReader reads b over and over, filling every read as a socket with
// plenty of data waiting would.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], l.b[l.off:])
		n += k
		l.off = (l.off + k) % len(l.b)
	}
	return n, nil
}

// BenchmarkFrameRead measures the frame reader on a stream of masked text
// frames of one size: small game messages (one read for mask and payload,
// unbuffered as for a listener, or through the read buffer as for a
// player), and larger ones up to the default message limit.
func BenchmarkFrameRead(b *testing.B) {
	for _, tc := range []struct {
		name     string
		size     int
		buffered bool
	}{
		{"small", 60, false},
		{"small/buffered", 60, true},
		{"medium", 1000, false},
		{"medium/buffered", 1000, true},
		{"4KiB", 4 << 10, false},
		{"16KiB", 16 << 10, false},
		{"64KiB", 64<<10 - 16, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := []byte(`{"type":"move","x":"` + strings.Repeat("x", tc.size-22) + `"}`)
			var frame bytes.Buffer
			if err := ws.WriteFrame(&frame, ws.MaskFrame(ws.NewTextFrame(p))); err != nil {
				b.Fatal(err)
			}
			fr := frameReader{r: &loopReader{b: frame.Bytes()}, max: 64 << 10, buffered: tc.buffered}
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, q, err := fr.next(); err != nil || len(q) != len(p) {
					b.Fatalf("got %d bytes, %v", len(q), err)
				}
			}
		})
	}
}
