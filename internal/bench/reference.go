package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Reference is the physical reference for the benchmarks: a bare in-memory
// relay speaking the same protocol (join, then every object with a "type"
// is numbered per room and sent to every member with msg_id, client_id and
// ts) with no persistence, no tokens and no validation beyond framing. It
// keeps no history and announces no one: its joined frame says so with
// "since" equal to "head" (the replay, since+1 … head, is empty), and
// every member is a player. It is built like a competent hand-written Go
// relay: gobwas/ws, a reader and a writer goroutine per connection, a
// mutex per room.
type Reference struct {
	log *slog.Logger

	// Persist, if set, stores each numbered frame before anyone gets it,
	// called in the room's order (under the room's lock); an error drops
	// the message and is logged. With a synchronous JetStream publish
	// (NewJetStreamPersist) the relay becomes the floor of what persisting
	// every message costs: one stored write and its ack per message, with
	// none of gamerelay's checks, headers or cross-instance delivery.
	Persist func(room string, frame []byte) error

	mu    sync.Mutex
	rooms map[string]*refRoom
	next  uint64
}

type refRoom struct {
	name    string
	mu      sync.Mutex
	seq     uint64
	members map[*refConn]struct{}
}

type refConn struct {
	id  string
	out chan []byte
}

// NewReference returns a reference relay.
func NewReference(log *slog.Logger) *Reference {
	return &Reference{log: log, rooms: make(map[string]*refRoom)}
}

// Serve runs the relay on addr until ctx ends.
func (rf *Reference) Serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: rf, ReadHeaderTimeout: 10 * time.Second}
	rf.log.Info("reference relay listening", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (rf *Reference) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	rf.mu.Lock()
	rf.next++
	c := &refConn{id: "ref-" + strconv.FormatUint(rf.next, 36), out: make(chan []byte, 256)}
	rf.mu.Unlock()
	go func() {
		bw := bufio.NewWriter(conn)
		for p := range c.out {
			_ = wsutil.WriteServerText(bw, p)
			if len(c.out) == 0 {
				if bw.Flush() != nil {
					break
				}
			}
		}
		_ = conn.Close()
	}()
	var room *refRoom
	defer func() {
		if room != nil {
			room.mu.Lock()
			delete(room.members, c)
			room.mu.Unlock()
		}
		close(c.out)
	}()
	for {
		p, op, err := wsutil.ReadClientData(conn)
		if err != nil {
			return
		}
		if op != ws.OpText || len(p) < 2 || p[0] != '{' {
			continue
		}
		if room == nil {
			name := joinTarget(p)
			if name == "" {
				continue
			}
			room = rf.room(name)
			room.mu.Lock()
			room.members[c] = struct{}{}
			head := room.seq
			room.mu.Unlock()
			h := strconv.FormatUint(head, 10)
			c.out <- []byte(`{"type":"joined","game":"` + name + `","client_id":"` + c.id + `","role":"player","head":` + h + `,"since":` + h + `}`)
			continue
		}
		end := bytes.LastIndexByte(p, '}')
		if end < 0 {
			continue
		}
		room.mu.Lock()
		room.seq++
		frame := make([]byte, 0, end+80)
		frame = append(frame, p[:end]...)
		frame = append(frame, `,"client_id":"`...)
		frame = append(frame, c.id...)
		frame = append(frame, `","msg_id":`...)
		frame = strconv.AppendUint(frame, room.seq, 10)
		frame = append(frame, `,"ts":`...)
		frame = strconv.AppendInt(frame, time.Now().UnixMilli(), 10)
		frame = append(frame, '}')
		if rf.Persist != nil {
			if err := rf.Persist(room.name, frame); err != nil {
				room.seq--
				room.mu.Unlock()
				rf.log.Warn("reference: persist", "room", room.name, "err", err)
				continue
			}
		}
		for m := range room.members {
			select {
			case m.out <- frame:
			default: // a member that far behind is dropped by a real relay too
			}
		}
		room.mu.Unlock()
	}
}

func (rf *Reference) room(name string) *refRoom {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	r := rf.rooms[name]
	if r == nil {
		r = &refRoom{name: name, members: make(map[*refConn]struct{})}
		rf.rooms[name] = r
	}
	return r
}

// joinTarget returns the game (or room) of a join frame, or "".
func joinTarget(p []byte) string {
	if !bytes.Contains(p, []byte(`"type":"join"`)) {
		return ""
	}
	for _, k := range []string{`"game":"`, `"room":"`} {
		if i := bytes.Index(p, []byte(k)); i >= 0 {
			rest := p[i+len(k):]
			if j := bytes.IndexByte(rest, '"'); j > 0 {
				return string(rest[:j])
			}
		}
	}
	return ""
}
