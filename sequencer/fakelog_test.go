package sequencer

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// fakeLog is an in-memory partition log that keeps JetStream's append
// rules, for deterministic tests of the Appender's retry machine (run them
// in a synctest bubble: its clock is the bubble's):
//   - a publish carrying Nats-Expected-Last-Subject-Sequence is refused
//     with 10071 unless it matches the subject's last sequence;
//   - a Nats-Msg-Id seen within the duplicate window (counted from when
//     that message was stored) answers "duplicate" with the stored
//     sequence, and stores nothing;
//   - an atomic batch is stored whole or not at all; its first message
//     carries the check; a batch holding a Nats-Msg-Id already stored is
//     refused with 10201.
//
// fault, if set, is asked about every publish first and can refuse it, or
// let it be stored and lose the ack.
type fakeLog struct {
	window time.Duration

	mu sync.Mutex
	// Guarded by mu.
	msgs      []fakeMsg          // by stream sequence - 1; every partition shares one sequence space
	keys      map[string]fakeKey // Nats-Msg-Id → where and when it was stored
	fault     func(msgs []*nats.Msg) fakeFault
	conflicts int // publishes refused by the expected-sequence check
	publishes int
}

type fakeMsg struct {
	subject string
	header  nats.Header
	data    []byte
}

type fakeKey struct {
	seq    uint64
	stored time.Time
}

// fakeFault is what fault decides for one publish: fail it with err before
// anything is stored, or store it and answer with err (a lost ack).
type fakeFault struct {
	err   error
	after bool // store first, then fail with err
}

func newFakeLog(window time.Duration) *fakeLog {
	return &fakeLog{window: window, keys: make(map[string]fakeKey)}
}

var _ logStore = (*fakeLog)(nil)

func (l *fakeLog) setFault(f func(msgs []*nats.Msg) fakeFault) {
	l.mu.Lock()
	l.fault = f
	l.mu.Unlock()
}

// lastSeqLocked returns the subject's last stream sequence (0: none).
func (l *fakeLog) lastSeqLocked(subject string) uint64 {
	for i := len(l.msgs) - 1; i >= 0; i-- {
		if l.msgs[i].subject == subject {
			return uint64(i + 1)
		}
	}
	return 0
}

func (l *fakeLog) dupLocked(key string) (uint64, bool) {
	k, ok := l.keys[key]
	if !ok || time.Since(k.stored) >= l.window {
		return 0, false
	}
	return k.seq, true
}

func (l *fakeLog) storeLocked(m *nats.Msg) uint64 {
	h := nats.Header{}
	for k, v := range m.Header {
		h[k] = append([]string(nil), v...)
	}
	l.msgs = append(l.msgs, fakeMsg{subject: m.Subject, header: h, data: append([]byte(nil), m.Data...)})
	seq := uint64(len(l.msgs))
	if key := m.Header.Get(nats.MsgIdHdr); key != "" {
		l.keys[key] = fakeKey{seq: seq, stored: time.Now()}
	}
	return seq
}

func wrongLast() error {
	return &apiError{Code: 400, ErrCode: int(jetstream.JSErrCodeStreamWrongLastSequence), Desc: "wrong last sequence"}
}

func (l *fakeLog) publish(_ time.Time, m *nats.Msg) (*pubAck, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.publishes++
	var f fakeFault
	if l.fault != nil {
		f = l.fault([]*nats.Msg{m})
	}
	if f.err != nil && !f.after {
		return nil, f.err
	}
	if seq, ok := l.dupLocked(m.Header.Get(nats.MsgIdHdr)); ok {
		if f.err != nil {
			return nil, f.err
		}
		return &pubAck{Seq: seq, Duplicate: true}, nil
	}
	if exp := m.Header.Get(nats.ExpectedLastSubjSeqHdr); exp != "" {
		if want, _ := strconv.ParseUint(exp, 10, 64); want != l.lastSeqLocked(m.Subject) {
			l.conflicts++
			return nil, wrongLast()
		}
	}
	seq := l.storeLocked(m)
	if f.err != nil {
		return nil, f.err
	}
	return &pubAck{Seq: seq}, nil
}

func (l *fakeLog) publishBatch(_ time.Time, _ string, msgs []*nats.Msg) (*pubAck, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.publishes++
	var f fakeFault
	if l.fault != nil {
		f = l.fault(msgs)
	}
	if f.err != nil && !f.after {
		return nil, f.err
	}
	for _, m := range msgs {
		if _, ok := l.dupLocked(m.Header.Get(nats.MsgIdHdr)); ok {
			return nil, &apiError{Code: 400, ErrCode: errCodeBatchDuplicate, Desc: "atomic publish batch contains duplicate message id"}
		}
	}
	if exp := msgs[0].Header.Get(nats.ExpectedLastSubjSeqHdr); exp != "" {
		if want, _ := strconv.ParseUint(exp, 10, 64); want != l.lastSeqLocked(msgs[0].Subject) {
			l.conflicts++
			return nil, wrongLast()
		}
	}
	var seq uint64
	for _, m := range msgs {
		seq = l.storeLocked(m)
	}
	if f.err != nil {
		return nil, f.err
	}
	return &pubAck{Seq: seq, Count: uint64(len(msgs))}, nil
}

