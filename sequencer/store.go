package sequencer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// JetStream error codes the sequencer acts on, beyond those nats.go
// exports (jetstream.JSErrCode…).
const (
	errCodeLastSeqNotReady    = 10163 // expected last sequence per subject temporarily unavailable
	errCodeBatchDuplicate     = 10201 // atomic batch contains a duplicate Nats-Msg-Id
	errCodeBatchIncomplete    = 10176 // atomic batch incomplete (lost intermediate message, timeout)
	errCodeBatchTooMany       = 10210 // too many atomic batches in flight
	errCodeClusterUnavailable = 10008 // JetStream cluster not available (no quorum, leader election)
	errCodeDupInProcess       = 10158 // a message with this Nats-Msg-Id is being stored (an earlier attempt's)
	errCodeMemberChange       = 10202 // a cluster member change is in progress
)

// logStore is what the Appender needs of the partition streams: *store
// speaks JetStream; tests use fakes.
type logStore interface {
	// publish sends one message and waits, up to deadline (if not zero)
	// or the request timeout, for its ack.
	publish(deadline time.Time, m *nats.Msg) (*pubAck, error)
	// publishBatch sends msgs as one atomic batch; the ack names the last.
	publishBatch(deadline time.Time, batchID string, msgs []*nats.Msg) (*pubAck, error)
	// last returns the game's last stored message (errNotFound: none); a
	// replica may answer and trail the leader.
	last(ctx context.Context, p int, game string) (Stored, error)
	// lastFromLeader is last answered by the stream leader.
	lastFromLeader(ctx context.Context, p int, game string) (Stored, error)
	// bySeq reads the message stored at a stream sequence.
	bySeq(ctx context.Context, p int, seq uint64) (Stored, error)
	// nextFromLeader returns the game's first message stored at or after
	// seq, answered by the stream leader (errNotFound: none).
	nextFromLeader(ctx context.Context, p int, game string, seq uint64) (Stored, error)
	// close releases what publishes hold.
	close()
}

var _ logStore = (*store)(nil)

// apiError is an error answered by the JetStream API.
type apiError struct {
	Code    int    `json:"code"`
	ErrCode int    `json:"err_code"`
	Desc    string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("jetstream: %s (code %d, err_code %d)", e.Desc, e.Code, e.ErrCode)
}

func errCode(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.ErrCode
	}
	return 0
}

// pubAck is JetStream's answer to a publish.
type pubAck struct {
	Stream    string    `json:"stream"`
	Seq       uint64    `json:"seq"`
	Duplicate bool      `json:"duplicate,omitempty"`
	BatchID   string    `json:"batch,omitempty"`
	Count     uint64    `json:"count,omitempty"`
	Error     *apiError `json:"error,omitempty"`
}

// Stored is one game message as stored in the log.
type Stored struct {
	Seq    uint64 // stream sequence
	ID     uint64 // msg_id
	Anchor uint64 // absolute stream sequence of the anchor page start; 0 if none
	TS     int64  // append time, Unix milliseconds
	Data   []byte // the frame clients receive: the body plus msg_id and ts

	key string // the Nats-Msg-Id it was stored with, where the read returns it
}

var errNotFound = errors.New("sequencer: message not found")

// store speaks JetStream's wire API directly: publishes with headers,
// atomic batches and Direct Get, none of which need more than core NATS.
type store struct {
	// Static after construction.
	nc         *nats.Conn
	names      wire.Names
	timeout    time.Duration // per read
	pubTimeout time.Duration // per publish attempt

	replies replies // for publishes; its nc is set by newStore
}

func newStore(nc *nats.Conn, names wire.Names, timeout, pubTimeout time.Duration) *store {
	s := &store{nc: nc, names: names, timeout: timeout, pubTimeout: pubTimeout}
	s.replies.nc = nc
	return s
}

func (s *store) request(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.nc.RequestMsgWithContext(ctx, m)
}

// close unsubscribes the reply boxes of publishes.
func (s *store) close() { s.replies.close() }

func decodeAck(resp *nats.Msg) (*pubAck, error) {
	if st := resp.Header.Get("Status"); st == "503" {
		return nil, nats.ErrNoResponders
	}
	var ack pubAck
	// Hand-walk the common answer ({"stream":..,"seq":N[,"duplicate":true]
	// [,"batch":..,"count":N]}); anything else goes through encoding/json.
	slow := false
	err := jsonobj.Scan(resp.Data, func(k, v []byte) error {
		switch {
		case jsonobj.KeyEquals(k, "seq"):
			ack.Seq, _ = strconv.ParseUint(string(v), 10, 64)
		case jsonobj.KeyEquals(k, "count"):
			ack.Count, _ = strconv.ParseUint(string(v), 10, 64)
		case jsonobj.KeyEquals(k, "duplicate"):
			ack.Duplicate = string(v) == "true"
		case jsonobj.KeyEquals(k, "stream"), jsonobj.KeyEquals(k, "batch"), jsonobj.KeyEquals(k, "domain"):
		default:
			slow = true
		}
		return nil
	})
	if err != nil || slow || ack.Seq == 0 {
		ack = pubAck{}
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return nil, fmt.Errorf("sequencer: decode publish ack: %w", err)
		}
	}
	if ack.Error != nil {
		return nil, ack.Error
	}
	return &ack, nil
}

// publish sends one message and waits for its ack, up to the publish
// timeout or deadline (if not zero), whichever comes first. It takes no
// context (a publish is answered in microseconds, or times out): a timer
// from nats.go's pool costs far less per message than a context and timer
// of its own, which profiles showed on every append. The ack comes back
// through s.replies.
func (s *store) publish(deadline time.Time, m *nats.Msg) (*pubAck, error) {
	d := s.pubTimeout
	if !deadline.IsZero() {
		if d = min(d, time.Until(deadline)); d <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	resp, err := s.replies.request(m, d)
	if err != nil {
		return nil, err
	}
	return decodeAck(resp)
}

// Headers of an atomic batch's messages.
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// publishBatch sends msgs as one atomic batch: all are stored, contiguously,
// or none. The ack's Seq is the last message's sequence.
func (s *store) publishBatch(deadline time.Time, batchID string, msgs []*nats.Msg) (*pubAck, error) {
	for i, m := range msgs {
		m.Header.Set(hdrBatchID, batchID)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := s.nc.PublishMsg(m); err != nil {
				return nil, err
			}
		}
	}
	last := msgs[len(msgs)-1]
	last.Header.Set(hdrBatchCommit, "1")
	return s.publish(deadline, last)
}

// directGet asks the stream for one message. It may be answered by any
// replica, so the answer can trail the leader by a little.
func (s *store) directGet(ctx context.Context, stream string, req any) (Stored, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return Stored{}, err
	}
	m := nats.NewMsg("$JS.API.DIRECT.GET." + stream)
	m.Data = b
	resp, err := s.request(ctx, m)
	if err != nil {
		return Stored{}, err
	}
	return decodeDirect(resp)
}

func decodeDirect(resp *nats.Msg) (Stored, error) {
	switch resp.Header.Get("Status") {
	case "":
	case "404":
		return Stored{}, errNotFound
	case "503":
		return Stored{}, nats.ErrNoResponders
	default:
		return Stored{}, fmt.Errorf("sequencer: direct get: status %s %s", resp.Header.Get("Status"), resp.Header.Get("Description"))
	}
	return parseStored(resp.Header, resp.Data, resp.Header.Get("Nats-Sequence"))
}

// parseStored reads our headers off a stored message, fetched or live.
func parseStored(h nats.Header, data []byte, seqHdr string) (Stored, error) {
	seq, err := strconv.ParseUint(seqHdr, 10, 64)
	if err != nil {
		return Stored{}, fmt.Errorf("sequencer: message without stream sequence: %q", seqHdr)
	}
	id, err := strconv.ParseUint(h.Get(wire.HdrMsgID), 10, 64)
	if err != nil || id == 0 {
		return Stored{}, fmt.Errorf("sequencer: stored message %d has no valid %s header", seq, wire.HdrMsgID)
	}
	st := Stored{Seq: seq, ID: id, Data: data, key: h.Get(nats.MsgIdHdr)}
	st.TS, _ = wire.StampedTS(data)
	if a := h.Get(wire.HdrAnchor); a != "" {
		if a[0] == '-' {
			d, err := strconv.ParseUint(a[1:], 10, 64)
			if err != nil || d >= seq {
				return Stored{}, fmt.Errorf("sequencer: message %d: bad %s %q", seq, wire.HdrAnchor, a)
			}
			st.Anchor = seq - d
		} else if st.Anchor, err = strconv.ParseUint(a, 10, 64); err != nil {
			return Stored{}, fmt.Errorf("sequencer: message %d: bad %s %q", seq, wire.HdrAnchor, a)
		}
	}
	return st, nil
}