func (l *fakeLog) storedLocked(seq uint64) (Stored, error) {
	m := l.msgs[seq-1]
	return parseStored(m.header, m.data, strconv.FormatUint(seq, 10))
}

func (l *fakeLog) last(_ context.Context, p int, game string) (Stored, error) {
	return l.lastFromLeader(context.Background(), p, game)
}

func (l *fakeLog) lastFromLeader(_ context.Context, p int, game string) (Stored, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	seq := l.lastSeqLocked(wire.Names{}.LogSubject(p, game))
	if seq == 0 {
		return Stored{}, errNotFound
	}
	return l.storedLocked(seq)
}

func (l *fakeLog) bySeq(_ context.Context, _ int, seq uint64) (Stored, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq == 0 || seq > uint64(len(l.msgs)) {
		return Stored{}, errNotFound
	}
	return l.storedLocked(seq)
}

func (l *fakeLog) nextFromLeader(_ context.Context, p int, game string, seq uint64) (Stored, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	subject := wire.Names{}.LogSubject(p, game)
	for s := max(seq, 1); s <= uint64(len(l.msgs)); s++ {
		if l.msgs[s-1].subject == subject {
			return l.storedLocked(s)
		}
	}
	return Stored{}, errNotFound
}

func (l *fakeLog) close() {}

// game returns the msg_ids and bodies' tags stored for game, in order.
func (l *fakeLog) game(p int, game string) (ids []uint64, keys []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	subject := wire.Names{}.LogSubject(p, game)
	for _, m := range l.msgs {
		if m.subject == subject {
			id, _ := strconv.ParseUint(m.header.Get(wire.HdrMsgID), 10, 64)
			ids = append(ids, id)
			keys = append(keys, m.header.Get(nats.MsgIdHdr))
		}
	}
	return ids, keys
}

// append stores a message of another writer at the game's head.
func (l *fakeLog) appendForeign(p int, game string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	subject := wire.Names{}.LogSubject(p, game)
	id := uint64(1)
	if seq := l.lastSeqLocked(subject); seq != 0 {
		prev, _ := strconv.ParseUint(l.msgs[seq-1].header.Get(wire.HdrMsgID), 10, 64)
		id = prev + 1
	}
	l.storeLocked(&nats.Msg{Subject: subject, Header: nats.Header{wire.HdrMsgID: {strconv.FormatUint(id, 10)}},
		Data: stamp(nil, []byte(`{"type":"foreign"}`), id, time.Now().UnixMilli())})
}

func (l *fakeLog) counts() (publishes, conflicts int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.publishes, l.conflicts
}

// fakeHeads is an in-memory heads bucket.
type fakeHeads struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (h *fakeHeads) Get(_ context.Context, key string) (jetstream.KeyValueEntry, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v, ok := h.m[key]; ok {
		return fakeEntry{key: key, value: v}, nil
	}
	return nil, jetstream.ErrKeyNotFound
}

func (h *fakeHeads) Put(_ context.Context, key string, value []byte) (uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = make(map[string][]byte)
	}
	h.m[key] = append([]byte(nil), value...)
	return uint64(len(h.m)), nil
}

type fakeEntry struct {
	jetstream.KeyValueEntry
	key   string
	value []byte
}

func (e fakeEntry) Key() string   { return e.key }
func (e fakeEntry) Value() []byte { return e.value }

// fakeLive records published live copies.
type fakeLive struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (f *fakeLive) PublishMsg(m *nats.Msg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, m)
	return nil
}

// next reads like Direct Get with a batch: up to n of the game's messages
// at or after seq.
func (l *fakeLog) next(_ context.Context, p int, game string, seq uint64, n int, fn func(Stored) error) (int, error) {
	return l.nextUpTo(p, game, seq, n, ^uint64(0), fn)
}

func (l *fakeLog) nextUpTo(p int, game string, seq uint64, n int, limit uint64, fn func(Stored) error) (int, error) {
	subject := wire.Names{}.LogSubject(p, game)
	got := 0
	for s := max(seq, 1); got < n; s++ {
		l.mu.Lock()
		if s > uint64(len(l.msgs)) || s > limit {
			l.mu.Unlock()
			break
		}
		m := l.msgs[s-1]
		var st Stored
		var err error
		if m.subject == subject {
			st, err = l.storedLocked(s)
		}
		l.mu.Unlock()
		if m.subject != subject {
			continue
		}
		if err != nil {
			return got, err
		}
		got++
		if err := fn(st); err != nil {
			return got, err
		}
	}
	return got, nil
}

// replica is a replica of log that has only its first seen messages: reads
// that any replica may answer see those; leader reads see everything.
type replica struct {
	*fakeLog
	seen uint64
}

func (r *replica) last(_ context.Context, p int, game string) (Stored, error) {
	var last Stored
	n, err := r.nextUpTo(p, game, 1, 1<<30, r.seen, func(m Stored) error { last = m; return nil })
	if err == nil && n == 0 {
		err = errNotFound
	}
	return last, err
}

func (r *replica) bySeq(ctx context.Context, p int, seq uint64) (Stored, error) {
	if seq > r.seen {
		return Stored{}, errNotFound
	}
	return r.fakeLog.bySeq(ctx, p, seq)
}

func (r *replica) next(_ context.Context, p int, game string, seq uint64, n int, fn func(Stored) error) (int, error) {
	return r.nextUpTo(p, game, seq, n, r.seen, fn)
}