type directReq struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	Batch   int    `json:"batch,omitempty"`
}

// last returns the game's last stored message, or errNotFound.
func (s *store) last(ctx context.Context, p int, game string) (Stored, error) {
	return s.directGet(ctx, s.names.Stream(p), directReq{LastFor: s.names.LogSubject(p, game)})
}

// lastFromLeader is last answered by the stream leader only: never stale.
func (s *store) lastFromLeader(ctx context.Context, p int, game string) (Stored, error) {
	return s.msgGet(ctx, p, directReq{LastFor: s.names.LogSubject(p, game)})
}

// nextFromLeader returns the game's first message at or after seq, from
// the stream leader.
func (s *store) nextFromLeader(ctx context.Context, p int, game string, seq uint64) (Stored, error) {
	return s.msgGet(ctx, p, directReq{Seq: max(seq, 1), NextFor: s.names.LogSubject(p, game)})
}

// msgGet reads one message through the stream leader ($JS.API.STREAM.MSG.GET).
func (s *store) msgGet(ctx context.Context, p int, req directReq) (Stored, error) {
	b, _ := json.Marshal(req)
	m := nats.NewMsg("$JS.API.STREAM.MSG.GET." + s.names.Stream(p))
	m.Data = b
	resp, err := s.request(ctx, m)
	if err != nil {
		return Stored{}, err
	}
	var r struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return Stored{}, fmt.Errorf("sequencer: decode msg get: %w", err)
	}
	if r.Error != nil {
		if r.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound) || r.Error.Code == 404 {
			return Stored{}, errNotFound
		}
		return Stored{}, r.Error
	}
	if r.Message == nil {
		return Stored{}, errNotFound
	}
	h, err := decodeHeaders(r.Message.Hdrs)
	if err != nil {
		return Stored{}, err
	}
	return parseStored(h, r.Message.Data, strconv.FormatUint(r.Message.Seq, 10))
}

// bySeq returns the message stored at seq.
func (s *store) bySeq(ctx context.Context, p int, seq uint64) (Stored, error) {
	return s.directGet(ctx, s.names.Stream(p), directReq{Seq: seq})
}

// next calls fn for up to n messages of the game stored at or after seq, in
// order, and returns how many it delivered. Fewer than n means the end of
// what the replica holds was reached (or the server capped the answer).
func (s *store) next(ctx context.Context, p int, game string, seq uint64, n int, fn func(Stored) error) (int, error) {
	if seq == 0 {
		seq = 1
	}
	b, _ := json.Marshal(directReq{Seq: seq, NextFor: s.names.LogSubject(p, game), Batch: n})
	inbox := s.nc.NewRespInbox()
	// The answer is at most n messages and an end-of-batch status: a
	// channel of that size, not a synchronous subscription's 65,536 slots.
	ch := make(chan *nats.Msg, n+2)
	sub, err := s.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET."+s.names.Stream(p), inbox, b); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	got := 0
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return got, ctx.Err()
		}
		switch st := m.Header.Get("Status"); st {
		case "":
		case "204": // end of batch
			return got, nil
		case "404":
			return got, nil
		case "503":
			return got, nats.ErrNoResponders
		default:
			return got, fmt.Errorf("sequencer: direct get batch: status %s %s", st, m.Header.Get("Description"))
		}
		st, err := parseStored(m.Header, m.Data, m.Header.Get("Nats-Sequence"))
		if err != nil {
			return got, err
		}
		got++
		if err := fn(st); err != nil {
			return got, err
		}
	}
}

// decodeHeaders parses a NATS/1.0 header block.
func decodeHeaders(b []byte) (nats.Header, error) {
	h := nats.Header{}
	if len(b) == 0 {
		return h, nil
	}
	lines := splitLines(b)
	if len(lines) == 0 || len(lines[0]) < 8 || string(lines[0][:8]) != "NATS/1.0" {
		return nil, fmt.Errorf("sequencer: bad header block")
	}
	for _, l := range lines[1:] {
		if len(l) == 0 {
			continue
		}
		for i := 0; i < len(l); i++ {
			if l[i] == ':' {
				v := l[i+1:]
				for len(v) > 0 && v[0] == ' ' {
					v = v[1:]
				}
				h.Add(string(l[:i]), string(v))
				break
			}
		}
	}
	return h, nil
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		l := b[:i]
		if len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		out = append(out, l)
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}
